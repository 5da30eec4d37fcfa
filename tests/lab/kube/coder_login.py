"""What a fake Coder container does at startup: log in to PostgreSQL with CODER_PG_CONNECTION_URL as lib/pq would.

Coder (cli/server.go ConnectToPostgres) opens the URL with lib/pq and pings it, retrying with a back-off for 30 s,
logging ``ping postgres: retrying`` each time; then it logs ``connect to postgres failed`` and exits 1. Here the
login is real (psycopg against the lab's PostgreSQL), the host is resolved through the fake cluster's Services by
the caller, and errors are worded as lib/pq and Go's resolver word them. lib/pq's ``sslmode`` default is
``require``, so a URL without ``sslmode`` fails against a server with ``ssl = off``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote

Dial = Callable[[str, int], "tuple[str, int] | str"]
"""(host, port) in the URL -> the local address to connect to, or the dial error (Go's wording)."""

SSL_MODES = ("disable", "require", "verify-ca", "verify-full")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class PqError(Exception):
    """A login failure worded as lib/pq (or Go's net package) reports it."""


@dataclass(frozen=True)
class PqTarget:
    host: str
    port: int
    user: str
    password: str | None
    dbname: str
    sslmode: str


def parse_url(url: str) -> PqTarget:
    """A ``postgres://`` URL as Go's net/url and lib/pq read it (the authority ends at the first / ? #)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        raise PqError(f"invalid connection protocol: {scheme if sep else ''}")
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        userinfo, hostport = "", authority
    if _BAD_ESCAPE.search(userinfo):
        raise PqError("invalid userinfo")
    host, port_text = hostport, ""
    if hostport.startswith("["):
        close = hostport.find("]")
        host, port_text = hostport[1:close], hostport[close + 1:].lstrip(":")
    elif ":" in hostport:
        host, _, port_text = hostport.rpartition(":")
    if port_text and not port_text.isdigit():
        raise PqError('invalid port "..." after host')
    user, colon, password = userinfo.partition(":")
    path, _, query = tail.partition("?")
    params = {k: v[-1] for k, v in parse_qs(query.partition("#")[0]).items()}
    sslmode = params.get("sslmode", "") or "require"
    if sslmode not in SSL_MODES:
        raise PqError(f'pq: unsupported sslmode "{sslmode}"; only "require" (default), "verify-full", '
                      f'"verify-ca", and "disable" supported')
    user = unquote(user)
    return PqTarget(host=host or "localhost", port=int(port_text or 5432), user=user,
                    password=unquote(password) if colon else None,
                    dbname=unquote(path.lstrip("/")) or user, sslmode=sslmode)


def login(url: str, dial: Dial, timeout: float = 2.0) -> None:
    """One lib/pq open + ping; :class:`PqError` with lib/pq's message when it fails."""
    import psycopg

    target = parse_url(url)
    address = dial(target.host, target.port)
    if isinstance(address, str):
        raise PqError(address)
    try:
        conn = psycopg.connect(host=address[0], port=address[1], user=target.user, password=target.password or "",
                               dbname=target.dbname, passfile="/dev/null", connect_timeout=max(1, round(timeout)),
                               sslmode="disable" if target.sslmode == "disable" else "require")
    except psycopg.OperationalError as exc:
        raise PqError(_pq_message(str(exc), target)) from None
    conn.close()


def _pq_message(text: str, target: PqTarget) -> str:
    if "does not support SSL" in text:
        return "pq: SSL is not enabled on the server"
    if "Connection refused" in text:
        return f"dial tcp {target.host}:{target.port}: connect: connection refused"
    if "timeout expired" in text:
        return f"dial tcp {target.host}:{target.port}: i/o timeout"
    for marker in ("FATAL:  ", "ERROR:  "):
        if marker in text:
            return "pq: " + text.split(marker, 1)[1].strip().splitlines()[0]
    return "pq: " + text.strip().splitlines()[-1]


def log_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def banner(image: str) -> list[str]:
    version = image.rpartition(":")[2] or "v2"
    return [f"Coder {version}+a3b2f1c - Your Self-Hosted Remote Development Platform"]


def retry_line(error: str, attempt: int) -> str:
    return f"{log_time()} [warn]  ping postgres: retrying  error={json.dumps(error)}  try={attempt}"


def failed_lines(error: str, attempts: int) -> list[str]:
    wrapped = f"unable to connect after {attempts} tries; last error: {error}"
    return [f"{log_time()} [erro]  connect to postgres failed  error={json.dumps(wrapped)}",
            'Encountered an error running "coder server", see "coder server --help" for more information',
            f"error: connect to postgres: {wrapped}"]


def started_lines() -> list[str]:
    return ["Started HTTP listener at http://0.0.0.0:8080",
            "Started Prometheus metrics endpoint at http://0.0.0.0:2112",
            f"{log_time()} [info]  coderd: database migrations complete  version=308",
            f"{log_time()} [info]  coderd.derp: started embedded DERP relay  region_id=999 region_code=coder"]
