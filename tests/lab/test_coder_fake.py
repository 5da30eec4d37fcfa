"""The fake Coder server, tested directly (no proxy in between)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator

import pytest
from nacl.public import PrivateKey
from websockets.exceptions import InvalidStatus, InvalidUpgrade
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from lab import derp_frames as df
from lab.coder import DEFAULT_SESSION_TOKEN, FakeCoder, fake_coder  # noqa: F401

DERP_REQUEST = (
    b"GET /derp HTTP/1.1\r\nHost: coder.xuperson.org\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
)


def get(coder: FakeCoder, path: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", coder.port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def open_derp(port: int, request: bytes = DERP_REQUEST) -> tuple[socket.socket, int, dict[str, str], bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(request)
    status, headers, rest = df.read_http_head(sock)
    return sock, status, headers, rest


@pytest.fixture
def derp_session(fake_coder: FakeCoder) -> Iterator[tuple[socket.socket, df.FrameReader, PrivateKey]]:
    """A raw DERP connection that has completed the login."""
    sock, status, _, rest = open_derp(fake_coder.port)
    with sock:
        assert status == 101
        reader = df.FrameReader(sock, rest)
        server_key = df.parse_server_key(reader.read().payload)
        client = PrivateKey.generate()
        sock.sendall(df.client_info(client, server_key))
        info = reader.read()
        assert info.type == df.SERVER_INFO
        yield sock, reader, client


def test_healthz(fake_coder: FakeCoder) -> None:
    status, headers, body = get(fake_coder, "/healthz")
    assert (status, body) == (200, b"OK")
    assert headers["x-coder-build-version"] == "v2.25.0+abcdef1"


def test_buildinfo(fake_coder: FakeCoder) -> None:
    status, headers, body = get(fake_coder, "/api/v2/buildinfo")
    info = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["x-coder-build-version"] == info["version"] == "v2.25.0+abcdef1"
    for key in (
        "external_url",
        "dashboard_url",
        "workspace_proxy",
        "agent_api_version",
        "provisioner_api_version",
        "upgrade_message",
        "deployment_id",
        "telemetry",
    ):
        assert key in info
    assert info["workspace_proxy"] is False


def test_version_knob() -> None:
    with FakeCoder(version="v2.24.1+0123abc") as coder:
        _, headers, body = get(coder, "/api/v2/buildinfo")
        assert json.loads(body)["version"] == headers["x-coder-build-version"] == "v2.24.1+0123abc"


def test_unknown_route_and_latency_check(fake_coder: FakeCoder) -> None:
    status, headers, body = get(fake_coder, "/api/v2/nope")
    assert status == 404 and json.loads(body) == {"message": "Route not found."}
    assert "x-coder-build-version" in headers
    assert get(fake_coder, "/derp/latency-check")[::2] == (200, b"")


def test_wildcard_host_is_an_app_host(fake_coder: FakeCoder) -> None:
    status, headers, body = get(fake_coder, "/healthz", host="code--main--ws--alice.xuperson.org")
    assert status == 404 and b"Application Not Found" in body
    assert headers["x-coder-build-version"] == fake_coder.version
    assert fake_coder.counters.app_requests == 1
    assert get(fake_coder, "/healthz", host="coder.xuperson.org")[0] == 200


def test_derp_without_upgrade_is_426(fake_coder: FakeCoder) -> None:
    status, headers, body = get(fake_coder, "/derp")
    assert status == 426 and body.strip() == b"DERP requires connection upgrade"
    assert "x-coder-build-version" in headers


def test_raw_derp_greeting(fake_coder: FakeCoder) -> None:
    sock, status, headers, rest = open_derp(fake_coder.port, DERP_REQUEST.replace(b"DERP", b"dErP"))
    with sock:
        assert status == 101
        assert headers["upgrade"] == "DERP" and headers["connection"] == "Upgrade"
        assert headers["derp-version"] == "2"
        key_hex = headers["derp-public-key"]
        assert len(key_hex) == 64 and key_hex == key_hex.lower() == fake_coder.public_key_hex
        frame = df.FrameReader(sock, rest).read()
        assert frame.type == df.SERVER_KEY and frame.payload[:8] == bytes.fromhex("44455250f09f9491")
        assert df.parse_server_key(frame.payload).hex() == key_hex
    assert fake_coder.derp_connections == 1


def test_fixed_server_key() -> None:
    private = PrivateKey.generate()
    with FakeCoder(server_key=bytes(private)) as coder:
        assert coder.public_key_hex == bytes(private.public_key).hex()


def test_derp_login_and_ping(
    fake_coder: FakeCoder, derp_session: tuple[socket.socket, df.FrameReader, PrivateKey]
) -> None:
    sock, reader, _ = derp_session
    sock.sendall(df.encode(df.PING, b"12345678"))
    assert reader.read() == df.Frame(df.PONG, b"12345678")
    assert fake_coder.counters.derp_logins == 1 and fake_coder.client_infos == [{"version": 2}]


def test_server_info_decrypts(fake_coder: FakeCoder) -> None:
    sock, _, _, rest = open_derp(fake_coder.port)
    with sock:
        reader = df.FrameReader(sock, rest)
        server_key = df.parse_server_key(reader.read().payload)
        client = PrivateKey.generate()
        sock.sendall(df.client_info(client, server_key, {"version": 2, "canAckPings": True}))
        frame = reader.read()
        assert frame.type == df.SERVER_INFO
        assert df.open_sealed(client, server_key, frame.payload) == {"version": 2}


def test_keepalive() -> None:
    with FakeCoder(keepalive_interval=0.1) as coder:
        sock, _, _, rest = open_derp(coder.port)
        with sock:
            reader = df.FrameReader(sock, rest)
            server_key = df.parse_server_key(reader.read().payload)
            sock.sendall(df.client_info(PrivateKey.generate(), server_key))
            assert reader.read().type == df.SERVER_INFO
            assert reader.read() == df.Frame(df.KEEP_ALIVE, b"")


@pytest.mark.parametrize(
    "bad",
    [
        df.encode(df.PING, b"12345678"),  # not ClientInfo first
        df.encode(df.CLIENT_INFO, b"\0" * 80),  # box does not open
        df.encode(df.CLIENT_INFO, b"\0" * 10),  # too short
    ],
)
def test_bad_login_closes(fake_coder: FakeCoder, bad: bytes) -> None:
    sock, _, _, rest = open_derp(fake_coder.port)
    with sock:
        df.FrameReader(sock, rest).read()
        sock.sendall(bad)
        assert sock.recv(100) == b""
    assert fake_coder.counters.derp_rejected == 1


def test_bad_frame_after_login_closes(
    fake_coder: FakeCoder, derp_session: tuple[socket.socket, df.FrameReader, PrivateKey]
) -> None:
    sock, _, _ = derp_session
    sock.sendall(df.encode(df.PING, b"123"))
    assert sock.recv(100) == b""


def test_relay_between_two_clients(
    fake_coder: FakeCoder, derp_session: tuple[socket.socket, df.FrameReader, PrivateKey]
) -> None:
    sock_a, _, key_a = derp_session
    sock_b, _, _, rest = open_derp(fake_coder.port)
    with sock_b:
        reader_b = df.FrameReader(sock_b, rest)
        server_key = df.parse_server_key(reader_b.read().payload)
        key_b = PrivateKey.generate()
        sock_b.sendall(df.client_info(key_b, server_key))
        assert reader_b.read().type == df.SERVER_INFO
        sock_a.sendall(df.encode(df.SEND_PACKET, bytes(key_b.public_key) + b"hello"))
        assert reader_b.read() == df.Frame(df.RECV_PACKET, bytes(key_a.public_key) + b"hello")


def test_derp_over_websocket(fake_coder: FakeCoder) -> None:
    with ws_connect(f"{fake_coder.url.replace('http', 'ws')}/derp", subprotocols=[Subprotocol("derp")]) as ws:
        assert ws.subprotocol == "derp"
        first = ws.recv(timeout=5)
        assert isinstance(first, bytes)
        frames, _ = df.split(first)
        server_key = df.parse_server_key(frames[0].payload)
        assert server_key.hex() == fake_coder.public_key_hex
        client = PrivateKey.generate()
        ws.send(df.client_info(client, server_key))
        info, _ = df.split(ws.recv(timeout=5))  # type: ignore[arg-type]
        assert info[0].type == df.SERVER_INFO
        ws.send(df.encode(df.PING, b"abcdefgh"))
        assert df.split(ws.recv(timeout=5)) == ([df.Frame(df.PONG, b"abcdefgh")], b"")  # type: ignore[arg-type]
    assert fake_coder.derp_websocket_connections == 1 and fake_coder.derp_connections == 0


def test_websocket_without_derp_subprotocol_gets_raw_derp(fake_coder: FakeCoder) -> None:
    """As tailscale's handler: Upgrade: websocket without the derp subprotocol is treated as raw DERP."""
    with pytest.raises(InvalidUpgrade):
        ws_connect(f"ws://127.0.0.1:{fake_coder.port}/derp", open_timeout=5)
    assert fake_coder.derp_connections == 1


