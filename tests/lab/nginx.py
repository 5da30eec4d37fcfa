"""The real ``nginx`` binary configured like ingress-nginx in front of the fake Coder server.

Everything nginx writes (pid, logs, temp paths) lives in a private temp dir; it runs in the foreground in
its own process group so that ``stop()`` can make sure no worker survives.

Variants (how the proxy treats upgrades):

- ``healthy``: ingress-nginx's template: ``Upgrade $http_upgrade``, ``Connection $connection_upgrade``.
- ``no-upgrade``: no upgrade headers set, so nginx's defaults apply (``Upgrade`` dropped,
  ``Connection: close``): the upstream never sees an upgrade (DERP gets 426, WebSocket fails).
- ``websocket-only``: like a Cloudflare tunnel (cloudflared#990): ``Upgrade`` passes only when it is
  ``websocket``; ``Upgrade: DERP`` is stripped, so only DERP over WebSocket works.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import pytest

from lab.coder import FakeCoder
from lab.procguard import die_with_parent
from lab.tls import LabCA

Variant = Literal["healthy", "no-upgrade", "websocket-only"]
VARIANTS: tuple[Variant, ...] = ("healthy", "no-upgrade", "websocket-only")
ACCESS_HOST = "coder.xuperson.org"
WILDCARD_DOMAIN = "xuperson.org"
DEFAULT_BACKEND_BODY = "default backend - 404"

_UPGRADE_MAPS: dict[Variant, str] = {
    "healthy": """
    map $http_upgrade $connection_upgrade {
        default upgrade;
        '' close;
    }""",
    "no-upgrade": "",
    "websocket-only": """
    map $http_upgrade $tunnel_upgrade {
        ~*^websocket$ $http_upgrade;
        default '';
    }
    map $tunnel_upgrade $tunnel_connection {
        default upgrade;
        '' close;
    }""",
}

_UPGRADE_HEADERS: dict[Variant, str] = {
    "healthy": """
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;""",
    "no-upgrade": "",
    "websocket-only": """
            proxy_set_header Upgrade $tunnel_upgrade;
            proxy_set_header Connection $tunnel_connection;""",
}


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed (Debian package nginx-light)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LabNginx:
    """An nginx ingress stand-in: TLS on ``port`` and plain HTTP on ``http_port``, both on ``address``.

    ``cert`` is (certificate chain PEM, key PEM) for the Coder servers; ``default_cert`` (defaults to
    ``cert``) is what the catch-all default server presents. ``http2`` mirrors ingress-nginx's
    ``use-http2: true``: a TLS client offering ALPN ``h2`` negotiates HTTP/2 (where Upgrade cannot work).
    """

    def __init__(
        self,
        upstream_port: int,
        cert: tuple[Path, Path],
        *,
        variant: Variant = "healthy",
        read_timeout: float = 3600,
        send_timeout: float | None = None,
        wildcard: bool = True,
        http2: bool = True,
        default_cert: tuple[Path, Path] | None = None,
        access_host: str = ACCESS_HOST,
        wildcard_domain: str = WILDCARD_DOMAIN,
        address: str = "127.0.0.1",
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        self.upstream_port = upstream_port
        self.cert = cert
        self.default_cert = default_cert or cert
        self.variant = variant
        self.read_timeout = read_timeout
        self.send_timeout = read_timeout if send_timeout is None else send_timeout
        self.wildcard = wildcard
        self.http2 = http2
        self.access_host = access_host
        self.wildcard_domain = wildcard_domain
        self.address = address
        self.port = 0
        self.http_port = 0
        self.prefix: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # ---- public API -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The access URL as clients write it (resolve ``access_host`` to ``address``:``port`` yourself)."""
        return f"https://{self.access_host}:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self._prefix() / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self._prefix() / "error.log"

    @property
    def access_log(self) -> Path:
        return self._prefix() / "access.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        if self._process is not None:
            raise RuntimeError("LabNginx already started")
        self.prefix = Path(tempfile.mkdtemp(prefix="lab-nginx-"))
        last_error = ""
        for _ in range(5):
            self.port, self.http_port = free_port(self.address), free_port(self.address)
            self.conf_path.write_text(self.render_config())
            last_error = self._launch()
            if not last_error:
                return self
            if "Address already in use" not in last_error:
                break
        self._cleanup_dir()
        raise RuntimeError(f"nginx did not start: {last_error}")

    def stop(self) -> None:
        process = self._process
        if process is not None:
            self._process = None
            _terminate_group(process)
        self._cleanup_dir()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def render_config(self) -> str:
        prefix = self._prefix()
        user = "user root root;" if os.geteuid() == 0 else ""
        h2 = " http2" if self.http2 else ""
        servers = [self._server_block(self.access_host, h2)]
        if self.wildcard:
            servers.append(self._server_block(f"*.{self.wildcard_domain}", h2))
        default_crt, default_key = self.default_cert
        return f"""# generated by tests/lab/nginx.py (variant {self.variant}, wildcard {self.wildcard})
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;

events {{
    worker_connections 256;
}}

http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server_tokens off;
    default_type text/plain;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
{_UPGRADE_MAPS[self.variant]}

    # ingress-nginx's catch-all server, answered by its default backend
    server {{
        listen {self.address}:{self.port} ssl{h2} default_server;
        listen {self.address}:{self.http_port} default_server;
        server_name _;
        ssl_certificate {default_crt};
        ssl_certificate_key {default_key};
        location / {{
            return 404 "{DEFAULT_BACKEND_BODY}";
        }}
    }}
{"".join(servers)}}}
"""

    # ---- internals --------------------------------------------------------------------------------

    def _server_block(self, server_name: str, h2: str) -> str:
        crt, key = self.cert
        return f"""
    server {{
        listen {self.address}:{self.port} ssl{h2};
        listen {self.address}:{self.http_port};
        server_name {server_name};
        ssl_certificate {crt};
        ssl_certificate_key {key};
        client_max_body_size 0;

        location / {{
            proxy_pass http://127.0.0.1:{self.upstream_port};
            proxy_http_version 1.1;{_UPGRADE_HEADERS[self.variant]}
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Scheme $scheme;
            proxy_connect_timeout 5s;
            proxy_read_timeout {_seconds(self.read_timeout)};
            proxy_send_timeout {_seconds(self.send_timeout)};
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
"""

    def _prefix(self) -> Path:
        if self.prefix is None:
            raise RuntimeError("LabNginx is not started")
        return self.prefix

    def _launch(self) -> str:
        """Start nginx and wait until both ports accept; return an error text ('' on success)."""
        prefix = self._prefix()
        (prefix / "tmp").mkdir(exist_ok=True)
        stderr_path = prefix / "stderr.log"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                die_with_parent([nginx_binary(), "-p", f"{prefix}/", "-c", str(self.conf_path), "-g", "daemon off;"]),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return self._log_tail(stderr_path) or f"nginx exited with {process.returncode}"
            if _accepts(self.address, self.port) and _accepts(self.address, self.http_port):
                self._process = process
                return ""
            time.sleep(0.02)
        _terminate_group(process)
        return f"nginx not listening after 10 s: {self._log_tail(stderr_path)}"

    def _log_tail(self, stderr_path: Path) -> str:
        texts = [p.read_text(errors="replace") for p in (stderr_path, self.error_log) if p.exists()]
        return "\n".join(t.strip() for t in texts if t.strip())[-2000:]

    def _cleanup_dir(self) -> None:
        if self.prefix is not None:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None


