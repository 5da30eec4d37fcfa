"""SCRAM-SHA-256 password verifiers as PostgreSQL stores them (RFC 5802, RFC 7677).

`ALTER ROLE name PASSWORD 'SCRAM-SHA-256$...'` with a verifier built here sets the password without the
plaintext ever reaching the server, so it cannot show up in its statement log or `pg_stat_statements`.

The password is prepared the way PostgreSQL's `pg_saslprep` (src/common/saslprep.c) does it, on the
client (libpq) and on the server alike: pure ASCII is used as is; otherwise
SASLprep (RFC 4013: map non-ASCII spaces to a space, drop the "mapped to nothing" characters, NFKC, refuse
prohibited and unassigned code points, check bidi). When the password is not valid UTF-8 or SASLprep
refuses it, the raw bytes are used. Any other preparation would produce a verifier that the role's real
password does not match.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata

DEFAULT_ITERATIONS = 4096
SALT_BYTES = 16
PREFIX = "SCRAM-SHA-256"

_PROHIBITED = (
    stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3, stringprep.in_table_c4,
    stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
    stringprep.in_table_c9, stringprep.in_table_a1,
)


def saslprep(password: str | bytes) -> bytes:
    """The bytes PostgreSQL hashes for `password` (see the module docstring)."""
    raw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    if raw.isascii():
        return raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    prepared = _stringprep(text)
    return raw if prepared is None else prepared.encode("utf-8")


def _stringprep(text: str) -> str | None:
    """SASLprep as pg_saslprep does it, which checks prohibited, unassigned and bidi characters in the
    mapped string, before normalisation, and returns the normalised one."""
    mapped = "".join(" " if stringprep.in_table_c12(ch) else "" if stringprep.in_table_b1(ch) else ch
                     for ch in text)  # U+200B is in both tables: a space, as in PostgreSQL
    if not mapped:
        return None
    if any(check(ch) for ch in mapped for check in _PROHIBITED):
        return None
    if any(stringprep.in_table_d1(ch) for ch in mapped):
        if any(stringprep.in_table_d2(ch) for ch in mapped):
            return None
        if not (stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1])):
            return None
    return unicodedata.normalize("NFKC", mapped)


def verifier(password: str | bytes, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS) -> str:
    """`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` for `password` (a fresh random salt
    unless one is given)."""
    raw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    if not raw:
        raise ValueError("an empty password cannot be set")
    if b"\x00" in raw:
        raise ValueError("PostgreSQL passwords cannot contain NUL")
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(raw), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return f"{PREFIX}${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def parse(value: str) -> tuple[int, bytes, bytes, bytes]:
    """Iterations, salt, StoredKey and ServerKey of a stored verifier; ValueError when it is not one."""
    try:
        prefix, params, keys = value.split("$")
        count, salt = params.split(":")
        stored, server = keys.split(":")
        if prefix != PREFIX or not count.isdigit():
            raise ValueError
        return (int(count), base64.b64decode(salt, validate=True), base64.b64decode(stored, validate=True),
                base64.b64decode(server, validate=True))
    except ValueError:
        raise ValueError("not a SCRAM-SHA-256 verifier") from None


def matches(value: str, password: str | bytes) -> bool:
    """Does the stored verifier `value` belong to `password`?"""
    iterations, salt, _, _ = parse(value)
    return hmac.compare_digest(verifier(password, salt=salt, iterations=iterations), value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
