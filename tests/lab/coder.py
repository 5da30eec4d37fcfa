"""A fake Coder server for the lab: plain HTTP/1.1 on loopback, like coderd's http:8080 behind the ingress.

It speaks the parts of Coder that coderctl probes, on the wire as the real server does:

- ``GET /healthz`` -> ``OK``; ``GET /api/v2/buildinfo`` -> BuildInfoResponse JSON; every response made by
  the HTTP router carries ``X-Coder-Build-Version`` (coderd middleware).
- ``/derp``: the embedded DERP relay (tailscale ``derpserver.Handler`` + ``AddWebSocketSupport``). An
  ``Upgrade`` of ``derp`` or ``websocket`` without the ``derp`` subprotocol gets the raw DERP 101 (written
  on the hijacked socket, so without coderd's headers) followed at once by the ServerKey frame; an
  ``Upgrade: websocket`` with subprotocol ``derp`` gets a WebSocket 101 and the same frames in binary
  messages; anything else gets ``426 DERP requires connection upgrade``.
- ``/derp/latency-check`` -> 200, empty body.
- ``/api/v2/debug/ws``: the WebSocket echo coderd's health check dials (coderd/healthcheck/websocket.go),
  behind API key auth (``Coder-Session-Token`` header, ``coder_session_token`` cookie or query parameter).
- Hosts under the wildcard app domain get an app-style 404 page (still with the version header).

The server runs its own asyncio loop in a daemon thread; ``mode`` switches between ``normal``, ``hang``
(accept TCP, never answer), ``down`` (listener closed, open connections reset) and ``unavailable`` (every
request gets the 503 page ingress-nginx serves when the Service has no ready endpoints, without Coder's
headers: what clients see through the ingress while Coder crash-loops) at runtime.
- ``/api/v2/debug/health``: coderd's health report (codersdk/healthsdk ``HealthcheckReport``) behind API key
  auth; ``health_problems`` (section -> list of ``(code, message)``) turns sections to warning or error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from http.cookies import SimpleCookie
from types import TracebackType
from typing import Literal, Self
from urllib.parse import parse_qs, urlsplit

import pytest
from nacl.public import PrivateKey
from websockets.frames import Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from lab import derp_frames as df

Mode = Literal["normal", "hang", "down", "unavailable"]
_FrameCallback = Callable[[Opcode, bytes, bool], None]
MODES: tuple[Mode, ...] = ("normal", "hang", "down", "unavailable")

DEFAULT_VERSION = "v2.25.0+abcdef1"
DEFAULT_SESSION_TOKEN = "CoDeRlAb01-S3cr3tS3cr3tS3cr3tS3cr"
NO_ENDPOINTS_PAGE = (
    "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    "<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
HEALTH_SECTIONS = ("access_url", "database", "websocket", "derp", "workspace_proxy", "provisioner_daemons")
SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."
MAX_HEAD = 64 << 10


class _BadRequest(Exception):
    pass


class _Eof(Exception):
    """The peer went away (TCP EOF or WebSocket close)."""


@dataclass
class RecordedRequest:
    """What the fake saw of one HTTP request (after any proxy rewrote it)."""

    method: str
    target: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    raw_head: bytes
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def wants_close(self) -> bool:
        tokens = {t.strip().lower() for t in self.header("connection").split(",")}
        return "close" in tokens or (self.version == "HTTP/1.0" and "keep-alive" not in tokens)


@dataclass
class Counters:
    """Events seen by the fake; read them from tests (plain ints, written only by the server thread)."""

    connections: int = 0
    requests: int = 0
    derp_connections: int = 0
    derp_websocket_connections: int = 0
    derp_logins: int = 0
    derp_rejected: int = 0
    pings: int = 0
    keepalives_sent: int = 0
    packets_relayed: int = 0
    packets_dropped: int = 0
    echo_connections: int = 0
    echo_messages: int = 0
    unauthorized: int = 0
    app_requests: int = 0
    hung_connections: int = 0


class _RawStream:
    """The hijacked socket after a raw ``Upgrade: DERP``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()

    async def read_exactly(self, n: int) -> bytes:
        try:
            return await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise _Eof from exc

    async def write(self, data: bytes) -> None:
        async with self._lock:
            self._writer.write(data)
            await self._writer.drain()

    async def close(self) -> None:
        self._writer.transport.abort()


