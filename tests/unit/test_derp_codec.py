"""The DERP frame codec, from the byte layout in REFERENCE.md (tailscale derp/derp.go).

Frame: 1 byte type, 4 bytes big-endian payload length, payload. ServerKey (0x01) = magic `DERP🔑`
(44 45 52 50 f0 9f 94 91) + 32-byte key. ClientInfo (0x02) = client key + 24-byte nonce + box of JSON.
ServerInfo (0x03) = nonce + box. Ping (0x12) 8 bytes, Pong (0x13) echoes them.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from lab import derp_frames as independent
from nacl.public import Box, PrivateKey, PublicKey

from coderctl.protocols import derp

SERVER = PrivateKey(bytes(range(32)))
SERVER_PUB = bytes(SERVER.public_key)


def test_magic_is_derp_and_the_key_emoji() -> None:
    assert derp.MAGIC == bytes.fromhex("44 45 52 50 f0 9f 94 91") == "DERP🔑".encode()


def test_header_is_type_then_big_endian_length() -> None:
    assert derp.encode_frame(derp.FrameType.PING, b"12345678") == b"\x12\x00\x00\x00\x08" + b"12345678"
    assert derp.decode_header(b"\x01\x00\x00\x01\x00") == (0x01, 256)
    assert derp.encode_header(0x13, 0x01020304) == b"\x13\x01\x02\x03\x04"
    frame, rest = derp.decode_frame(b"\x06\x00\x00\x00\x00" + b"\x13\x00\x00\x00\x01x" + b"tail")
    assert frame == derp.Frame(derp.FrameType.KEEP_ALIVE, b"") and frame.name == "KEEP_ALIVE"
    assert rest == b"\x13\x00\x00\x00\x01xtail"


def test_frame_type_values() -> None:
    expected = {"SERVER_KEY": 0x01, "CLIENT_INFO": 0x02, "SERVER_INFO": 0x03, "SEND_PACKET": 0x04,
                "RECV_PACKET": 0x05, "KEEP_ALIVE": 0x06, "PING": 0x12, "PONG": 0x13}
    assert {name: derp.FrameType[name].value for name in expected} == expected
    assert derp.type_name(0x7F) == "0x7f"


def test_server_key_frame_layout_and_parse() -> None:
    key = bytes(range(100, 132))
    frame = derp.server_key_frame(key)
    assert frame[:5] == b"\x01\x00\x00\x00\x28" and frame[5:13] == derp.MAGIC and frame[13:] == key
    assert derp.parse_server_key(frame[5:]) == key
    assert derp.parse_server_key(frame[5:] + b"future fields") == key
    assert independent.parse_server_key(frame[5:]) == key  # agrees with the lab's separate codec


def test_server_key_bad_magic_and_short() -> None:
    with pytest.raises(derp.BadMagic, match="not the DERP magic"):
        derp.parse_server_key(b"HTTP/1.1" + bytes(32))
    with pytest.raises(derp.TruncatedFrame, match="needs 40"):
        derp.parse_server_key(derp.MAGIC + bytes(31))


def test_client_info_opens_on_the_server_side() -> None:
    keys = derp.ClientKeys.generate()
    frame = derp.client_info_frame(keys, SERVER_PUB, nonce=bytes(24))
    ftype, length = derp.decode_header(frame)
    payload = frame[5:]
    assert ftype == 0x02 and length == len(payload) == 32 + 24 + len(b'{"version": 2}') + 16
    assert payload[:32] == keys.public and payload[32:56] == bytes(24)
    plain = Box(SERVER, PublicKey(keys.public)).decrypt(payload[56:], payload[32:56])
    assert json.loads(plain) == {"version": 2}
    assert independent.parse_client_info(SERVER, payload) == (keys.public, {"version": 2})


def test_server_info_opens_with_the_client_key_and_rejects_tampering() -> None:
    keys = derp.ClientKeys.generate()
    sealed = independent.seal(SERVER, keys.public, {"version": 2, "tokenBucketBytesPerSecond": 0})
    assert derp.open_server_info(keys, SERVER_PUB, sealed) == {"version": 2, "tokenBucketBytesPerSecond": 0}
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(derp.FrameError, match="does not open"):
        derp.open_server_info(keys, SERVER_PUB, tampered)
    with pytest.raises(derp.FrameError, match="does not open"):
        derp.open_server_info(keys, bytes(PrivateKey.generate().public_key), sealed)
    with pytest.raises(derp.TruncatedFrame):
        derp.open_server_info(keys, SERVER_PUB, b"short")


def test_ping_is_eight_bytes() -> None:
    assert derp.ping_frame(b"abcdefgh") == b"\x12\x00\x00\x00\x08abcdefgh"
    with pytest.raises(derp.FrameError, match="8 bytes"):
        derp.ping_frame(b"short")


def test_reader_reassembles_frames_split_anywhere() -> None:
    stream = (derp.server_key_frame(SERVER_PUB) + derp.encode_frame(0x13, b"pingpong")
              + derp.encode_frame(0x06))
    reader = derp.FrameReader.from_chunks(stream[i:i + 1] for i in range(len(stream)))
    assert derp.parse_server_key(reader.read().payload) == SERVER_PUB
    assert reader.read() == derp.Frame(0x13, b"pingpong")
    assert reader.read() == derp.Frame(0x06, b"")
    with pytest.raises(derp.EndOfStream):
        reader.read()


@pytest.mark.parametrize(("data", "message"), [
    (b"\x01\x00\x00", "inside a frame header (3 of 5 bytes)"),
    (b"\x01\x00\x00\x00\x28DERP", "inside a SERVER_KEY frame (4 of 40 payload bytes)"),
    (b"\x12\x00\x00\x00\x08", "inside a PING frame (0 of 8 payload bytes)"),
])
def test_truncated_frames_are_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(derp.TruncatedFrame, match=message.replace("(", r"\(").replace(")", r"\)")):
        derp.FrameReader.from_chunks([data]).read()
    with pytest.raises(derp.TruncatedFrame):
        derp.decode_frame(data)


def test_oversized_frame_fails_before_reading_its_payload() -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b"\x05\x7f\xff\xff\xff"  # a RecvPacket announcing 2 GiB
        raise AssertionError("the reader asked for the payload of an oversized frame")

    with pytest.raises(derp.FrameTooLarge, match="2147483647 bytes, more than the limit of 1048576"):
        derp.FrameReader.from_chunks(chunks()).read()
    with pytest.raises(derp.FrameTooLarge):
        derp.decode_header(b"HTTP/", max_len=1 << 20)  # an HTTP answer where a frame was expected
    with pytest.raises(derp.FrameTooLarge):
        derp.encode_frame(0x04, bytes(derp.MAX_FRAME_LEN + 1))


def test_a_timeout_leaves_the_reader_usable() -> None:
    parts: list[bytes | type[BaseException]] = [b"\x13\x00\x00\x00\x08ping", TimeoutError, b"pong"]

    def recv() -> bytes:
        item = parts.pop(0)
        if isinstance(item, type):
            raise item()
        return item

    reader = derp.FrameReader(recv)
    with pytest.raises(TimeoutError):
        reader.read()
    assert reader.buffered == 9
    assert reader.read() == derp.Frame(0x13, b"pingpong")


def test_reading_a_silent_socket_is_bounded_by_its_timeout() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"\x12\x00\x00\x00\x08half")
        left.settimeout(0.2)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            derp.FrameReader(lambda: left.recv(65536)).read()
        assert time.monotonic() - start < 1
        right.close()
        with pytest.raises(derp.TruncatedFrame):
            derp.FrameReader(lambda: left.recv(65536), b"\x12\x00\x00\x00\x08half").read()
