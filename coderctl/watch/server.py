"""The HTTP side of the watcher: /metrics, /healthz and /status on the standard library's threading server.

HTTP/1.0, one request per connection, and a socket timeout per request: a scraper or a client that stalls
holds one daemon thread for at most that long, and no connection outlives its answer.
"""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from coderctl.errors import UsageError
from coderctl.watch import metrics

if TYPE_CHECKING:
    from coderctl.watch.watcher import Watcher

DEFAULT_LISTEN = "127.0.0.1:9464"
INDEX = b"coderctl watch: /metrics (Prometheus), /healthz, /status (JSON)\n"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (every IPv4 address); PORT 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 0.0.0.0:9464")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    watcher: Watcher


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10
    server_version = "coderctl-watch"

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        path = self.path.split("?", 1)[0]
        watcher = self.server.watcher
        if path == "/metrics":
            self._send(200, metrics.CONTENT_TYPE, metrics.render(watcher.snapshot()).encode())
        elif path == "/healthz":
            alive = watcher.alive
            self._send(200 if alive else 503, "text/plain; charset=utf-8", b"ok\n" if alive else b"stopped\n")
        elif path == "/status":
            body = json.dumps(watcher.status_document(), indent=2, ensure_ascii=False) + "\n"
            self._send(200, "application/json", body.encode())
        elif path == "/":
            self._send(200, "text/plain; charset=utf-8", INDEX)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: /metrics, /healthz, /status\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        import logging

        logging.getLogger("coderctl.watch.http").debug("%s " + format, self.address_string(), *args)


def serve(watcher: Watcher, listen: str) -> _Server:
    """A bound server (not yet serving: call serve_forever on a thread); UsageError when the address cannot
    be bound."""
    host, port = parse_listen(listen)
    cls = _Server6 if ":" in host else _Server
    try:
        server = cls((host, port), _Handler)
    except OSError as exc:
        raise UsageError(f"--listen {listen}: {exc.strerror or exc}") from None
    server.watcher = watcher
    return server
