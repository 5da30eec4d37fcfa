"""HTTP(S) requests that honour --resolve, --ca-file, --insecure and --timeout.

Written on http.client because the probes need what higher-level clients hide: the exact hop that
answered (status, Server, cf-ray), raw upgrades, and connecting to an address other than the one the
name resolves to while keeping Host and SNI, like curl's --resolve.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from coderctl.errors import UsageError
from coderctl.facts.hosts import host_matches

BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ResolveRule:
    host: str
    port: int | None
    address: str

    @classmethod
    def parse(cls, text: str) -> ResolveRule:
        """HOST:PORT:ADDRESS; HOST may be `*.example.org`, PORT may be `*`, ADDRESS may be `[::1]`."""
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise UsageError(f"--resolve {text!r}: expected HOST:PORT:ADDRESS")
        host, port, address = parts
        if address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
        if port == "*":
            return cls(host.lower(), None, address)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--resolve {text!r}: {port!r} is not a port")
        return cls(host.lower(), int(port), address)

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return host_matches(self.host, host, any_depth=True)


@dataclass(frozen=True)
class Resolver:
    rules: tuple[ResolveRule, ...] = ()

    @classmethod
    def parse(cls, entries: list[str]) -> Resolver:
        return cls(tuple(ResolveRule.parse(e) for e in entries))

    def address(self, host: str, port: int) -> str:
        for rule in self.rules:
            if rule.matches(host, port):
                return rule.address
        return host


@dataclass
class Target:
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"{url!r} is not an http(s) URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UsageError(f"{url!r} has an invalid port") from None
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def netloc(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    elapsed_s: float
    peer: str
    tls_version: str | None = None
    peer_cert: dict | None = None  # type: ignore[type-arg]
    extra: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def hop(self) -> str:
        """Who answered, as far as the headers tell: Coder, Cloudflare, nginx, or the Server header."""
        if self.header("x-coder-build-version"):
            return f"Coder {self.header('x-coder-build-version')}"
        if self.header("cf-ray"):
            return f"Cloudflare (cf-ray {self.header('cf-ray')})"
        server = self.header("server")
        return server or "an unknown server"


class HttpClient:
    def __init__(
        self,
        *,
        timeout: float,
        resolver: Resolver | None = None,
        ca_file: str | None = None,
        insecure: bool = False,
    ) -> None:
        self.timeout = timeout
        self.resolver = resolver or Resolver()
        self.ca_file = ca_file
        self.insecure = insecure
        self._ssl_context: ssl.SSLContext | None = None
        self._ssl_lock = threading.Lock()

    def ssl_context(self) -> ssl.SSLContext:
        """One context for every connection: loading the system roots costs tens of milliseconds of CPU,
        which concurrent checks would otherwise pay once per connection, one after another."""
        with self._ssl_lock:
            if self._ssl_context is None:
                ctx = ssl.create_default_context(cafile=self.ca_file)
                if self.insecure:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                ctx.set_alpn_protocols(["http/1.1"])
                self._ssl_context = ctx
            return self._ssl_context

    def connect(self, target: Target, *, timeout: float | None = None) -> socket.socket:
        """A connected (and for https, TLS-wrapped with SNI = host) socket to the target."""
        address = self.resolver.address(target.host, target.port)
        sock = socket.create_connection((address, target.port), timeout=timeout or self.timeout)
        if target.scheme == "https":
            try:
                sock = self.ssl_context().wrap_socket(sock, server_hostname=target.host)
            except BaseException:
                sock.close()
                raise
        return sock

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        body_limit: int = BODY_LIMIT,
    ) -> Response:
        target = Target.parse(url)
        start = time.monotonic()
        sock = self.connect(target, timeout=timeout)
        try:
            # Read off the connection before the request: a reply with `Connection: close` closes the socket
            # as soon as its body is read, and a closed SSLSocket has no certificate or peer left to give.
            peer = sock.getpeername()
            tls_version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
            cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
            conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout or self.timeout)
            conn.sock = sock
            conn.putrequest(method, target.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", target.netloc)
            conn.putheader("User-Agent", "coderctl")
            for key, value in (headers or {}).items():
                conn.putheader(key, value)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read(body_limit) if resp.status not in (101, 204, 304) else b""
            return Response(
                status=resp.status,
                reason=resp.reason,
                headers={k.lower(): v for k, v in resp.getheaders()},
                body=body,
                elapsed_s=time.monotonic() - start,
                peer=f"{peer[0]}:{peer[1]}",
                tls_version=tls_version,
                peer_cert=cert or None,
            )
        finally:
            sock.close()


def describe_error(exc: BaseException) -> str:
    """One line for a network failure, naming the kind (refused, timeout, TLS, name)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed: {exc.strerror}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
