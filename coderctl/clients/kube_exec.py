"""`exec` in a pod over the Kubernetes WebSocket channel protocol, streaming with constant memory.

The official client's `stream()` decodes output as text, keeps all of it in memory and stops after its
request timeout (REFERENCE.md), which is wrong for a database dump. This speaks the protocol directly
with `websockets`, reusing the client's URL, TLS context and credentials (KubeClient.url, ssl_context,
auth_headers): every binary message starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3
error/status, 4 resize); the command's exit status arrives as a `Status` object on channel 3.
`v5.channel.k8s.io` adds a close frame `[255, channel]` so the command can see the end of its stdin.
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coderctl.clients.kube import PODS, KubeClient, KubeError, KubeUnreachable
from coderctl.clients.kube_errors import api_error

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDERR_LIMIT = 64 * 1024
SMALL_STDIN = 64 * 1024
"""An exec whose whole stdin fits in this runs on the caller's thread alone (kube_exec_inline.py): sent
before the output is read, it cannot wait on the output, since the socket's buffers hold it."""
OPEN_TIMEOUT_FLOOR = 10.0
"""Least time given to open an exec stream once the TCP connection is up. Opening one makes the API server
dial the kubelet, which starts the process through the container runtime: on a busy node that alone takes
seconds, and an exec that gives up too early costs more than the wait (a restore that cannot count rows
after an interruption must restore its safety backup). An unreachable server still fails within --timeout:
the TCP connect keeps it."""


class ExecStreamBroken(KubeError):
    """The connection ended before the exit status arrived: the output may be incomplete."""


@dataclass
class ExecResult:
    exit_code: int
    message: str
    stderr: bytes
    stdout_bytes: int
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def parse_status(raw: bytes) -> tuple[int, str, dict[str, Any]]:
    """Exit code and message from the channel-3 Status object."""
    try:
        status = json.loads(raw)
    except ValueError:
        return -1, raw.decode("utf-8", "replace")[:500], {}
    if status.get("status") == "Success":
        return 0, "", status
    message = str(status.get("message") or "command failed")
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message")), message, status
            except (TypeError, ValueError):
                break
    return -1, message, status


