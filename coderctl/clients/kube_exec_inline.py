"""An exec stream read on the caller's thread, through websockets' Sans-I/O protocol (`ClientProtocol`).

websockets' sync client reads the socket in a thread of its own and hands every message to the caller's thread
through a condition variable: two thread switches per frame. The lab's API server sends a 60 MB dump in about
8,600 frames, and that handoff cost 0.2-0.3 s of CPU per 400 MB of table data, on the CPUs that pg_dump and
the server need. An exec whose stdin is known and small (every pod script's: the credentials, a query) needs
no second thread: the stdin is sent first, then one loop reads the socket, feeds the protocol and hands
stdout on, all on the caller's thread. A large stdin (a restore), a proxy or a caller that wants the
connection object keeps the threaded client (kube_exec.exec_stream decides).

The same protocol as kube_exec (channels, v5's close frame, the Status on channel 3), the same errors and
messages, the same deadlines: the TCP connect within --timeout, the handshake within the open timeout, a ping
after KEEPALIVE_S without data and the connection given up PING_TIMEOUT_S after that without an answer, and
`idle_timeout` without a message. TLS is not capped at 1.2 here: the cap is for the threaded client's reads
and writes from two threads (kube_exec._open), which this loop never does.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from coderctl.clients.kube import KubeClient, KubeUnreachable
from coderctl.clients.kube_errors import api_error

if TYPE_CHECKING:
    from collections.abc import Sequence

    from websockets.client import ClientProtocol
    from websockets.protocol import Event

STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
READ_SIZE = 256 * 1024
SMALL_READ, PAUSE = 64 * 1024, 0.002
"""After a read shorter than SMALL_READ the loop pauses before the next (dump.py does the same with pg_dump's
pipe): pg_dump -Z1 through the lab's API server arrives at about 20 MB/s in 7 KiB frames, so 2 ms is about
40 KiB, a few frames handled in one pass."""
KEEPALIVE_S = 20.0
PING_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 1.0


class _Ended(Exception):
    """The connection ended (EOF, reset, a TLS failure, a close frame, a ping unanswered)."""


class InlineExec:
    """One exec stream: `open()`, `send_stdin()`, `read()` until it ends, `close()` (kube_exec._exec_inline)."""

    def __init__(self, kube: KubeClient, url: str, where: str, api_path: str, protocols: tuple[str, ...],
                 stderr_limit: int, open_timeout: float) -> None:
        self.kube = kube
        self.url = url
        self.where = where
        self.api_path = api_path
        self.protocols = protocols
        self.stderr_limit = stderr_limit
        self.open_timeout = open_timeout
        self.sock: socket.socket | None = None
        self.protocol: ClientProtocol | None = None
        self.subprotocol: str | None = None
        self._broken: str | None = None

    # opening ---------------------------------------------------------------------------------------------------

    def open(self) -> Sequence[Event]:
        """Connect, shake hands; the events that arrived with the handshake's answer (frames may follow it in the
        same read). Errors as kube_exec's: KubeUnreachable, or the API's refusal as a KubeError."""
        from websockets.client import ClientProtocol
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.http11 import Response
        from websockets.uri import parse_uri

        parts = urlsplit(self.url)
        host = parts.hostname or ""
        deadline = time.monotonic() + self.open_timeout
        try:
            try:
                raw = socket.create_connection((host, parts.port or (443 if parts.scheme == "wss" else 80)),
                                               timeout=self.kube.timeout)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                context = self.kube.ssl_context()
                if context is not None:
                    raw.settimeout(_left(deadline))
                    self.sock = context.wrap_socket(raw, server_hostname=self.kube.tls_server_name or host)
                else:
                    self.sock = raw
                protocol = self.protocol = ClientProtocol(parse_uri(self.url), subprotocols=list(self.protocols),  # type: ignore[arg-type]
                                                          max_size=None)
                request = protocol.connect()
                request.headers["User-Agent"] = "coderctl"
                for name, value in self.kube.auth_headers().items():
                    request.headers[name] = value
                protocol.send_request(request)
                self._flush(deadline)
                while True:
                    self._receive(deadline)
                    events = protocol.events_received()
                    if protocol.handshake_exc is not None:
                        raise protocol.handshake_exc
                    if events:
                        assert isinstance(events[0], Response)
                        self.subprotocol = protocol.subprotocol
                        return events[1:]
            except BaseException:
                self.close()
                raise
        except InvalidStatus as exc:
            response = exc.response
            raise api_error("POST", self.api_path, response.status_code, bytes(response.body or b"")) from None
        except (OSError, InvalidHandshake, TimeoutError, _Ended) as exc:
            reason = str(exc) or type(exc).__name__
            raise KubeUnreachable(f"exec in {self.where}: cannot open the stream: {reason}") from None

    # the stream ------------------------------------------------------------------------------------------------

    def send_stdin(self, chunks: list[bytes], close: bool) -> None:
        """Send stdin (already in memory, small), then, under v5 and with `close`, its end; nothing when the
        server already closed (a command that ended at once: its close frame can come with the handshake)."""
        from websockets.protocol import State

        assert self.protocol is not None
        if self.protocol.state is not State.OPEN:
            return
        for chunk in chunks:
            if chunk:
                self.protocol.send_binary(bytes([STDIN]) + chunk)
        if close and self.subprotocol == "v5.channel.k8s.io":
            self.protocol.send_binary(bytes([CLOSE, STDIN]))
        try:
            self._flush(time.monotonic() + max(self.kube.timeout, KEEPALIVE_S))
        except (OSError, _Ended):
            pass  # the read loop finds the connection gone

    def read(self, first: Sequence[Event], stdout: Callable[[bytes], object],
             idle_timeout: float | None) -> tuple[int, bytearray, bytearray, bool]:
        """Hand stdout on until the connection ends; (stdout bytes, stderr, status, whether a status came).
        TimeoutError when `idle_timeout` passes without a message."""
        from websockets.frames import Frame, Opcode

        assert self.protocol is not None
        protocol = self.protocol
        stderr, status = bytearray(), bytearray()
        count, got_status, channel = 0, False, -1
        last_message = last_heard = time.monotonic()
        pinged: float | None = None
        events = first
        try:
            while True:
                for event in events:
                    if not isinstance(event, Frame):
                        continue
                    opcode, data = event.opcode, cast(bytes, event.data)  # bytes, as the parser reads them
                    if opcode is Opcode.BINARY:
                        if not data:
                            continue
                        channel, data = data[0], data[1:]
                    elif opcode is not Opcode.CONT:
                        if opcode is Opcode.CLOSE:
                            raise _Ended
                        continue  # text (not asked for), ping (answered by the protocol), pong
                    last_message = time.monotonic()
                    if channel == STDOUT and data:
                        count += len(data)
                        stdout(data)
                    elif channel == STDERR:
                        room = self.stderr_limit - len(stderr)
                        if room > 0:
                            stderr += data[:room]
                    elif channel == ERROR:
                        status += data
                        got_status = True
                self._flush(time.monotonic() + max(self.kube.timeout, KEEPALIVE_S))
                now = time.monotonic()
                wait = KEEPALIVE_S if pinged is None else PING_TIMEOUT_S - (now - pinged)
                if idle_timeout is not None:
                    wait = min(wait, idle_timeout - (now - last_message))
                if wait <= 0:
                    if idle_timeout is not None and now - last_message >= idle_timeout:
                        raise TimeoutError
                    raise _Ended  # a ping unanswered
                try:
                    self._receive(now + wait)
                    last_heard, pinged = time.monotonic(), None
                except TimeoutError:
                    if pinged is None and time.monotonic() - last_heard >= KEEPALIVE_S:
                        protocol.send_ping(b"coderctl")
                        pinged = time.monotonic()
                events = protocol.events_received()
        except _Ended:
            pass
        return count, stderr, status, got_status

    # the socket ------------------------------------------------------------------------------------------------

    def _receive(self, deadline: float) -> None:
        """Wait for data, then take what else has arrived (up to READ_SIZE) into the protocol at once; _Ended at EOF
        or on a broken connection, TimeoutError at the deadline. A TLS socket gives at most one record (16 KiB)
        per recv: taking whatever is already there, and pausing after a short read so more gathers, makes one
        pass of the loop per ~100 KiB instead of one per frame."""
        assert self.sock is not None and self.protocol is not None
        if self._broken is not None:
            raise _Ended(self._broken)
        self.sock.settimeout(_left(deadline))
        try:
            data = self.sock.recv(READ_SIZE)
        except TimeoutError:
            raise
        except (OSError, ssl.SSLError) as exc:
            raise _Ended(str(exc)) from None
        if not data:
            self.protocol.receive_eof()
            raise _Ended("the connection was closed")
        chunks, size = [data], len(data)
        self.sock.settimeout(0)
        try:
            while size < READ_SIZE:
                more = self.sock.recv(READ_SIZE - size)
                if not more:
                    self._broken = "the connection was closed"
                    break
                chunks.append(more)
                size += len(more)
        except (ssl.SSLWantReadError, BlockingIOError):
            pass
        except (OSError, ssl.SSLError) as exc:
            self._broken = str(exc) or type(exc).__name__  # after what arrived before it is handed on
        self.protocol.receive_data(data if len(chunks) == 1 else b"".join(chunks))
        if size < SMALL_READ and self._broken is None:
            time.sleep(PAUSE)

    def _flush(self, deadline: float) -> None:
        assert self.sock is not None and self.protocol is not None
        for data in self.protocol.data_to_send():
            if not data:
                continue  # the protocol's end of stream: the socket is closed in close()
            self.sock.settimeout(_left(deadline))
            self.sock.sendall(data)

    def close(self) -> None:
        """Send what the protocol still has to say (a close frame: ours, or the answer to the server's), within
        CLOSE_TIMEOUT_S, then close the socket."""
        from websockets.protocol import State

        sock, protocol = self.sock, self.protocol
        self.sock = None
        if sock is None:
            return
        try:
            if protocol is not None:
                if protocol.state is State.OPEN:
                    protocol.send_close(1000)
                sock.settimeout(CLOSE_TIMEOUT_S)
                for data in protocol.data_to_send():  # the close frame, ours or the answer to the server's
                    if data:
                        sock.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left
