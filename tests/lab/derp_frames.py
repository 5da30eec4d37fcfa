"""Minimal DERP frame codec for the lab's fake relay and its tests.

Wire format (tailscale derp/derp.go): 1 byte frame type, 4 byte big-endian payload length, payload.
The product has its own implementation in ``coderctl/protocols``; this one stays independent on purpose,
so a bug in one is not mirrored by the other.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

from nacl.public import Box, PrivateKey, PublicKey
from nacl.utils import random as nacl_random

MAGIC = "DERP🔑".encode()
assert MAGIC == bytes.fromhex("44455250f09f9491")

PROTOCOL_VERSION = 2
KEY_LEN = 32
NONCE_LEN = 24
HEADER_LEN = 5
MAX_PACKET_SIZE = 64 << 10
MAX_CLIENT_INFO_LEN = 256 << 10
# Largest frame the fake accepts at all: a SendPacket with its key, or a ClientInfo.
MAX_FRAME_LEN = MAX_CLIENT_INFO_LEN

SERVER_KEY = 0x01
CLIENT_INFO = 0x02
SERVER_INFO = 0x03
SEND_PACKET = 0x04
RECV_PACKET = 0x05
KEEP_ALIVE = 0x06
NOTE_PREFERRED = 0x07
PEER_GONE = 0x08
PING = 0x12
PONG = 0x13


class FrameError(ValueError):
    """A frame that violates the protocol; the peer closes the connection on it."""


@dataclass(frozen=True)
class Frame:
    type: int
    payload: bytes


def encode(frame_type: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BI", frame_type, len(payload)) + payload


def decode_header(header: bytes) -> tuple[int, int]:
    """Return (type, payload length) of a 5-byte frame header."""
    if len(header) != HEADER_LEN:
        raise FrameError(f"frame header must be {HEADER_LEN} bytes, got {len(header)}")
    frame_type, length = struct.unpack(">BI", header)
    return frame_type, length


def split(buffer: bytes) -> tuple[list[Frame], bytes]:
    """Split complete frames off the front of ``buffer``; return them and the unconsumed rest."""
    frames: list[Frame] = []
    offset = 0
    while len(buffer) - offset >= HEADER_LEN:
        frame_type, length = decode_header(buffer[offset : offset + HEADER_LEN])
        end = offset + HEADER_LEN + length
        if len(buffer) < end:
            break
        frames.append(Frame(frame_type, buffer[offset + HEADER_LEN : end]))
        offset = end
    return frames, buffer[offset:]


def server_key_payload(public_key: bytes) -> bytes:
    return MAGIC + public_key


def parse_server_key(payload: bytes) -> bytes:
    """Return the 32-byte server key from a ServerKey payload (extra trailing bytes are allowed)."""
    if len(payload) < len(MAGIC) + KEY_LEN or not payload.startswith(MAGIC):
        raise FrameError("bad ServerKey frame: wrong magic or too short")
    return payload[len(MAGIC) : len(MAGIC) + KEY_LEN]


def seal(sender: PrivateKey, recipient_public: bytes, message: dict[str, Any]) -> bytes:
    """nonce + NaCl box of the JSON message, as in ClientInfo (after the key) and ServerInfo."""
    nonce = nacl_random(NONCE_LEN)
    box = Box(sender, PublicKey(recipient_public))
    return nonce + box.encrypt(json.dumps(message).encode(), nonce).ciphertext


def open_sealed(receiver: PrivateKey, sender_public: bytes, data: bytes) -> dict[str, Any]:
    if len(data) < NONCE_LEN:
        raise FrameError("sealed message shorter than its nonce")
    try:
        plain = Box(receiver, PublicKey(sender_public)).decrypt(data[NONCE_LEN:], data[:NONCE_LEN])
        message = json.loads(plain)
    except Exception as exc:  # nacl.exceptions.CryptoError, ValueError
        raise FrameError(f"cannot open sealed message: {exc}") from exc
    if not isinstance(message, dict):
        raise FrameError("sealed message is not a JSON object")
    return message


def client_info(client: PrivateKey, server_public: bytes, info: dict[str, Any] | None = None) -> bytes:
    """A complete ClientInfo frame, as a DERP client sends it after reading ServerKey."""
    body = info if info is not None else {"version": PROTOCOL_VERSION}
    return encode(CLIENT_INFO, bytes(client.public_key) + seal(client, server_public, body))


def parse_client_info(server: PrivateKey, payload: bytes) -> tuple[bytes, dict[str, Any]]:
    """Return (client public key, decrypted JSON) of a ClientInfo payload."""
    if len(payload) < KEY_LEN + NONCE_LEN:
        raise FrameError("short ClientInfo")
    client_key = payload[:KEY_LEN]
    return client_key, open_sealed(server, client_key, payload[KEY_LEN:])


# ---- blocking client-side helpers for tests ---------------------------------------------------------


def read_http_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read an HTTP response head from ``sock``; return (status, lowercase headers, bytes read past it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed inside the response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


class FrameReader:
    """Reads whole frames from a blocking socket, starting with bytes already read past the HTTP head."""

    def __init__(self, sock: socket.socket, initial: bytes = b"") -> None:
        self._sock = sock
        self._buffer = initial

    def read(self) -> Frame:
        while True:
            frames, rest = split(self._buffer)
            if frames:
                first = frames[0]
                self._buffer = self._buffer[HEADER_LEN + len(first.payload) :]
                return first
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed with {len(rest)} bytes of a partial frame")
            self._buffer += chunk
