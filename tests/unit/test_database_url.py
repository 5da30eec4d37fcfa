"""Database URLs: read exactly as libpq reads them, refused where libpq or Coder's Go driver would misread
them, and rebuilt with a new password that changes nothing else."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from coderctl.clients.postgres import DatabaseURL
from coderctl.errors import UsageError

# Any password PostgreSQL allows: every character but NUL.
passwords = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)

# (URL with the old password, the same URL with {pw} where the new, encoded password must be)
TEMPLATES = [
    ("postgresql://coder:old%2Fpw@coder-coder-postgresql:5432/coder?sslmode=disable&application_name=a%20b"
     "&connect_timeout=10",
     "postgresql://coder:{pw}@coder-coder-postgresql:5432/coder?sslmode=disable&application_name=a%20b"
     "&connect_timeout=10"),
    ("postgres://u%40x:old@[::1]:5433/d%2Fb?target_session_attrs=any&sslmode=prefer",
     "postgres://u%40x:{pw}@[::1]:5433/d%2Fb?target_session_attrs=any&sslmode=prefer"),
    ("postgresql://coder:x@host/coder", "postgresql://coder:{pw}@host/coder"),
    ("postgresql://coder:@host", "postgresql://coder:{pw}@host"),
    ("postgresql://coder@host/db?sslmode=require", "postgresql://coder:{pw}@host/db?sslmode=require"),
    ("postgresql://host/db?user=coder&password=old&sslmode=disable",
     "postgresql://host/db?user=coder&password={pw}&sslmode=disable"),
    ("postgresql://host:5432", "postgresql://:{pw}@host:5432"),
]


@settings(max_examples=200, deadline=None)
@given(password=passwords, case=st.sampled_from(TEMPLATES))
def test_with_password_changes_only_the_password(password: str, case: tuple[str, str]) -> None:
    original, template = case
    rebuilt = DatabaseURL.parse(original).with_password(password)
    assert rebuilt == template.format(pw=quote(password, safe=""))
    expected = conninfo_to_dict(original)
    expected["password"] = password
    assert conninfo_to_dict(rebuilt) == expected
    before, after = DatabaseURL.parse(original), DatabaseURL.parse(rebuilt)
    assert after.password == password
    params = {k: (password if k == "password" else v) for k, v in before.params.items()}
    assert (after.user, after.host, after.port, after.database, after.params) == (
        before.user, before.host, before.port, before.database, params)


@settings(max_examples=200, deadline=None)
@given(password=passwords)
def test_an_encoded_password_reads_back_exactly_as_libpq_reads_it(password: str) -> None:
    raw = f"postgresql://coder:{quote(password, safe='')}@db.example:5432/coder?sslmode=disable"
    url = DatabaseURL.parse(raw)
    libpq = conninfo_to_dict(raw)
    assert url.password == libpq["password"] == password
    assert (url.user, url.host, str(url.port), url.database) == (libpq["user"], libpq["host"], libpq["port"],
                                                                 libpq["dbname"])


# Pieces of a password written into a URL unencoded: distinctive tokens (so that any of them in a message
# is a leak) between characters that URLs treat specially.
TOKEN = st.text("GHJKMNPQRSTVWXYZ", min_size=8, max_size=8)
SPECIAL = st.sampled_from(list("/?#@:+=&%;[]{}<>|^`\"' \\é") + ["%2", "%zz", "%00", "%41", ","])
raw_passwords = st.lists(st.one_of(TOKEN, SPECIAL), min_size=1, max_size=6).map("".join)


@settings(max_examples=400, deadline=None)
@given(password=raw_passwords, port=st.sampled_from(["", ":5432"]), query=st.sampled_from(["", "?sslmode=disable"]))
def test_an_unencoded_password_is_read_as_libpq_reads_it_or_refused_without_showing_it(
        password: str, port: str, query: str) -> None:
    raw = f"postgresql://coder:{password}@db.example{port}/coder{query}"
    try:
        url = DatabaseURL.parse(raw)
    except UsageError as exc:
        message = str(exc)
        for token in _tokens(password):
            assert token not in message
        return
    libpq = conninfo_to_dict(raw)
    assert url.password == libpq.get("password", "")
    assert (url.user, url.host, str(url.port), url.database) == (
        libpq.get("user", ""), libpq.get("host", ""), libpq.get("port", "5432"), libpq["dbname"])
    # What libpq reads must also be what Coder's driver reads: no character with another meaning in Go.
    assert not set(password) & set("/?#@ \"<>[]{}|^`\\é")


def _tokens(password: str) -> list[str]:
    out, run = [], ""
    for ch in password + "\0":
        if ch in "GHJKMNPQRSTVWXYZ":
            run += ch
        else:
            if len(run) >= 4:
                out.append(run)
            run = ""
    return out


@pytest.mark.parametrize(("raw", "fragments"), [
    ("postgresql://coder:4821/qwertyZX@host:5432/coder", ["4821", "qwertyZX"]),
    ("postgresql://coder:4821/qwertyZX@host:5432/coder?sslmode=disable", ["4821", "qwertyZX"]),
    ("postgresql://coder:p@QZXW/wordQW@db/coder", ["QZXW", "wordQW"]),
    ("postgresql://coder:JKMN@QZXW@db:5432/coder", ["JKMN", "QZXW"]),
    ("postgresql://coder:JKMN?QZXW@db/coder", ["JKMN", "QZXW"]),
    ("postgresql://coder:JKMN#QZXW@db/coder", ["JKMN", "QZXW"]),
    ("postgresql://coder:JKMN QZXW@db/coder", ["JKMN", "QZXW"]),
    ("postgresql://coder:JKMN:5432/coder", ["JKMN"]),
])
def test_urls_libpq_or_go_would_misread_are_refused_with_the_encoding_fix(raw: str, fragments: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        DatabaseURL.parse(raw)
    message = str(caught.value)
    assert "percent-encode" in message and "quote(password, safe='')" in message
    for fragment in fragments:
        assert fragment not in message


def test_the_libpq_reading_of_the_port_example_is_what_is_refused() -> None:
    """libpq itself reads host `coder`, port 4821: the silent misreading coderctl must not repeat."""
    raw = "postgresql://coder:4821/qwertyZX@host:5432/coder"
    assert conninfo_to_dict(raw)["port"] == "4821"
    with pytest.raises(UsageError, match="unencoded '/' or '@' in the user name or password"):
        DatabaseURL.parse(raw)


def test_query_parameters_as_libpq_reads_them() -> None:
    url = DatabaseURL.parse("postgresql://coder:pw@h/db?application_name=a%2Bb&ssl=true&dbname=other")
    assert url.params == {"application_name": "a+b", "sslmode": "require", "dbname": "other"}
    assert url.database == "other"
    assert "pw" not in repr(url)
    assert "secret" not in repr(DatabaseURL.parse("postgresql://h/db?password=secret"))