def _seconds(value: float) -> str:
    return f"{int(value * 1000)}ms"


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _terminate_group(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGTERM) of the nginx master; then make sure nothing of its group is left."""
    pgid = process.pid  # start_new_session: the master leads its own process group
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout=5)
    deadline = time.monotonic() + 5
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lab_ingress_cert(lab_ca: LabCA) -> tuple[Path, Path]:
    """Certificate for the access host and the wildcard, as the ingress serves them."""
    return lab_ca.issue([ACCESS_HOST, f"*.{WILDCARD_DOMAIN}"], name="ingress")


@pytest.fixture
def make_nginx(lab_ingress_cert: tuple[Path, Path]) -> Iterator[Callable[..., LabNginx]]:
    """Factory: ``make_nginx(upstream_port, **kwargs)`` -> started LabNginx, stopped at teardown.

    ``cert`` defaults to the lab ingress certificate.
    """
    started: list[LabNginx] = []

    def make(upstream_port: int, **kwargs: object) -> LabNginx:
        kwargs.setdefault("cert", lab_ingress_cert)
        nginx = LabNginx(upstream_port, **kwargs)  # type: ignore[arg-type]
        started.append(nginx)
        return nginx.start()

    yield make
    for nginx in started:
        nginx.stop()


@pytest.fixture
def lab_nginx(fake_coder: FakeCoder, make_nginx: Callable[..., LabNginx]) -> LabNginx:
    """The healthy ingress in front of ``fake_coder``."""
    return make_nginx(fake_coder.port)
