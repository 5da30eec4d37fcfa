"""The exec stream read on the caller's thread (clients/kube_exec_inline.py), against a WebSocket peer written
by hand on loopback, which does what the lab's API server never does on its own: stays silent after the
handshake, never answers a ping, never answers the upgrade, splits a message into fragments, pings the client.
Each deadline is shortened through the module's constants; each test fails if its deadline is not kept."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from coderctl.clients import kube_exec, kube_exec_inline
from coderctl.clients.kube import KubeClient, KubeUnreachable
from coderctl.clients.kube_exec import ExecStreamBroken

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUCCESS = json.dumps({"kind": "Status", "status": "Success"}).encode()


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    return head + bytes([126]) + struct.pack("!H", len(payload)) + payload


def read_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The client's (masked) frames in `data`: (opcode, payload)."""
    out, pos = [], 0
    while pos + 2 <= len(data):
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if length == 126:
            length, pos = struct.unpack("!H", data[pos:pos + 2])[0], pos + 2
        elif length == 127:
            length, pos = struct.unpack("!Q", data[pos:pos + 8])[0], pos + 8
        mask, pos = data[pos:pos + 4], pos + 4
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[pos:pos + length]))
        pos += length
        out.append((opcode, payload))
    return out


class Peer:
    """Accepts one connection; `script(conn)` runs after the upgrade (or instead of it: answer=False)."""

    def __init__(self, script: Callable[[socket.socket], None], *, answer: bool = True, early: bytes = b"") -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.script, self.answer, self.early = script, answer, early
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            if self.answer:
                key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                           if line.lower().startswith(b"sec-websocket-key:"))
                accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\n"
                             b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n" + self.early)
            self.script(conn)

    def wait_for_stdin(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        while not any(opcode == 0x2 for opcode, _ in read_frames(bytes(self.received))):
            self.received += conn.recv(4096)

    def drain(self, conn: socket.socket, seconds: float) -> None:
        """Read what the client sends for `seconds`, answering nothing."""
        conn.settimeout(0.05)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            if not data:
                return
            self.received += data


def client(peer: Peer, tmp_path: Path) -> KubeClient:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "peer",
              "clusters": [{"name": "peer", "cluster": {"server": f"http://127.0.0.1:{peer.port}"}}],
              "users": [{"name": "peer", "user": {"token": "peer-token"}}],
              "contexts": [{"name": "peer", "context": {"cluster": "peer", "user": "peer"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return KubeClient(str(path), None, 2)


def run(kube: KubeClient, **kwargs: object) -> tuple[bytes, kube_exec.ExecResult]:
    out = bytearray()
    result = kube_exec.exec_stream(kube, "coder", "pod", ["true"], stdout=out.extend, stdin=[b"credentials\n"],
                                   close_stdin=False, **kwargs)  # type: ignore[arg-type]
    return bytes(out), result


@pytest.fixture
def short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_exec_inline, "KEEPALIVE_S", 0.3)
    monkeypatch.setattr(kube_exec_inline, "PING_TIMEOUT_S", 0.6)
    monkeypatch.setattr(kube_exec, "OPEN_TIMEOUT_FLOOR", 0.8)


def test_a_fragmented_message_and_a_ping_from_the_server(tmp_path: Path, short: None) -> None:
    def script(conn: socket.socket) -> None:
        peer.wait_for_stdin(conn)
        conn.sendall(frame(0x9, b"are you there")
                     + frame(0x2, b"\x01hel", fin=False) + frame(0x0, b"lo ", fin=False) + frame(0x0, b"world")
                     + frame(0x2, b"\x02a warning") + frame(0x2, b"\x03" + SUCCESS) + frame(0x8, b"\x03\xe8"))
        peer.drain(conn, 0.3)

    peer = Peer(script)
    out, result = run(client(peer, tmp_path))
    assert out == b"hello world" and result.ok and result.stderr == b"a warning"
    peer.thread.join(2)
    frames = read_frames(bytes(peer.received))
    assert (0x2, b"\x00credentials\n") in frames  # stdin, and no close of it (close_stdin=False)
    assert (0xA, b"are you there") in frames  # the pong
    assert (0x2, bytes([255, 0])) not in frames


def test_a_command_that_ended_before_its_stdin_was_sent(tmp_path: Path, short: None) -> None:
    """Its status and close frame arrive with the handshake's answer: no stdin is sent, the result stands."""
    peer = Peer(lambda conn: peer.drain(conn, 0.3),
                early=frame(0x2, b"\x01done") + frame(0x2, b"\x03" + SUCCESS) + frame(0x8, b"\x03\xe8"))
    out, result = run(client(peer, tmp_path))
    assert out == b"done" and result.ok
    peer.thread.join(2)
    assert [opcode for opcode, _ in read_frames(bytes(peer.received))] == [0x8]  # only the answer to the close


def test_silence_after_the_handshake_is_pinged_then_given_up(tmp_path: Path, short: None) -> None:
    peer = Peer(lambda conn: peer.drain(conn, 3))
    start = time.monotonic()
    with pytest.raises(ExecStreamBroken, match="without an exit status"):
        run(client(peer, tmp_path))
    took = time.monotonic() - start
    assert 0.8 <= took < 2.0, took  # a ping after 0.3 s of silence, unanswered for 0.6 s
    assert any(opcode == 0x9 for opcode, _ in read_frames(bytes(peer.received)))


def test_output_that_keeps_coming_is_never_given_up(tmp_path: Path, short: None) -> None:
    def script(conn: socket.socket) -> None:
        for _ in range(8):
            conn.sendall(frame(0x2, b"\x01."))
            time.sleep(0.2)
        conn.sendall(frame(0x2, b"\x03" + SUCCESS))
        peer.drain(conn, 0.2)

    peer = Peer(script)
    out, result = run(client(peer, tmp_path))
    assert out == b"." * 8 and result.ok


def test_idle_timeout(tmp_path: Path, short: None) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(frame(0x2, b"\x01started"))
        peer.drain(conn, 3)

    peer = Peer(script)
    start = time.monotonic()
    with pytest.raises(ExecStreamBroken, match=r"no data for 0.4s, gave up"):
        run(client(peer, tmp_path), idle_timeout=0.4)
    assert time.monotonic() - start < 1.5


def test_an_upgrade_never_answered_is_unreachable_within_the_open_timeout(tmp_path: Path, short: None) -> None:
    peer = Peer(lambda conn: peer.drain(conn, 4), answer=False)
    start = time.monotonic()
    with pytest.raises(KubeUnreachable, match="cannot open the stream"):
        run(client(peer, tmp_path))
    assert time.monotonic() - start < 2.5


def test_a_refused_upgrade_is_the_apis_error(tmp_path: Path) -> None:
    body = json.dumps({"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
                       "message": 'pods "pod" is forbidden: cannot create resource "pods/exec"'}).encode()

    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        peer.drain(conn, 0.5)

    peer = Peer(script, answer=False)
    with pytest.raises(Exception, match="forbidden") as caught:
        run(client(peer, tmp_path))
    assert type(caught.value).__name__ == "KubeForbidden"


@pytest.mark.parametrize("how", ["closed", "reset"])
def test_output_before_a_dropped_connection_is_all_handed_on(tmp_path: Path, short: None, how: str) -> None:
    """Reads take whatever has arrived at once: bytes that came before the end are counted, then the stream is
    broken (no status), whether the peer closed or reset the connection."""
    def script(conn: socket.socket) -> None:
        peer.wait_for_stdin(conn)
        conn.sendall(b"".join(frame(0x2, b"\x01" + bytes([65 + i]) * 100) for i in range(5)))
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.2)

    peer = Peer(script)
    out = bytearray()
    with pytest.raises(ExecStreamBroken, match="after 500 bytes without an exit status"):
        kube_exec.exec_stream(client(peer, tmp_path), "coder", "pod", ["true"], stdout=out.extend,
                              stdin=[b"credentials\n"], close_stdin=False)
    assert bytes(out) == b"".join(bytes([65 + i]) * 100 for i in range(5))
