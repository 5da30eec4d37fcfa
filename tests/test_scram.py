"""SCRAM-SHA-256 verifiers: the same as libpq computes, accepted by a real PostgreSQL for passwords of any
characters, and never carrying the plaintext into the server's statement log."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from coderctl.clients import scram
from lab.postgres import LabPostgres

# Every character PostgreSQL allows in a password (not NUL), surrogates aside (not encodable), and the
# kinds SASLprep treats specially: non-ASCII spaces, "mapped to nothing", compatibility forms, bidi, unassigned.
SPECIAL = "\u00a0\u2003\u00ad\u200b\ufeff\ufb01\u2168\u05d0\u0627\u0041\u0301\U0001f600\U000e0001\u0378"
passwords = st.text(
    st.one_of(st.characters(codec="utf-8", exclude_characters="\x00"), st.sampled_from(SPECIAL)),
    min_size=1, max_size=24,
)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_saslprep_follows_postgresql() -> None:
    assert scram.saslprep("pencil") == b"pencil"
    assert scram.saslprep("\x07ascii control") == b"\x07ascii control"  # pure ASCII: as is
    assert scram.saslprep("a\u00a0b") == b"a b"  # non-ASCII space -> space
    assert scram.saslprep("a\u00adb") == b"ab"  # mapped to nothing
    assert scram.saslprep("\u2168") == b"IX"  # NFKC
    assert scram.saslprep("\u00ad") == "\u00ad".encode()  # empty after mapping: raw
    assert scram.saslprep("a\u0627") == "a\u0627".encode()  # bidi violation: raw
    assert scram.saslprep("\u0378x") == "\u0378x".encode()  # unassigned: raw
    assert scram.saslprep(b"\xff\xfe") == b"\xff\xfe"  # not UTF-8: raw
    # pg_saslprep checks the mapped string before NFKC, not (as RFC 3454 says) the normalised one
    assert scram.saslprep("x\u2135") == "x\u05d0".encode()


def test_verifier_shape_and_parse() -> None:
    value = scram.verifier("pencil")
    iterations, salt, stored, server = scram.parse(value)
    assert value.startswith("SCRAM-SHA-256$4096:")
    assert (iterations, len(salt), len(stored), len(server)) == (4096, 16, 32, 32)
    assert scram.matches(value, "pencil") and not scram.matches(value, "pencil ")
    assert scram.verifier("pencil") != value  # a fresh salt each time
    with pytest.raises(ValueError):
        scram.verifier("")
    with pytest.raises(ValueError):
        scram.verifier("a\x00b")


@pytest.fixture(scope="module")
def admin(lab_postgres: LabPostgres) -> Iterator[psycopg.Connection]:
    with lab_postgres.connect("postgres", "postgres", autocommit=True) as conn:
        yield conn


@SETTINGS
@given(password=passwords)
def test_the_verifier_equals_libpqs(admin: psycopg.Connection, password: str) -> None:
    assert_same_as_libpq(admin, password)


def assert_same_as_libpq(admin: psycopg.Connection, password: str) -> None:
    """libpq's PQencryptPasswordConn (client side: the server never sees the password) gives a verifier with
    its own salt; with that salt ours must be identical, byte for byte."""
    theirs = admin.pgconn.encrypt_password(password.encode(), b"probe", b"scram-sha-256").decode()
    iterations, salt, _, _ = scram.parse(theirs)
    assert scram.verifier(password, salt=salt, iterations=iterations) == theirs


# Strings where a preparation that differs from pg_saslprep's gives another verifier.
TRICKY = ["x\u2135", "\u05d0\u2122\u05d0", "\u2168", "a\u00a0b", "\u00ad", "\u00adx", "a\u0627", "\u0627a\u0627",
          "\u0627\u0661\u0627", "\u0378x", "\u00e9" * 600, "\U000e0001x", "\ufb01", "\u200bx", "\x7f\x01 ascii",
          "A\u0301", "\u3000\u3000"]


@pytest.mark.parametrize("password", TRICKY)
def test_the_verifier_equals_libpqs_on_tricky_strings(admin: psycopg.Connection, password: str) -> None:
    assert_same_as_libpq(admin, password)


@contextlib.contextmanager
def scratch_role(admin: psycopg.Connection) -> Iterator[str]:
    name = f"scram_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def set_verifier(admin: psycopg.Connection, role: str, password: str) -> str:
    value = scram.verifier(password)
    admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(value)))
    return value


def logs_in(pg: LabPostgres, role: str, password: str) -> bool:
    try:
        with psycopg.connect(host=pg.host, port=pg.port, user=role, password=password, dbname="postgres",
                             connect_timeout=5) as conn:
            return conn.execute("select current_user").fetchone() == (role,)
    except psycopg.OperationalError as exc:
        if "password authentication failed" in str(exc):
            return False
        raise


@SETTINGS
@given(password=passwords)
def test_postgresql_accepts_the_verifier(lab_postgres: LabPostgres, admin: psycopg.Connection,
                                         password: str) -> None:
    with scratch_role(admin) as role:
        value = set_verifier(admin, role, password)
        row = admin.execute("select rolpassword from pg_authid where rolname = %s", (role,)).fetchone()
        assert row == (value,)  # stored as given: PostgreSQL recognised it as a verifier
        assert logs_in(lab_postgres, role, password)
        assert not logs_in(lab_postgres, role, password + "x")


@contextlib.contextmanager
def statement_log(admin: psycopg.Connection, pg: LabPostgres) -> Iterator[list[str]]:
    """log_statement=all for every session while the block runs; yields, once it ends, what was logged."""
    start = pg.logfile.stat().st_size
    admin.execute("ALTER SYSTEM SET log_statement = 'all'")
    admin.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)
    logged: list[str] = []
    try:
        yield logged
    finally:
        admin.execute("ALTER SYSTEM RESET log_statement")
        admin.execute("SELECT pg_reload_conf()")
        time.sleep(0.1)
        with open(pg.logfile, "rb") as fh:
            fh.seek(start)
            logged.append(fh.read().decode("utf-8", "replace"))


@settings(max_examples=10, deadline=None)
@given(tail=passwords)
def test_the_statement_log_never_holds_the_plaintext(lab_postgres: LabPostgres, admin: psycopg.Connection,
                                                       tail: str) -> None:
    password = f"Pw{secrets.token_hex(6)}{tail}"  # distinctive: found only if it leaked
    with scratch_role(admin) as role, statement_log(admin, lab_postgres) as logged:
        value = set_verifier(admin, role, password)
        assert logs_in(lab_postgres, role, password)
    log = logged[0]
    assert value in log  # the statement was logged, with the verifier
    assert password not in log and password.encode("unicode_escape").decode() not in log
