"""The DERP relay's frame format (tailscale derp/derp.go), written from its byte layout. No I/O.

A frame is 1 byte of type, a 4-byte big-endian payload length, then the payload. After the HTTP upgrade
the server sends ServerKey (the 8-byte magic ``DERP🔑`` + its 32-byte Curve25519 key) unasked; a client
logs in with ClientInfo (its public key, a 24-byte nonce and a NaCl box of JSON) and gets ServerInfo
(nonce + box) back. Ping carries 8 bytes that Pong echoes.

``FrameReader`` pulls chunks from any callable (a socket's recv, a WebSocket's messages, an iterator in
tests): it checks a frame's announced length against a limit before waiting for the payload, so a
corrupt or hostile length fails at once instead of waiting for bytes that never come, and the end of the
chunks inside a frame is an error, not a hang.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from coderctl.errors import CoderctlError

MAGIC = b"DERP\xf0\x9f\x94\x91"  # "DERP🔑" in UTF-8
PROTOCOL_VERSION = 2
HEADER_LEN = 5
KEY_LEN = 32
NONCE_LEN = 24
PING_LEN = 8
MAX_FRAME_LEN = 1 << 20  # what tailscale's client accepts per frame

_HEADER = struct.Struct(">BI")


class FrameType(IntEnum):
    SERVER_KEY = 0x01
    CLIENT_INFO = 0x02
    SERVER_INFO = 0x03
    SEND_PACKET = 0x04
    RECV_PACKET = 0x05
    KEEP_ALIVE = 0x06
    NOTE_PREFERRED = 0x07
    PEER_GONE = 0x08
    PEER_PRESENT = 0x09
    FORWARD_PACKET = 0x0A
    WATCH_CONNS = 0x10
    CLOSE_PEER = 0x11
    PING = 0x12
    PONG = 0x13
    HEALTH = 0x14
    RESTARTING = 0x15


def type_name(frame_type: int) -> str:
    try:
        return FrameType(frame_type).name
    except ValueError:
        return f"0x{frame_type:02x}"


class FrameError(CoderctlError):
    """Bytes that are not valid DERP."""


class TruncatedFrame(FrameError):
    """The stream ended inside a frame."""


class EndOfStream(FrameError):
    """The stream ended cleanly between two frames."""


class FrameTooLarge(FrameError):
    pass


class BadMagic(FrameError):
    pass


@dataclass(frozen=True)
class Frame:
    type: int
    payload: bytes

    @property
    def name(self) -> str:
        return type_name(self.type)


def encode_header(frame_type: int, length: int) -> bytes:
    if not 0 <= frame_type <= 0xFF:
        raise FrameError(f"frame type {frame_type} does not fit in one byte")
    if not 0 <= length <= 0xFFFFFFFF:
        raise FrameError(f"frame length {length} does not fit in four bytes")
    return _HEADER.pack(frame_type, length)


def encode_frame(frame_type: int, payload: bytes = b"", *, max_len: int = MAX_FRAME_LEN) -> bytes:
    if len(payload) > max_len:
        raise FrameTooLarge(f"{type_name(frame_type)} payload of {len(payload)} bytes exceeds {max_len}")
    return encode_header(frame_type, len(payload)) + payload


def decode_header(data: bytes, *, max_len: int = MAX_FRAME_LEN) -> tuple[int, int]:
    """(type, payload length) of the 5-byte header at the start of `data`."""
    if len(data) < HEADER_LEN:
        raise TruncatedFrame(f"frame header needs {HEADER_LEN} bytes, got {len(data)}")
    frame_type, length = _HEADER.unpack_from(data)
    if length > max_len:
        raise FrameTooLarge(f"{type_name(frame_type)} frame announces {length} bytes, more than the limit of "
                            f"{max_len}: not a DERP stream, or a corrupt one")
    return frame_type, length


def decode_frame(data: bytes, *, max_len: int = MAX_FRAME_LEN) -> tuple[Frame, bytes]:
    """The first complete frame of `data` and the bytes after it."""
    frame_type, length = decode_header(data, max_len=max_len)
    end = HEADER_LEN + length
    if len(data) < end:
        raise TruncatedFrame(f"{type_name(frame_type)} frame announces {length} payload bytes, "
                             f"only {len(data) - HEADER_LEN} present")
    return Frame(frame_type, bytes(data[HEADER_LEN:end])), bytes(data[end:])


def parse_server_key(payload: bytes) -> bytes:
    """The 32-byte server key of a ServerKey payload (later versions may append bytes; they are ignored)."""
    if len(payload) < len(MAGIC) + KEY_LEN:
        raise TruncatedFrame(f"ServerKey payload is {len(payload)} bytes, needs {len(MAGIC) + KEY_LEN}")
    if not payload.startswith(MAGIC):
        raise BadMagic(f"ServerKey payload starts with {payload[:len(MAGIC)].hex()}, not the DERP magic "
                       f"{MAGIC.hex()}")
    return bytes(payload[len(MAGIC):len(MAGIC) + KEY_LEN])


def server_key_frame(public_key: bytes) -> bytes:
    if len(public_key) != KEY_LEN:
        raise FrameError(f"a server key is {KEY_LEN} bytes, got {len(public_key)}")
    return encode_frame(FrameType.SERVER_KEY, MAGIC + public_key)


@dataclass(frozen=True)
class ClientKeys:
    """A client's Curve25519 key pair (raw 32-byte halves)."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> ClientKeys:
        from nacl.public import PrivateKey

        key = PrivateKey.generate()
        return cls(bytes(key), bytes(key.public_key))