class _WsStream:
    """DERP over WebSocket: binary messages carry a byte stream (tailscale wsconn)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ServerProtocol
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._protocol = protocol
        self._buffer = bytearray()
        self._lock = asyncio.Lock()

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            closing = await _ws_receive(self._reader, self._protocol, self._on_frame)
            await self._flush()
            if closing:
                raise _Eof
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def _on_frame(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if opcode is Opcode.TEXT:
            raise df.FrameError("text message on a DERP WebSocket")
        self._buffer += data

    async def write(self, data: bytes) -> None:
        if self._protocol.state is not State.OPEN:
            raise _Eof
        self._protocol.send_binary(data)
        await self._flush()

    async def close(self) -> None:
        """Close like the real relay's deferred ``c.Close(StatusInternalError, "closing")``."""
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(1011, "closing")
            with contextlib.suppress(ConnectionError):
                await self._flush()
        self._writer.transport.abort()

    async def _flush(self) -> None:
        async with self._lock:
            await _ws_flush(self._writer, self._protocol)


async def _ws_receive(
    reader: asyncio.StreamReader, protocol: ServerProtocol, on_frame: _FrameCallback
) -> bool:
    """Read once from the socket into ``protocol``; hand data frames to ``on_frame``.

    Returns True when the connection is closing (EOF, close frame or protocol error).
    """
    data = await reader.read(65536)
    if data:
        protocol.receive_data(data)
    else:
        protocol.receive_eof()
    for frame in protocol.events_received():
        if isinstance(frame, Frame) and frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            on_frame(frame.opcode, bytes(frame.data), frame.fin)
    return not data or protocol.state is not State.OPEN


async def _ws_flush(writer: asyncio.StreamWriter, protocol: ServerProtocol) -> None:
    chunks = protocol.data_to_send()
    payload = b"".join(chunks)
    if payload:
        writer.write(payload)
        await writer.drain()
    if chunks and chunks[-1] == b"" and writer.can_write_eof():
        writer.write_eof()


