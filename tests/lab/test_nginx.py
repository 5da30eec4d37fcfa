"""The real nginx, configured like ingress-nginx, in front of the fake Coder server, over TLS."""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from lab import derp_frames as df
from lab.coder import DEFAULT_SESSION_TOKEN, FakeCoder, fake_coder  # noqa: F401
from lab.nginx import (  # noqa: F401
    ACCESS_HOST,
    DEFAULT_BACKEND_BODY,
    LabNginx,
    lab_ingress_cert,
    lab_nginx,
    make_nginx,
)
from lab.tls import LabCA, lab_ca  # noqa: F401

MakeNginx = Callable[..., LabNginx]
DERP_REQUEST = "GET /derp HTTP/1.1\r\nHost: {host}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"


def tls_connect(
    nginx: LabNginx, ca: LabCA, sni: str = ACCESS_HOST, alpn: list[str] | None = None
) -> ssl.SSLSocket:
    context = ca.ssl_client_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection((nginx.address, nginx.port), timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def request(
    nginx: LabNginx, ca: LabCA, path: str, host: str = ACCESS_HOST, sni: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    with tls_connect(nginx, ca, sni or host) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        status, headers, rest = df.read_http_head(sock)
        while chunk := sock.recv(65536):
            rest += chunk
    return status, headers, rest


def open_derp(nginx: LabNginx, ca: LabCA) -> tuple[ssl.SSLSocket, int, dict[str, str], bytes]:
    sock = tls_connect(nginx, ca)
    sock.sendall(DERP_REQUEST.format(host=ACCESS_HOST).encode())
    status, headers, rest = df.read_http_head(sock)
    return sock, status, headers, rest


def derp_login(sock: socket.socket, reader: df.FrameReader) -> bytes:
    server_key = df.parse_server_key(reader.read().payload)
    sock.sendall(df.client_info(PrivateKey.generate(), server_key))
    assert reader.read().type == df.SERVER_INFO
    return server_key


def wss(
    nginx: LabNginx, ca: LabCA, path: str, *, derp: bool = False, token: str | None = None
) -> ClientConnection:
    """A WebSocket through nginx to ``path`` (subprotocol ``derp`` and/or session token on request)."""
    sock = socket.create_connection((nginx.address, nginx.port), timeout=5)
    return ws_connect(
        f"wss://{ACCESS_HOST}{path}",
        sock=sock,
        ssl=ca.ssl_client_context(),
        open_timeout=5,
        subprotocols=[Subprotocol("derp")] if derp else None,
        additional_headers={"Coder-Session-Token": token} if token else None,
    )


def test_healthz(lab_nginx: LabNginx, lab_ca: LabCA, fake_coder: FakeCoder) -> None:
    status, headers, body = request(lab_nginx, lab_ca, "/healthz")
    assert (status, body) == (200, b"OK")
    assert headers["x-coder-build-version"] == fake_coder.version and headers["server"] == "nginx"
    seen = fake_coder.requests[-1].headers
    assert seen["host"] == ACCESS_HOST and seen["x-forwarded-proto"] == "https"
    assert seen["connection"] == "close" and "upgrade" not in seen


def test_plain_http_port(lab_nginx: LabNginx) -> None:
    with socket.create_connection((lab_nginx.address, lab_nginx.http_port), timeout=5) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {ACCESS_HOST}\r\nConnection: close\r\n\r\n".encode())
        status, headers, _ = df.read_http_head(sock)
    assert status == 200 and "x-coder-build-version" in headers


def test_derp_server_key_through_nginx(lab_nginx: LabNginx, lab_ca: LabCA, fake_coder: FakeCoder) -> None:
    sock, status, headers, rest = open_derp(lab_nginx, lab_ca)
    with sock:
        assert status == 101
        assert headers["upgrade"] == "DERP" and headers["derp-version"] == "2"
        assert headers["derp-public-key"] == fake_coder.public_key_hex
        reader = df.FrameReader(sock, rest)
        assert derp_login(sock, reader).hex() == headers["derp-public-key"]
        sock.sendall(df.encode(df.PING, b"pingpong"))
        assert reader.read() == df.Frame(df.PONG, b"pingpong")
    assert fake_coder.requests[-1].headers["upgrade"] == "DERP"


def test_derp_without_upgrade_is_426(lab_nginx: LabNginx, lab_ca: LabCA) -> None:
    status, _, body = request(lab_nginx, lab_ca, "/derp")
    assert status == 426 and body.strip() == b"DERP requires connection upgrade"


def test_derp_over_websocket(lab_nginx: LabNginx, lab_ca: LabCA, fake_coder: FakeCoder) -> None:
    with wss(lab_nginx, lab_ca, "/derp", derp=True) as ws:
        assert ws.subprotocol == "derp"
        frames, _ = df.split(ws.recv(timeout=5))  # type: ignore[arg-type]
        assert df.parse_server_key(frames[0].payload).hex() == fake_coder.public_key_hex


def test_websocket_echo(lab_nginx: LabNginx, lab_ca: LabCA) -> None:
    with wss(lab_nginx, lab_ca, "/api/v2/debug/ws", token=DEFAULT_SESSION_TOKEN) as ws:
        for i in range(3):
            ws.send(str(i))
            assert ws.recv(timeout=5) == str(i)


def test_wildcard_host_reaches_coder(lab_nginx: LabNginx, lab_ca: LabCA, fake_coder: FakeCoder) -> None:
    host = f"{secrets.token_hex(4)}.xuperson.org"
    status, headers, _ = request(lab_nginx, lab_ca, "/", host=host)
    assert status == 404 and headers["x-coder-build-version"] == fake_coder.version
    assert fake_coder.counters.app_requests == 1 and fake_coder.requests[-1].headers["host"] == host


def test_unknown_host_gets_default_backend(lab_nginx: LabNginx, lab_ca: LabCA, fake_coder: FakeCoder) -> None:
    status, headers, body = request(lab_nginx, lab_ca, "/healthz", host="other.example.org", sni=ACCESS_HOST)
    assert (status, body.decode()) == (404, DEFAULT_BACKEND_BODY)
    assert headers["server"] == "nginx" and "x-coder-build-version" not in headers
    assert fake_coder.counters.requests == 0


def test_http2_is_offered_like_ingress_nginx(lab_nginx: LabNginx, lab_ca: LabCA) -> None:
    with tls_connect(lab_nginx, lab_ca, alpn=["h2", "http/1.1"]) as sock:
        assert sock.selected_alpn_protocol() == "h2"
    with tls_connect(lab_nginx, lab_ca, alpn=["http/1.1"]) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"


def test_no_upgrade_variant(make_nginx: MakeNginx, lab_ca: LabCA, fake_coder: FakeCoder) -> None:
    nginx = make_nginx(fake_coder.port, variant="no-upgrade")
    sock, status, _, _ = open_derp(nginx, lab_ca)
    with sock:
        assert status == 426
    assert "upgrade" not in fake_coder.requests[-1].headers
    with pytest.raises(InvalidStatus) as info:
        wss(nginx, lab_ca, "/derp", derp=True)
    assert info.value.response.status_code == 426
    with pytest.raises(InvalidStatus):
        wss(nginx, lab_ca, "/api/v2/debug/ws", token=DEFAULT_SESSION_TOKEN)
    assert fake_coder.derp_connections == fake_coder.derp_websocket_connections == 0


def test_websocket_only_variant(make_nginx: MakeNginx, lab_ca: LabCA, fake_coder: FakeCoder) -> None:
    nginx = make_nginx(fake_coder.port, variant="websocket-only")
    sock, status, _, _ = open_derp(nginx, lab_ca)
    with sock:
        assert status == 426
    with wss(nginx, lab_ca, "/derp", derp=True) as ws:
        frames, _ = df.split(ws.recv(timeout=5))  # type: ignore[arg-type]
        assert frames[0].type == df.SERVER_KEY
    assert fake_coder.derp_connections == 0 and fake_coder.derp_websocket_connections == 1


def test_read_timeout_cuts_idle_derp(make_nginx: MakeNginx, lab_ca: LabCA) -> None:
    with FakeCoder(keepalive_interval=3600) as coder:
        nginx = make_nginx(coder.port, read_timeout=2)
        sock, status, _, rest = open_derp(nginx, lab_ca)
        with sock:
            assert status == 101
            derp_login(sock, df.FrameReader(sock, rest))
            idle_since = time.monotonic()
            sock.settimeout(10)
            assert sock.recv(100) == b""
            assert 1.5 <= time.monotonic() - idle_since <= 4


def test_without_wildcard_server(make_nginx: MakeNginx, lab_ca: LabCA, fake_coder: FakeCoder) -> None:
    nginx = make_nginx(fake_coder.port, wildcard=False)
    status, headers, body = request(nginx, lab_ca, "/", host="app--main--ws--alice.xuperson.org")
    assert (status, body.decode()) == (404, DEFAULT_BACKEND_BODY) and "x-coder-build-version" not in headers
    assert request(nginx, lab_ca, "/healthz")[0] == 200


@pytest.mark.parametrize("kind", ["expired", "wrong-host"])
def test_bad_certificates_fail_verification(
    make_nginx: MakeNginx, lab_ca: LabCA, fake_coder: FakeCoder, kind: str
) -> None:
    hosts = ["other.example.org"] if kind == "wrong-host" else [ACCESS_HOST, "*.xuperson.org"]
    cert = lab_ca.issue(hosts, name=f"ingress-{kind}", expired=kind == "expired")
    nginx = make_nginx(fake_coder.port, cert=cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(nginx, lab_ca)


def test_stop_leaves_no_process(lab_ingress_cert: tuple[Path, Path], fake_coder: FakeCoder) -> None:
    nginx = LabNginx(fake_coder.port, lab_ingress_cert).start()
    process = nginx._process
    prefix = nginx.prefix
    assert process is not None and prefix is not None and nginx.running
    nginx.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)
    assert not prefix.exists() and not nginx.running