def _box(own_private: bytes, peer_public: bytes):  # type: ignore[no-untyped-def]
    from nacl.public import Box, PrivateKey, PublicKey

    if len(peer_public) != KEY_LEN:
        raise FrameError(f"a public key is {KEY_LEN} bytes, got {len(peer_public)}")
    return Box(PrivateKey(own_private), PublicKey(peer_public))


def seal(own_private: bytes, peer_public: bytes, message: dict[str, Any],
         nonce: bytes | None = None) -> bytes:
    """nonce + NaCl box of `message` as JSON."""
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    if len(nonce) != NONCE_LEN:
        raise FrameError(f"a nonce is {NONCE_LEN} bytes, got {len(nonce)}")
    ciphertext = _box(own_private, peer_public).encrypt(json.dumps(message).encode(), nonce).ciphertext
    return nonce + bytes(ciphertext)


def open_sealed(own_private: bytes, peer_public: bytes, data: bytes) -> dict[str, Any]:
    from nacl.exceptions import CryptoError

    if len(data) < NONCE_LEN:
        raise TruncatedFrame(f"sealed message of {len(data)} bytes is shorter than its nonce")
    try:
        plain = _box(own_private, peer_public).decrypt(data[NONCE_LEN:], data[:NONCE_LEN])
    except CryptoError:
        raise FrameError("the box does not open with these keys (wrong server key, or tampered)") from None
    try:
        message = json.loads(plain)
    except ValueError:
        raise FrameError("the opened box does not hold JSON") from None
    if not isinstance(message, dict):
        raise FrameError("the opened box holds JSON that is not an object")
    return message


def client_info_frame(keys: ClientKeys, server_key: bytes, info: dict[str, Any] | None = None,
                      *, nonce: bytes | None = None) -> bytes:
    """ClientInfo: the client's public key, then nonce + box of `info` (default {"version": 2})."""
    body = {"version": PROTOCOL_VERSION} if info is None else info
    return encode_frame(FrameType.CLIENT_INFO, keys.public + seal(keys.private, server_key, body, nonce))


def open_server_info(keys: ClientKeys, server_key: bytes, payload: bytes) -> dict[str, Any]:
    """The JSON of a ServerInfo payload, opened with the client's private key."""
    return open_sealed(keys.private, server_key, payload)


def ping_frame(data: bytes) -> bytes:
    if len(data) != PING_LEN:
        raise FrameError(f"Ping carries {PING_LEN} bytes, got {len(data)}")
    return encode_frame(FrameType.PING, data)


class FrameReader:
    """Whole frames from a source of byte chunks; `recv()` returns b"" at the end of the stream.

    Nothing is consumed until a frame is complete, so a timeout raised by `recv` leaves the reader
    usable. How long a read may wait is the source's business (a socket timeout, a deadline).
    """

    def __init__(self, recv: Callable[[], bytes], initial: bytes = b"", *,
                 max_len: int = MAX_FRAME_LEN) -> None:
        self._recv = recv
        self._buffer = bytearray(initial)
        self.max_len = max_len

    @classmethod
    def from_chunks(cls, chunks: Iterable[bytes], *, max_len: int = MAX_FRAME_LEN) -> FrameReader:
        it = iter(chunks)
        return cls(lambda: next(it, b""), max_len=max_len)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _fill(self, need: int) -> None:
        while len(self._buffer) < need:
            chunk = self._recv()
            if not chunk:
                if not self._buffer:
                    raise EndOfStream("the stream ended")
                if len(self._buffer) < HEADER_LEN:
                    raise TruncatedFrame(f"the stream ended inside a frame header ({len(self._buffer)} of "
                                         f"{HEADER_LEN} bytes)")
                frame_type, length = decode_header(bytes(self._buffer), max_len=self.max_len)
                raise TruncatedFrame(f"the stream ended inside a {type_name(frame_type)} frame "
                                     f"({len(self._buffer) - HEADER_LEN} of {length} payload bytes)")
            self._buffer += chunk

    def read(self) -> Frame:
        self._fill(HEADER_LEN)
        frame_type, length = decode_header(bytes(self._buffer[:HEADER_LEN]), max_len=self.max_len)
        self._fill(HEADER_LEN + length)
        payload = bytes(self._buffer[HEADER_LEN:HEADER_LEN + length])
        del self._buffer[:HEADER_LEN + length]
        return Frame(frame_type, payload)