class FakeCoder:
    """Fake coderd on ``127.0.0.1:<random port>``; see the module docstring for what it serves.

    ``server_key`` is the relay's 32-byte Curve25519 *private* key (random when None); its public half is
    sent in ``Derp-Public-Key`` and the ServerKey frame. ``access_host``/``wildcard_domain`` decide which
    Host headers are treated as workspace app hosts.
    """

    def __init__(
        self,
        version: str = DEFAULT_VERSION,
        session_token: str = DEFAULT_SESSION_TOKEN,
        keepalive_interval: float = 60.0,
        server_key: bytes | None = None,
        *,
        access_host: str = "coder.xuperson.org",
        wildcard_domain: str | None = "xuperson.org",
        login_timeout: float = 10.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.version = version
        self.session_token = session_token
        self.keepalive_interval = keepalive_interval
        self.access_host = access_host
        self.wildcard_domain = wildcard_domain
        self.login_timeout = login_timeout
        self.host = host
        self.deployment_id = str(uuid.uuid4())
        self._private_key = PrivateKey(server_key) if server_key is not None else PrivateKey.generate()
        self.counters = Counters()
        self.requests: list[RecordedRequest] = []
        self.client_infos: list[dict[str, object]] = []
        self.errors: list[Exception] = []
        self._mode: Mode = "normal"
        self.health_problems: dict[str, list[tuple[str, str]]] = {}
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._derp_clients: dict[bytes, _RawStream | _WsStream] = {}

    # ---- public API -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FakeCoder is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def public_key(self) -> bytes:
        return bytes(self._private_key.public_key)

    @property
    def public_key_hex(self) -> str:
        return self.public_key.hex()

    @property
    def derp_connections(self) -> int:
        """Raw ``Upgrade: DERP`` connections accepted (101 sent)."""
        return self.counters.derp_connections

    @property
    def derp_websocket_connections(self) -> int:
        return self.counters.derp_websocket_connections

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if self._loop is None:
            self._mode = mode
            return
        asyncio.run_coroutine_threadsafe(self._set_mode(mode), self._loop).result(timeout=5)

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("FakeCoder already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-coder", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._set_mode(self._mode, initial=True), loop).result(5)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
        self._loop = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def buildinfo(self) -> dict[str, object]:
        """The body of ``GET /api/v2/buildinfo`` (codersdk.BuildInfoResponse)."""
        commit = self.version.partition("+")[2] or "abcdef1"
        return {
            "external_url": f"https://github.com/coder/coder/commit/{commit}",
            "version": self.version,
            "dashboard_url": f"https://{self.access_host}",
            "telemetry": True,
            "workspace_proxy": False,
            "agent_api_version": "2.6",
            "provisioner_api_version": "1.8",
            "upgrade_message": "",
            "deployment_id": self.deployment_id,
            "webpush_public_key": "",
        }

    def health_report(self) -> dict[str, object]:
        """The body of ``GET /api/v2/debug/health``: every section ``ok`` unless ``health_problems`` names it.

        A problem whose code starts a section's error list makes the section ``error`` with ``error`` set to
        ``"CODE: message"`` (as coderd's ``health.Message.String()``); codes ending in a warning make it
        ``warning`` with ``warnings[{code, message}]``. Which is which follows Coder's docs: EDB02, EDERP01,
        EPD01-03 and EWP04 are warnings, the rest errors.
        """
        warning_codes = {"EDB02", "EDERP01", "EPD01", "EPD02", "EPD03", "EWP04", "EACS04"}
        now = formatdate(usegmt=True)
        report: dict[str, object] = {"time": now, "healthy": True, "severity": "ok",
                                     "coder_version": self.version}
        worst = "ok"
        for section in HEALTH_SECTIONS:
            problems = self.health_problems.get(section, [])
            warnings = [{"code": c, "message": m} for c, m in problems if c in warning_codes]
            errors = [f"{c}: {m}" for c, m in problems if c not in warning_codes]
            severity = "error" if errors else "warning" if warnings else "ok"
            body: dict[str, object] = {"severity": severity, "warnings": warnings, "dismissed": False,
                                       "healthy": severity != "error"}
            if errors:
                body["error"] = errors[0]
            report[section] = body
            if severity == "error" or (severity == "warning" and worst == "ok"):
                worst = severity
        report["severity"] = worst
        report["healthy"] = worst != "error"
        return report

    # ---- lifecycle (server thread) ----------------------------------------------------------------

    async def _set_mode(self, mode: Mode, *, initial: bool = False) -> None:
        if initial and mode == "down":
            raise ValueError("cannot start a FakeCoder in mode 'down' (it has no port yet)")
        self._mode = mode
        if mode == "down":
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()
        elif self._server is None:
            self._server = await asyncio.start_server(
                self._on_connection, self.host, self._port, limit=MAX_HEAD, reuse_address=True
            )
            self._port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.counters.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, _Eof, asyncio.IncompleteReadError, df.FrameError, TimeoutError):
            pass
        except asyncio.CancelledError:  # shutdown; ending quietly keeps asyncio from logging the cancelled task
            pass
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: kept for tests to see
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            if self._mode == "hang":
                self.counters.hung_connections += 1
                await asyncio.Event().wait()
            try:
                request = await _read_request(reader)
            except _BadRequest as exc:
                writer.write(
                    self._response(400, f"{exc}\n".encode(), "text/plain; charset=utf-8", close=True)
                )
                await writer.drain()
                return
            if request is None:
                return
            self.counters.requests += 1
            self.requests.append(RecordedRequest(request.method, request.target, dict(request.headers)))
            if not await self._dispatch(request, reader, writer):
                return
            if request.wants_close():
                return

    # ---- HTTP routing -----------------------------------------------------------------------------

    async def _dispatch(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection is finished (upgraded or closing)."""
        if self._mode == "unavailable":
            writer.write(_no_endpoints_response(close=request.wants_close()))
            await writer.drain()
            return not request.wants_close()
        if self._is_app_host(request.header("host")):
            self.counters.app_requests += 1
            return await self._send(writer, request, *self._app_not_found())
        path = request.path
        if path == "/derp":
            return await self._derp(request, reader, writer)
        if path == "/api/v2/debug/ws":
            return await self._debug_ws(request, reader, writer)
        if path == "/api/v2/debug/health":
            detail = self._auth_error(request)
            if detail is not None:
                self.counters.unauthorized += 1
                return await self._send(writer, request, 401, _json({"message": SIGNED_OUT, "detail": detail}))
            return await self._send(writer, request, 200, _json(self.health_report()))
        routes: dict[str, tuple[int, bytes, str]] = {
            "/healthz": (200, b"OK", "text/plain; charset=utf-8"),
            "/api/v2/buildinfo": (200, _json(self.buildinfo()), "application/json"),
            "/derp/latency-check": (200, b"", ""),
            "/derp/probe": (200, b"", ""),
        }
        if path in routes:
            if request.method not in ("GET", "HEAD"):
                return await self._send(writer, request, 405, _json({"message": "Method not allowed."}))
            return await self._send(writer, request, *routes[path])
        return await self._send(writer, request, 404, _json({"message": "Route not found."}))

    def _is_app_host(self, host_header: str) -> bool:
        host = _strip_port(host_header).lower()
        if not self.wildcard_domain or host == self.access_host:
            return False
        return host.endswith("." + self.wildcard_domain.lower())

    def _app_not_found(self) -> tuple[int, bytes, str]:
        page = (
            "<!doctype html><html><head><title>Application Not Found</title></head><body>"
            "<h1>Application Not Found</h1><p>The application or workspace you are trying to access "
            "does not exist or you do not have permission to access it.</p></body></html>"
        )
        return 404, page.encode(), "text/html; charset=utf-8"

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        request: _Request,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bool:
        close = request.wants_close()
        head_only = request.method == "HEAD"
        writer.write(
            self._response(status, body, content_type, close=close, head_only=head_only, extra=extra)
        )
        await writer.drain()
        return not close

    def _response(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        close: bool = False,
        head_only: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        headers = [
            ("Date", formatdate(usegmt=True)),
            ("X-Coder-Build-Version", self.version),
            ("Content-Length", str(len(body))),
        ]
        if content_type:
            headers.append(("Content-Type", content_type))
        headers.extend(extra)
        if close:
            headers.append(("Connection", "close"))
        head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        return head.encode("latin-1") + (b"" if head_only else body)

    # ---- DERP -------------------------------------------------------------------------------------

    async def _derp(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        upgrade = request.header("upgrade").strip().lower()
        if upgrade not in ("derp", "websocket"):
            body = b"DERP requires connection upgrade\n"
            nosniff = (("X-Content-Type-Options", "nosniff"),)
            return await self._send(writer, request, 426, body, "text/plain; charset=utf-8", nosniff)
        if upgrade == "websocket" and "derp" in request.header("sec-websocket-protocol"):
            protocol = await self._websocket_accept(request, writer, subprotocols=[Subprotocol("derp")])
            if protocol is None:
                return False
            self.counters.derp_websocket_connections += 1
            ws_stream = _WsStream(reader, writer, protocol)
            await self._derp_session(ws_stream)
            await ws_stream.close()
            return False
        self.counters.derp_connections += 1
        if request.header("derp-fast-start") != "1":
            writer.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\n"
                    "Upgrade: DERP\r\n"
                    "Connection: Upgrade\r\n"
                    f"Derp-Version: {df.PROTOCOL_VERSION}\r\n"
                    f"Derp-Public-Key: {self.public_key_hex}\r\n\r\n"
                ).encode()
            )
        await self._derp_session(_RawStream(reader, writer))
        return False

    async def _derp_session(self, stream: _RawStream | _WsStream) -> None:
        """ServerKey, login, then serve frames until the client goes or breaks the protocol."""
        await stream.write(df.encode(df.SERVER_KEY, df.server_key_payload(self.public_key)))
        try:
            client_key = await asyncio.wait_for(self._derp_login(stream), self.login_timeout)
        except (df.FrameError, TimeoutError):
            self.counters.derp_rejected += 1
            return
        previous = self._derp_clients.get(client_key)
        self._derp_clients[client_key] = stream
        keepalive = asyncio.create_task(self._keepalive(stream))
        try:
            await stream.write(
                df.encode(df.SERVER_INFO, df.seal(self._private_key, client_key, {"version": 2}))
            )
            if previous is not None:
                await previous.close()
            await self._derp_frames(stream, client_key)
        except df.FrameError:
            self.counters.derp_rejected += 1
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
            if self._derp_clients.get(client_key) is stream:
                del self._derp_clients[client_key]

    async def _derp_login(self, stream: _RawStream | _WsStream) -> bytes:
        frame_type, length = df.decode_header(await stream.read_exactly(df.HEADER_LEN))
        if frame_type != df.CLIENT_INFO:
            raise df.FrameError(f"bad frame type 0x{frame_type:X}, want 0x{df.CLIENT_INFO:X}")
        if length < df.KEY_LEN + df.NONCE_LEN or length > df.MAX_CLIENT_INFO_LEN:
            raise df.FrameError(f"bad ClientInfo length {length}")
        client_key, info = df.parse_client_info(self._private_key, await stream.read_exactly(length))
        self.counters.derp_logins += 1
        self.client_infos.append(info)
        return client_key

    async def _derp_frames(self, stream: _RawStream | _WsStream, client_key: bytes) -> None:
        while True:
            frame_type, length = df.decode_header(await stream.read_exactly(df.HEADER_LEN))
            if length > df.MAX_FRAME_LEN:
                raise df.FrameError(f"frame length {length} exceeds {df.MAX_FRAME_LEN}")
            payload = await stream.read_exactly(length) if length else b""
            if frame_type == df.PING:
                if length != 8:
                    raise df.FrameError("Ping payload must be 8 bytes")
                self.counters.pings += 1
                await stream.write(df.encode(df.PONG, payload))
            elif frame_type == df.NOTE_PREFERRED:
                if length != 1:
                    raise df.FrameError("NotePreferred payload must be 1 byte")
            elif frame_type == df.SEND_PACKET:
                if length < df.KEY_LEN or length - df.KEY_LEN > df.MAX_PACKET_SIZE:
                    raise df.FrameError(f"bad SendPacket length {length}")
                await self._relay(client_key, payload[: df.KEY_LEN], payload[df.KEY_LEN :])
            # Other frame types are skipped, as the real server does with unknown frames.

    async def _relay(self, src: bytes, dst: bytes, packet: bytes) -> None:
        target = self._derp_clients.get(dst)
        if target is None:
            self.counters.packets_dropped += 1
            return
        try:
            await target.write(df.encode(df.RECV_PACKET, src + packet))
            self.counters.packets_relayed += 1
        except (ConnectionError, _Eof):
            self.counters.packets_dropped += 1

    async def _keepalive(self, stream: _RawStream | _WsStream) -> None:
        with contextlib.suppress(ConnectionError, _Eof):
            while True:
                await asyncio.sleep(self.keepalive_interval)
                await stream.write(df.encode(df.KEEP_ALIVE))
                self.counters.keepalives_sent += 1

    # ---- WebSocket --------------------------------------------------------------------------------

    async def _websocket_accept(
        self, request: _Request, writer: asyncio.StreamWriter, subprotocols: list[Subprotocol] | None = None
    ) -> ServerProtocol | None:
        """Complete the RFC 6455 handshake; None (after answering the error) when it is not valid."""
        protocol = ServerProtocol(subprotocols=subprotocols, max_size=1 << 20)
        protocol.receive_data(request.raw_head + request.body)
        events = protocol.events_received()
        if not events or not isinstance(events[0], WsRequest):
            writer.write(self._response(400, b"bad WebSocket request\n", "text/plain", close=True))
            await writer.drain()
            return None
        response = protocol.accept(events[0])
        response.headers["X-Coder-Build-Version"] = self.version
        with contextlib.suppress(KeyError):
            del response.headers["Server"]
        protocol.send_response(response)
        await _ws_flush(writer, protocol)
        return protocol if response.status_code == 101 else None

    async def _debug_ws(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        detail = self._auth_error(request)
        if detail is not None:
            self.counters.unauthorized += 1
            return await self._send(writer, request, 401, _json({"message": SIGNED_OUT, "detail": detail}))
        if request.header("upgrade").strip().lower() != "websocket":
            body = b'WebSocket protocol violation: Connection header "" does not contain Upgrade\n'
            return await self._send(writer, request, 426, body, "text/plain; charset=utf-8")
        protocol = await self._websocket_accept(request, writer)
        if protocol is None:
            return False
        self.counters.echo_connections += 1
        await self._echo(reader, writer, protocol)
        return False

    async def _echo(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ServerProtocol
    ) -> None:
        message: list[bytes] = []
        kind: list[Opcode] = []

        def on_frame(opcode: Opcode, data: bytes, fin: bool) -> None:
            if opcode is not Opcode.CONT:
                kind[:] = [opcode]
                message.clear()
            message.append(data)
            if fin and kind:
                payload = b"".join(message)
                if kind[0] is Opcode.TEXT:
                    protocol.send_text(payload)
                else:
                    protocol.send_binary(payload)
                self.counters.echo_messages += 1

        while True:
            closing = await _ws_receive(reader, protocol, on_frame)
            await _ws_flush(writer, protocol)
            if closing:
                return

    def _auth_error(self, request: _Request) -> str | None:
        """None when the request carries the session token, else coderd's 401 detail."""
        token = request.header("coder-session-token")
        if not token:
            cookie = SimpleCookie()
            with contextlib.suppress(Exception):
                cookie.load(request.header("cookie"))
            if "coder_session_token" in cookie:
                token = cookie["coder_session_token"].value
        if not token:
            token = (request.query.get("coder_session_token") or [""])[0]
        if not token:
            return 'Cookie "coder_session_token" or query parameter must be provided.'
        if not re.fullmatch(r"[^-]+-[^-]+", token):
            return "Invalid API key format: incorrect amount of API key parts"
        if token != self.session_token:
            return "API key secret is invalid."
        return None


# ---- HTTP/1.1 request parsing ---------------------------------------------------------------------


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """Read one request (head and body); None on a clean EOF before any byte."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _BadRequest("incomplete request head") from exc
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest("request head too large") from exc
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(f"malformed request line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(f"malformed header line {line!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    request = _Request(parts[0], parts[1], parts[2], headers, head)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        request.body = await _read_chunked(reader)
    elif headers.get("content-length"):
        try:
            length = int(headers["content-length"])
        except ValueError as exc:
            raise _BadRequest("bad Content-Length") from exc
        request.body = await reader.readexactly(length)
    return request


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError as exc:
            raise _BadRequest("bad chunk size") from exc
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise _BadRequest("bad chunk terminator")


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _no_endpoints_response(*, close: bool) -> bytes:
    body = NO_ENDPOINTS_PAGE.encode()
    head = ("HTTP/1.1 503 Service Temporarily Unavailable\r\n"
            f"Date: {formatdate(usegmt=True)}\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode("latin-1") + body


# ---- fixtures -------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_fake_coder(**kwargs: object) -> Iterator[FakeCoder]:
    coder = FakeCoder(**kwargs)  # type: ignore[arg-type]
    with coder:
        yield coder


@pytest.fixture
def fake_coder() -> Iterator[FakeCoder]:
    """A started FakeCoder with default settings, stopped at teardown (which fails on errors in the fake)."""
    with running_fake_coder() as coder:
        yield coder
    if coder.errors:
        raise AssertionError(f"the fake Coder server failed: {coder.errors!r}")
