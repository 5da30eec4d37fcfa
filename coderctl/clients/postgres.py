"""PostgreSQL connections with psycopg, and parsing of libpq-style database URLs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from coderctl.errors import UsageError

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed `postgres://` URL. `repr` never shows the password."""

    user: str
    password: str
    host: str
    port: int
    database: str
    params: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise UsageError("database URL: scheme must be postgres:// or postgresql://")
        try:
            port = parts.port or 5432
        except ValueError:
            raise UsageError(
                "database URL: invalid port after the host (a `?`, `#` or `/` in the password must be "
                "percent-encoded)"
            ) from None
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=parts.hostname or "",
            port=port,
            database=unquote(parts.path.lstrip("/")) or unquote(parts.username or ""),
            params=params,
        )

    def __repr__(self) -> str:
        return f"DatabaseURL({self.user}@{self.host}:{self.port}/{self.database} {self.params})"

    __str__ = __repr__


def connect(url: DatabaseURL, *, timeout: float, host: str | None = None, port: int | None = None,
            ) -> psycopg.Connection[tuple[object, ...]]:
    """Connect with the URL's credentials; `host`/`port` override where to connect (e.g. a port-forward)."""
    import psycopg

    kwargs: dict[str, object] = {
        "host": host or url.host, "port": port or url.port, "user": url.user,
        "dbname": url.database, "connect_timeout": max(1, int(timeout + 0.5)),
        "application_name": "coderctl",
    }
    if url.password:  # else libpq takes PGPASSWORD or ~/.pgpass
        kwargs["password"] = url.password
    if "sslmode" in url.params:
        kwargs["sslmode"] = url.params["sslmode"]
    return psycopg.connect(**kwargs)  # type: ignore[arg-type]


def parse_address(address: str) -> tuple[str, int]:
    """`--db-address HOST:PORT` (`[::1]:5432` for IPv6)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"--db-address {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def split_address(address: str | None, url: DatabaseURL) -> tuple[str, int]:
    """`--db-address HOST:PORT` (e.g. a kubectl port-forward), else the URL's host and port."""
    return parse_address(address) if address else (url.host, url.port)
