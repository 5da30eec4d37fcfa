"""A server that answers with `Connection: close` over TLS (real servers do): the HTTP client reads what it
needs from the connection (certificate, TLS version, peer) before the reply closes it."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lab.nginx import ACCESS_HOST, WILDCARD_DOMAIN
from lab.tls import LabCA
from probeargs import WILDCARD, by_id, run_json

from coderctl.clients.http import HttpClient, Resolver
from coderctl.clients.latency import timed_gets

VERSION = "v2.25.0+abcdef1"


class _Closing(BaseHTTPRequestHandler):
    """Coder's answers, each with `Connection: close`, so the server shuts the connection after the body."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        path = self.path.partition("?")[0]
        if path == "/api/v2/buildinfo":
            body = json.dumps({"version": VERSION, "dashboard_url": f"https://{ACCESS_HOST}",
                               "external_url": "https://github.com/coder/coder/commit/abcdef1"}).encode()
        elif path in ("/healthz",):
            body = b"OK"
        else:
            body = b""
        self.send_response(200)
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Coder-Build-Version", VERSION)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def closing_server(lab_ca: LabCA) -> Iterator[int]:
    """An HTTPS server on loopback that closes every connection after one reply; yields its port."""
    cert, key = lab_ca.issue([ACCESS_HOST, f"*.{WILDCARD_DOMAIN}"], name="connection-close")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Closing)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _client(lab_ca: LabCA, port: int) -> HttpClient:
    return HttpClient(timeout=5, ca_file=str(lab_ca.ca_file),
                      resolver=Resolver.parse([f"{ACCESS_HOST}:{port}:127.0.0.1", f"{WILDCARD}:{port}:127.0.0.1"]))


def test_request_keeps_the_certificate_of_a_closed_connection(closing_server: int, lab_ca: LabCA) -> None:
    resp = _client(lab_ca, closing_server).request("GET", f"https://{ACCESS_HOST}:{closing_server}/healthz")
    assert resp.status == 200 and resp.body == b"OK" and resp.header("connection") == "close"
    assert resp.peer == f"127.0.0.1:{closing_server}"
    assert resp.tls_version in ("TLSv1.2", "TLSv1.3")
    assert resp.peer_cert is not None and ("DNS", ACCESS_HOST) in resp.peer_cert["subjectAltName"]


def test_repeated_gets_reconnect_after_a_close(closing_server: int, lab_ca: LabCA) -> None:
    url = f"https://{ACCESS_HOST}:{closing_server}/derp/latency-check"
    responses = timed_gets(_client(lab_ca, closing_server), url, 3)
    assert [r.status for r in responses] == [200, 200, 200]
    assert all(r.peer == f"127.0.0.1:{closing_server}" for r in responses)


def test_probe_http_against_a_closing_server(closing_server: int, lab_ca: LabCA) -> None:
    port = closing_server
    r, doc = run_json("probe", "http", "--access-url", f"https://{ACCESS_HOST}:{port}",
                      "--resolve", f"{ACCESS_HOST}:{port}:127.0.0.1", "--resolve", f"{WILDCARD}:{port}:127.0.0.1",
                      "--ca-file", str(lab_ca.ca_file), "--wildcard-url", WILDCARD)
    checks = by_id(doc)
    assert {cid: c["status"] for cid, c in checks.items()} == {
        "http.healthz": "ok", "http.buildinfo": "ok", "http.wildcard": "ok", "tls.access-url": "ok",
        "tls.wildcard": "ok"}, r.output
    assert r.code == 0
    assert not any("AttributeError" in c["detail"] for c in doc["checks"])
