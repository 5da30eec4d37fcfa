"""PostgreSQL connections with psycopg, and database URLs read exactly as libpq reads them.

`DatabaseURL.parse` follows libpq's `conninfo_uri_parse_options` (src/interfaces/libpq/fe-connect.c):
the user name and password end at the first `@` when it comes before any `/`; the host ends at `:`, `/`,
`?` or `,`; the port at `/`, `?` or `,`; the database name at `?`; `%XX` is decoded everywhere and `%00`
refused; `+` stays a plus; `#` is an ordinary character. Coder reads the same string with Go's `net/url`
(lib/pq), which cuts a fragment at `#` and a query at `?` first, ends the user information at the *last*
`@` before the first `/`, accepts only a few characters there and turns `+` into a space in a query. A
URL that the two would read differently, or that libpq would misread (a `/` in a password makes the rest
of the password a port, a database name or a host), is refused with the fix: percent-encode it.
Messages name the character, never a value: any component of such a URL may be a piece of the password.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

from coderctl.errors import UsageError

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql://", "postgres://")
ENCODE_FIX = ("the user name and password must be percent-encoded in the URL: urllib.parse.quote(password, "
              "safe='') (coder/coder#16319)")
_HEX = frozenset(string.hexdigits)
# Go's net/url accepts only these in the user information (validUserinfo), besides letters and digits.
_GO_USERINFO = frozenset("-._:~!$&'()*+,;=%@")


def _refuse(reason: str) -> UsageError:
    return UsageError(f"database URL: {reason}; {ENCODE_FIX}")


def _decode(raw: str, what: str) -> str:
    """libpq's conninfo_uri_decode: `%XX` to a byte, nothing else (`+` stays), then UTF-8."""
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch != "%":
            out += ch.encode("utf-8")
            i += 1
            continue
        pair = raw[i + 1:i + 3]
        if len(pair) != 2 or not set(pair) <= _HEX:
            raise _refuse(f"the {what} holds a '%' that does not start a %XX escape (write '%' as %25)")
        if pair == "00":
            raise UsageError(f"database URL: the {what} holds %00, which libpq refuses")
        out.append(int(pair, 16))
        i += 3
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"database URL: the {what} is not UTF-8 once decoded") from None


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed `postgres://` URL. `repr` never shows the password; `raw` keeps the string as given."""

    user: str
    password: str
    host: str
    port: int
    database: str
    params: dict[str, str]
    raw: str = field(default="", repr=False, compare=False)
    # Where the password sits in `raw`: after the user name and its ':' (None without a ':'), and in
    # `password=` query values; where a password would go.
    _has_userinfo: bool = field(default=False, repr=False, compare=False)
    _user_end: int = field(default=-1, repr=False, compare=False)
    _password_span: tuple[int, int] | None = field(default=None, repr=False, compare=False)
    _query_password_spans: tuple[tuple[int, int], ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        scheme = next((s for s in SCHEMES if url.startswith(s)), None)
        if scheme is None:
            raise UsageError("database URL: scheme must be postgres:// or postgresql://")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
            raise UsageError("database URL: holds a control character (a line break or tab?); "
                             "remove it, or percent-encode it if it belongs to the password")
        start = len(scheme)
        end_of_userinfo = _first_of(url, "@/", start)
        user_raw, password_raw = "", None
        user_end = -1
        password_span: tuple[int, int] | None = None
        pos = start
        if end_of_userinfo < len(url) and url[end_of_userinfo] == "@":
            userinfo = url[start:end_of_userinfo]
            _check_userinfo(userinfo, url, end_of_userinfo)
            colon = userinfo.find(":")
            user_raw = userinfo if colon < 0 else userinfo[:colon]
            user_end = start + len(user_raw)
            if colon >= 0:
                password_raw = userinfo[colon + 1:]
                password_span = (user_end + 1, end_of_userinfo)
            pos = end_of_userinfo + 1
        host, pos = _host(url, pos)
        terminator = url[pos:pos + 1]
        port_raw = ""
        if terminator == ":":
            port_raw, pos, terminator = _component(url, pos, "/?,")
        if terminator == ",":
            raise UsageError("database URL: names several hosts; Coder's driver (lib/pq) connects to one")
        database_raw = ""
        if terminator == "/":
            database_raw, pos, terminator = _component(url, pos, "?")
        if "@" in url[end_of_userinfo + 1 if user_end >= 0 else start:]:
            raise _refuse("an '@' comes after the user name and password as libpq delimits them: an unencoded "
                          "'/' or '@' in the user name or password ends them early, and libpq would read the rest "
                          "as the host, port or database name (an '@' in a database name is written %40)")
        if "#" in url:
            raise _refuse("it holds a '#', which Coder's driver (Go net/url) reads as the start of a fragment")
        if port_raw and not port_raw.isdigit():
            raise _refuse("the port is not a number (an unencoded ':' or '/' in the password?)")
        params, query_spans = _params(url, pos + 1) if terminator == "?" else ({}, ())
        port = int(port_raw) if port_raw else 5432
        if not 0 < port < 65536:
            raise UsageError("database URL: the port must be between 1 and 65535")
        user = _decode(user_raw, "user name")
        password = _decode(password_raw or "", "password")
        database = _decode(database_raw, "database name")
        user = params.get("user", user)
        return cls(
            user=user, password=params.get("password", password), host=_decode(host, "host"), port=port,
            database=params.get("dbname", database) or user, params=params, raw=url,
            _has_userinfo=user_end >= 0, _user_end=user_end if user_end >= 0 else start, _password_span=password_span,
            _query_password_spans=query_spans,
        )

    def with_password(self, password: str) -> str:
        """The URL string with only the password changed (percent-encoded); every other byte as it was."""
        if not self.raw:
            raise ValueError("this DatabaseURL was not parsed from a string")
        if "\x00" in password:
            raise ValueError("PostgreSQL passwords cannot contain NUL")
        encoded = quote(password, safe="")
        edits = [(a, b, encoded) for a, b in self._query_password_spans]
        span = self._password_span
        if span is not None and (span[0] < span[1] or not edits):
            edits.append((*span, encoded))
        elif not edits and self._has_userinfo:
            edits.append((self._user_end, self._user_end, f":{encoded}"))
        elif not edits:
            edits.append((self._user_end, self._user_end, f":{encoded}@"))
        out = self.raw
        for a, b, text in sorted(edits, reverse=True):
            out = out[:a] + text + out[b:]
        return out

    def __repr__(self) -> str:
        return f"DatabaseURL({self.user}@{self.host}:{self.port}/{self.database} {self.public_params()})"

    __str__ = __repr__

    def public_params(self) -> dict[str, str]:
        return {k: ("***" if k == "password" else v) for k, v in self.params.items()}


def _first_of(text: str, chars: str, start: int) -> int:
    """Index of the first of `chars` at or after `start`, else len(text)."""
    return next((i for i in range(start, len(text)) if text[i] in chars), len(text))


def _component(url: str, delimiter: int, stops: str) -> tuple[str, int, str]:
    """The text after the delimiter at `delimiter` up to the first of `stops`: (text, where it ends, the
    character that ends it, "" at the end of the URL)."""
    end = _first_of(url, stops, delimiter + 1)
    return url[delimiter + 1:end], end, url[end:end + 1]


def _check_userinfo(userinfo: str, url: str, at: int) -> None:
    """Refuse user information that Coder's driver (Go net/url) would read differently from libpq."""
    if "?" in userinfo:
        raise _refuse("the user name or password holds a '?', where Coder's driver (Go net/url) would start "
                      "the query")
    go_authority_end = _first_of(url, "/?#", at)
    if "@" in url[at + 1:go_authority_end]:
        raise _refuse("the user name or password holds an '@': libpq ends them at the first '@', Coder's "
                      "driver (Go net/url) at the last")
    if "#" in userinfo:
        raise _refuse("the user name or password holds a '#', where Coder's driver (Go net/url) would start "
                      "a fragment")
    if any(not (ch.isascii() and ch.isalnum()) and ch not in _GO_USERINFO for ch in userinfo):
        raise _refuse("the user name or password holds a character that Coder's driver (Go net/url) refuses "
                      "unencoded (a space, a quote, one of <>[]{}|\\^` or a non-ASCII letter)")