def exec_stream(
    kube: KubeClient,
    namespace: str,
    pod: str,
    command: list[str],
    *,
    container: str | None = None,
    stdout: Callable[[bytes], object],
    stdin: Iterable[bytes] | None = None,
    idle_timeout: float | None = None,
    on_open: Callable[[ClientConnection], None] | None = None,
    close_stdin: bool = True,
) -> ExecResult:
    """Run `command` in the pod; hand stdout to `stdout` chunk by chunk as it arrives.

    A small `stdin` (up to SMALL_STDIN bytes in all) is sent first and the stream is read on the caller's thread
    (kube_exec_inline.py); a larger one (a restore) is sent from a separate thread while output is read, so the
    input and the command's output cannot block each other. After the last chunk, under v5, stdin is half-closed unless
    `close_stdin` is False (a command may watch its stdin to notice that coderctl went away).
    `idle_timeout` bounds the wait for each message (None: wait as long as output keeps coming).
    Raises ExecStreamBroken when the connection ends without an exit status.
    """
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    query: list[tuple[str, str]] = [("command", part) for part in command]
    query += [("stdout", "true"), ("stderr", "true"), ("stdin", "true" if stdin is not None else "false")]
    if container:
        query.append(("container", container))
    url = kube.url(PODS.path(namespace, pod, "exec"), query, websocket=True)
    held, rest = _take_small(stdin)
    if rest is None and on_open is None and not kube.proxy:
        return _exec_inline(kube, url, f"{namespace}/{pod}", PODS.path(namespace, pod, "exec"), stdout=stdout,
                            stdin=held, close_stdin=close_stdin and stdin is not None, idle_timeout=idle_timeout)
    if stdin is not None:
        stdin = itertools.chain(held, rest or ())
    try:
        try:
            ws, guard = _open(kube, url, tls12=True)
        except ssl.SSLError as exc:
            if not _may_need_tls13(exc):
                raise
            ws, guard = _open(kube, url, tls12=False)  # a server that requires TLS 1.3
    except InvalidStatus as exc:
        response = exc.response
        raise api_error("POST", PODS.path(namespace, pod, "exec"), response.status_code,
                         bytes(response.body or b"")) \
            from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise KubeUnreachable(f"exec in {namespace}/{pod}: cannot open the stream: {exc}") from None

    stderr = bytearray()
    status_raw = bytearray()
    count = 0
    got_status = False
    sender: _StdinSender | None = None
    with ws:
        if on_open:
            on_open(ws)
        if stdin is not None:
            sender = _StdinSender(ws, stdin, close_stdin and ws.subprotocol == "v5.channel.k8s.io")
            sender.start()
        try:
            while True:
                message = ws.recv(timeout=idle_timeout)
                if isinstance(message, str) or not message:
                    continue
                channel, data = message[0], message[1:]
                if channel == STDOUT and data:
                    count += len(data)
                    stdout(data)
                elif channel == STDERR:
                    room = STDERR_LIMIT - len(stderr)
                    if room > 0:
                        stderr += data[:room]
                elif channel == ERROR:
                    status_raw += data
                    got_status = True
        except ConnectionClosed:
            pass
        except TimeoutError:
            raise ExecStreamBroken(
                f"exec in {namespace}/{pod}: no data for {idle_timeout:g}s, gave up"
            ) from None
        finally:
            if guard is not None:
                guard.arm(3.0)  # bounds the close that leaving `with ws` does
    if guard is not None:
        guard.close()
    if sender is not None:
        sender.finish()
    return _result(f"{namespace}/{pod}", count, stderr, status_raw if got_status else None)


def _take_small(stdin: Iterable[bytes] | None) -> tuple[list[bytes], Iterator[bytes] | None]:
    """The stdin's first chunks, up to SMALL_STDIN bytes; and the rest, None when that was all of it."""
    if stdin is None:
        return [], None
    chunks = iter(stdin)
    held: list[bytes] = []
    size = 0
    for chunk in chunks:
        held.append(chunk)
        size += len(chunk)
        if size > SMALL_STDIN:
            return held, chunks
    return held, None


def _exec_inline(kube: KubeClient, url: str, where: str, api_path: str, *, stdout: Callable[[bytes], object],
                 stdin: list[bytes], close_stdin: bool, idle_timeout: float | None) -> ExecResult:
    """exec_stream on the caller's thread alone (kube_exec_inline.py says why)."""
    from coderctl.clients.kube_exec_inline import InlineExec

    stream = InlineExec(kube, url, where, api_path, PROTOCOLS, STDERR_LIMIT, max(kube.timeout, OPEN_TIMEOUT_FLOOR))
    first = stream.open()
    try:
        stream.send_stdin(stdin, close_stdin)
        count, stderr, status_raw, got_status = stream.read(first, stdout, idle_timeout)
    except TimeoutError:
        raise ExecStreamBroken(f"exec in {where}: no data for {idle_timeout:g}s, gave up") from None
    finally:
        stream.close()
    return _result(where, count, stderr, status_raw if got_status else None)


def _result(where: str, count: int, stderr: bytearray, status_raw: bytearray | None) -> ExecResult:
    """The command's result from its Status (None: none came, and ExecStreamBroken)."""
    if status_raw is None:
        raise ExecStreamBroken(
            f"exec in {where}: the stream ended after {count} bytes without an exit status; the output is incomplete"
        )
    code, message, status = parse_status(bytes(status_raw))
    return ExecResult(code, message, bytes(stderr), count, status)


