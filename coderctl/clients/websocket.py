"""WebSocket client connections through HttpClient (so --resolve, --ca-file, --insecure apply).

The opening handshake (RFC 6455 section 4) goes through clients.upgrade, so a refusal is reported like
any other upgrade refusal: status, who answered, the first bytes of the body. Framing after the 101 is
the `websockets` library's sans-I/O protocol, fed from the socket under a deadline.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
from typing import TYPE_CHECKING

from coderctl.clients.http import HttpClient, Response
from coderctl.clients.upgrade import Deadline, UpgradeRefused, upgrade

if TYPE_CHECKING:
    from websockets.client import ClientProtocol

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 1 << 20


class HandshakeError(Exception):
    """A 101 that is not a valid WebSocket handshake answer (wrong accept key, missing subprotocol)."""


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


class WebSocket:
    """An open client WebSocket: whole messages in, messages out, each call bounded by `deadline`."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol, initial: bytes,
                 response: Response) -> None:
        self.sock = sock
        self.protocol = protocol
        self.response = response
        self.subprotocol = response.header("sec-websocket-protocol")
        self.deadline = Deadline(0)
        self._parts: list[bytes] = []
        self._text = False
        self._messages: list[bytes | str] = []
        self._closed = False
        if initial:
            self.protocol.receive_data(initial)

    def _flush(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if data:
            self.deadline.apply(self.sock)
            self.sock.sendall(data)

    def _drain_events(self) -> None:
        from websockets.frames import Frame, Opcode

        for frame in self.protocol.events_received():
            if not isinstance(frame, Frame):
                continue
            if frame.opcode is Opcode.CLOSE:
                self._closed = True
            elif frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                if frame.opcode is not Opcode.CONT:
                    self._parts, self._text = [], frame.opcode is Opcode.TEXT
                self._parts.append(bytes(frame.data))
                if frame.fin:
                    data = b"".join(self._parts)
                    self._messages.append(data.decode("utf-8", "replace") if self._text else data)
                    self._parts = []

    def recv(self) -> bytes | str | None:
        """The next message; None when the peer closed the connection."""
        while not self._messages:
            self._drain_events()
            self._flush()
            if self._messages:
                break
            if self._closed:
                return None
            self.deadline.apply(self.sock)
            try:
                data = self.sock.recv(65536)
            except ssl.SSLZeroReturnError:
                data = b""
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
                self._drain_events()
                if not self._messages:
                    return None
        return self._messages.pop(0)

    def recv_bytes(self) -> bytes:
        """The payload of the next binary message, b"" at the end (the byte-stream view DERP uses)."""
        message = self.recv()
        if message is None:
            return b""
        if isinstance(message, str):
            raise HandshakeError("a text message where binary data was expected")
        return message

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            self.protocol.send_text(data.encode())
        else:
            self.protocol.send_binary(data)
        self._flush()

    def close(self, wait: float = 0.5) -> None:
        """The closing handshake: send Close, read until the server's Close and end of stream (at most
        `wait` seconds), then close the socket, so that the server never writes to a reset connection."""
        try:
            self.deadline = Deadline(wait)
            self.protocol.send_close(1000)
            self._flush()
            while not self._closed:
                self.deadline.apply(self.sock)
                data = self.sock.recv(65536)
                if not data:
                    break
                self.protocol.receive_data(data)
                self._drain_events()
        except Exception:  # closing is best effort
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def open_websocket(client: HttpClient, url: str, *, subprotocols: tuple[str, ...] = (),
                   headers: dict[str, str] | None = None, timeout: float | None = None) -> WebSocket:
    """Open a WebSocket to the http(s) `url`; UpgradeRefused when the answer is not 101."""
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    key = base64.b64encode(os.urandom(16)).decode()
    request = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
               "Sec-WebSocket-Version": "13"}
    if subprotocols:
        request["Sec-WebSocket-Protocol"] = ", ".join(subprotocols)
    request.update(headers or {})
    stream, response = upgrade(client, url, request, timeout=timeout)
    try:
        if "websocket" not in (response.header("upgrade") or "").lower():
            raise HandshakeError(f"101 with Upgrade: {response.header('upgrade')!r}, not websocket")
        if response.header("sec-websocket-accept") != accept_key(key):
            raise HandshakeError("101 with a wrong Sec-WebSocket-Accept: a proxy answered, not the server")
        chosen = response.header("sec-websocket-protocol")
        if subprotocols and chosen not in subprotocols:
            raise HandshakeError(f"the server chose subprotocol {chosen!r}, not one of "
                                 f"{', '.join(subprotocols)}")
        ws_url = "ws" + url[len("http"):]
        protocol = ClientProtocol(parse_uri(ws_url), state=State.OPEN, max_size=MAX_MESSAGE)
        return WebSocket(stream.sock, protocol, stream.take_pending(), response)
    except BaseException:
        stream.close()
        raise


__all__ = ["HandshakeError", "UpgradeRefused", "WebSocket", "accept_key", "open_websocket"]