def _host(url: str, pos: int) -> tuple[str, int]:
    """The host (brackets of an IPv6 address removed) and the index of what ends it."""
    if pos < len(url) and url[pos] == "[":
        close = url.find("]", pos + 1)
        if close < 0:
            raise UsageError("database URL: no ']' closes the IPv6 address")
        if close == pos + 1:
            raise UsageError("database URL: empty IPv6 address")
        after = close + 1
        if after < len(url) and url[after] not in ":/?,":
            raise UsageError("database URL: unexpected character after the IPv6 address (expected ':' or '/')")
        return url[pos + 1:close], after
    end = _first_of(url, ":/?,", pos)
    return url[pos:end], end


def _params(url: str, start: int) -> tuple[dict[str, str], tuple[tuple[int, int], ...]]:
    """libpq's conninfo_uri_parse_params, and where each `password=` value sits in the URL."""
    params: dict[str, str] = {}
    password_spans: list[tuple[int, int]] = []
    pos = start
    while pos < len(url):
        end = _first_of(url, "&", pos)
        piece = url[pos:end]
        key_raw, sep, value_raw = piece.partition("=")
        key = _decode(key_raw, "query")
        if not sep:
            raise UsageError("database URL: a query parameter has no '=' (an unencoded '&' in a value?)")
        if "=" in value_raw:
            raise _refuse("a query parameter's value holds an unencoded '=', which libpq refuses")
        if "+" in value_raw or ";" in value_raw:
            raise _refuse("a query parameter's value holds an unencoded '+' or ';', which Coder's driver "
                          "(Go net/url) reads differently from libpq")
        value = _decode(value_raw, "query")
        if key == "ssl" and value == "true":
            key, value = "sslmode", "require"
        if key == "password":
            password_spans.append((pos + len(key_raw) + 1, end))
        params[key] = value
        pos = end + 1
    return params, tuple(password_spans)


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