def _open(kube: KubeClient, url: str, *, tls12: bool) -> tuple[ClientConnection, _SocketGuard | None]:
    """The WebSocket, open; with the guard that bounds its handshake (disarmed) and, later, its close.

    `tls12` caps TLS at 1.2. Seen in the lab on a busy machine: now and then, after a completed TLS 1.3
    handshake, the upgrade request never reached the server and the exec gave up after its open timeout
    (tests/conftest.py dumps every thread then: the server's loop idle). TLS 1.3 sends session tickets right
    after the handshake, which meet websockets' sync client reading in a thread from the moment the connection
    exists while the caller's thread writes the request (OpenSSL does not support one connection used from two
    threads at once) — or the server's own TLS layer; which of the two is not settled. With TLS 1.2 (nothing
    after the handshake) it was not seen. The API server accepts 1.2 unless told not to (--tls-min-version);
    one that requires 1.3 fails the capped handshake, and the caller retries without the cap.
    """
    from websockets.sync.client import connect

    context = kube.ssl_context()
    if context is not None and tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    open_timeout = max(kube.timeout, OPEN_TIMEOUT_FLOOR)
    guard: _SocketGuard | None = None
    try:
        sock = None
        if not kube.proxy:
            sock = _connect_socket(url, kube.timeout)
            guard = _SocketGuard(sock)
            guard.arm(open_timeout + 2)
        ws = connect(
            url, ssl=context, additional_headers=kube.auth_headers(), subprotocols=list(PROTOCOLS),  # type: ignore[arg-type]
            open_timeout=open_timeout, close_timeout=1, max_size=None, compression=None,
            server_hostname=kube.tls_server_name, user_agent_header="coderctl",
            ping_interval=20, ping_timeout=60, **({"sock": sock} if sock is not None else {"proxy": kube.proxy}),
        )
    except BaseException:
        if guard is not None:
            guard.close()
        raise
    if guard is not None:
        guard.disarm()
    return ws, guard


def _may_need_tls13(exc: ssl.SSLError) -> bool:
    """The capped handshake failed in a way TLS 1.3 may not: a protocol-version alert, or (from servers that
    send none) the connection closed mid-handshake. A certificate the client rejects would fail again."""
    return not isinstance(exc, ssl.SSLCertVerificationError)


def _connect_socket(url: str, timeout: float) -> socket.socket:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return socket.create_connection((parts.hostname or "", port), timeout=timeout)


class _SocketGuard:
    """Shuts the connection down when the handshake or the close overruns.

    websockets' sync client reads in a thread once select() says the socket is readable; over TLS a partial
    record then blocks that read, and closing the socket does not wake it (shutting the connection down
    does). Its handshake's error path joins that thread, so under load an exec could wait forever. The guard
    keeps a duplicate of the socket's descriptor and shuts the connection down when a deadline passes.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._dup = sock.dup()
        self._timer: threading.Timer | None = None

    def arm(self, seconds: float) -> None:
        self.disarm()
        self._timer = threading.Timer(seconds, self.cut)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def cut(self) -> None:
        try:
            self._dup.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.disarm()
        self._dup.close()


class _StdinSender(threading.Thread):
    """Sends stdin chunks (and the v5 half-close) while the caller's thread reads the output."""

    def __init__(self, ws: ClientConnection, chunks: Iterable[bytes], half_close: bool) -> None:
        super().__init__(name="exec-stdin", daemon=True)
        self.ws = ws
        self.chunks = chunks
        self.half_close = half_close
        self.error: BaseException | None = None

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for chunk in self.chunks:
                if chunk:
                    self.ws.send(bytes([STDIN]) + chunk)
            if self.half_close:
                self.ws.send(bytes([CLOSE, STDIN]))
        except ConnectionClosed:
            pass
        except BaseException as exc:  # re-raised in the caller's thread by finish()
            self.error = exc
            self.ws.close()

    def finish(self) -> None:
        """Wait for the sender; an error of the stdin iterable (e.g. reading a file) is raised here."""
        self.join(timeout=5)
        if self.error is not None:
            raise self.error
