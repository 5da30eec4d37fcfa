"""A DERP client session over either transport: ``Upgrade: DERP`` on the raw socket, or WebSocket.

Opening reads the greeting (101, then the ServerKey frame); `login`, `ping` and `idle` are the steps a
prober takes after it. Every step is bounded by its own deadline. What counts as healthy is decided by
the checks, not here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from coderctl.clients.http import HttpClient, Response
from coderctl.clients.upgrade import Deadline, RawStream, upgrade
from coderctl.clients.websocket import WebSocket, open_websocket
from coderctl.protocols import derp

Transport = Literal["derp", "websocket"]
TRANSPORT_NAMES: dict[str, str] = {"derp": "Upgrade: DERP", "websocket": "DERP over WebSocket"}


@dataclass
class Greeting:
    transport: Transport
    response: Response
    header_key: str | None
    derp_version: str | None
    server_key: bytes
    first_frame_s: float


class DerpSession:
    def __init__(self, transport: Transport, stream: RawStream | WebSocket, greeting_response: Response,
                 started: float, timeout: float) -> None:
        self.transport = transport
        self.stream = stream
        self.timeout = timeout
        recv: Callable[[], bytes] = stream.recv if isinstance(stream, RawStream) else stream.recv_bytes
        self.reader = derp.FrameReader(recv)
        self._arm()
        first = self.reader.read()
        if first.type != derp.FrameType.SERVER_KEY:
            raise derp.FrameError(f"the first frame is {first.name}, not ServerKey")
        self.greeting = Greeting(
            transport=transport, response=greeting_response,
            header_key=greeting_response.header("derp-public-key"),
            derp_version=greeting_response.header("derp-version"),
            server_key=derp.parse_server_key(first.payload),
            first_frame_s=time.monotonic() - started,
        )
        self.keys: derp.ClientKeys | None = None
        self.last_frame_at = time.monotonic()

    @classmethod
    def open(cls, client: HttpClient, url: str, transport: Transport, *, timeout: float | None = None
             ) -> DerpSession:
        """Connect to the relay at `url` (…/derp); UpgradeRefused, FrameError or OSError when it fails."""
        limit = timeout or client.timeout
        started = time.monotonic()
        stream: RawStream | WebSocket
        if transport == "derp":
            headers = {"Upgrade": "DERP", "Connection": "Upgrade"}
            stream, response = upgrade(client, url, headers, timeout=limit)
        else:
            stream = open_websocket(client, url, subprotocols=("derp",), timeout=limit)
            response = stream.response
        try:
            return cls(transport, stream, response, started, limit)
        except BaseException:
            stream.close()
            raise

    def _arm(self, seconds: float | None = None) -> None:
        self.stream.deadline = Deadline(self.timeout if seconds is None else seconds)

    def _send(self, data: bytes) -> None:
        self.stream.send(data)

    def _next(self) -> derp.Frame:
        frame = self.reader.read()
        self.last_frame_at = time.monotonic()
        if frame.type == derp.FrameType.HEALTH and frame.payload:
            raise derp.FrameError(f"the relay reports a problem: {frame.payload.decode('utf-8', 'replace')}")
        return frame

    def login(self) -> tuple[dict[str, Any], float]:
        """ClientInfo → ServerInfo (opened with our key): the server's info and the time it took."""
        self._arm()
        start = time.monotonic()
        self.keys = derp.ClientKeys.generate()
        info = {"version": derp.PROTOCOL_VERSION, "canAckPings": True, "isProber": True}
        self._send(derp.client_info_frame(self.keys, self.greeting.server_key, info))
        while True:
            frame = self._next()
            if frame.type == derp.FrameType.SERVER_INFO:
                return derp.open_server_info(self.keys, self.greeting.server_key, frame.payload), \
                    time.monotonic() - start
            if frame.type not in (derp.FrameType.KEEP_ALIVE, derp.FrameType.PING,
                                  derp.FrameType.PEER_PRESENT):
                raise derp.FrameError(f"expected ServerInfo after ClientInfo, got {frame.name}")

    def ping(self) -> float:
        """Round-trip time of a Ping answered by a Pong with the same bytes."""
        self._arm()
        data = os.urandom(derp.PING_LEN)
        start = time.monotonic()
        self._send(derp.ping_frame(data))
        while True:
            frame = self._next()
            if frame.type == derp.FrameType.PONG and frame.payload == data:
                return time.monotonic() - start
            if frame.type == derp.FrameType.PING:  # a server may ping too; answer like a client does
                self._send(derp.encode_frame(derp.FrameType.PONG, frame.payload))

    def idle(self, seconds: float) -> tuple[float | None, float, int]:
        """Send nothing for `seconds`, reading what comes. Returns (seconds since the last frame when the
        connection was closed, or None when it stayed open; seconds held; KeepAlive frames received)."""
        keepalives = 0
        start = time.monotonic()
        end = start + seconds
        while True:
            self._arm(max(0.0, end - time.monotonic()))
            try:
                frame = self._next()
            except TimeoutError:
                return None, time.monotonic() - start, keepalives
            except (derp.EndOfStream, derp.TruncatedFrame, OSError):
                return time.monotonic() - self.last_frame_at, time.monotonic() - start, keepalives
            if frame.type == derp.FrameType.KEEP_ALIVE:
                keepalives += 1
            elif frame.type == derp.FrameType.PING:
                self._arm()
                self._send(derp.encode_frame(derp.FrameType.PONG, frame.payload))

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> DerpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