def test_fast_start_skips_the_101(fake_coder: FakeCoder) -> None:
    request = DERP_REQUEST.replace(b"\r\n\r\n", b"\r\nDerp-Fast-Start: 1\r\n\r\n")
    with socket.create_connection(("127.0.0.1", fake_coder.port), timeout=5) as sock:
        sock.sendall(request)
        assert df.FrameReader(sock).read().type == df.SERVER_KEY


def test_websocket_echo_with_token(fake_coder: FakeCoder) -> None:
    url = f"ws://127.0.0.1:{fake_coder.port}/api/v2/debug/ws"
    headers = {"Coder-Session-Token": DEFAULT_SESSION_TOKEN}
    with ws_connect(url, additional_headers=headers) as ws:
        assert ws.response is not None
        assert ws.response.headers["X-Coder-Build-Version"] == fake_coder.version
        for i in range(3):
            ws.send(str(i))
            assert ws.recv(timeout=5) == str(i)
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=5) == b"\x00\x01"
    assert fake_coder.counters.echo_messages == 4


@pytest.mark.parametrize("headers", [{}, {"Coder-Session-Token": "wrongwrong-wrongwrongwrongwrongwron"}])
def test_websocket_echo_needs_token(fake_coder: FakeCoder, headers: dict[str, str]) -> None:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(f"ws://127.0.0.1:{fake_coder.port}/api/v2/debug/ws", additional_headers=headers)
    response = info.value.response
    assert response.status_code == 401
    assert json.loads(response.body)["message"].startswith("You are signed out")


def test_hang_mode_times_out(fake_coder: FakeCoder) -> None:
    fake_coder.mode = "hang"
    conn = http.client.HTTPConnection("127.0.0.1", fake_coder.port, timeout=0.3)
    conn.request("GET", "/healthz")
    with pytest.raises(TimeoutError):
        conn.getresponse()
    conn.close()
    fake_coder.mode = "normal"
    assert get(fake_coder, "/healthz")[0] == 200


def test_down_mode_refuses_then_recovers(fake_coder: FakeCoder) -> None:
    port = fake_coder.port
    fake_coder.mode = "down"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    fake_coder.mode = "normal"
    assert fake_coder.port == port and get(fake_coder, "/healthz")[0] == 200


def test_stop_ends_thread_and_open_connections() -> None:
    coder = FakeCoder().start()
    sock, status, _, _ = open_derp(coder.port)
    thread = coder._thread
    started = time.monotonic()
    coder.stop()
    assert time.monotonic() - started < 2
    assert thread is not None and not thread.is_alive()
    with sock:
        assert status == 101
        sock.settimeout(2)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(4096):
                pass
