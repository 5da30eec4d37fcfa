"""Properties of redaction: whatever a secret looks like, none of its forms survives.

A registered value may itself contain `*`, so an occurrence that straddles an inserted mask (`a` + `***`
for the value `a*`) reveals nothing: the checks below read the output with every mask replaced by a
character the value does not hold.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from coderctl.redact import MASK, Redactor, mask_url

SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

secrets = st.text(min_size=1, max_size=40)
line_secrets = st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=["Cs"]),
                       min_size=1, max_size=40)
ODD = ["p ss word", "p@ss/w@rd", "100%", "%41", "a", "ab", "abc", "/", "@", ":", " ", "=", "&", "'\"",
       "\\", "\n", "x\n", "é✓", "*", "**", "a*", "\x00", "***x", "--", "Ab1!" * 25_000]


def _b64_forms(value: str) -> list[str]:
    raw = value.encode("utf-8", "surrogatepass")
    std, url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    return [std, std.rstrip("="), url, url.rstrip("=")]


def _forms(value: str) -> list[str]:
    return [value, *_b64_forms(value), quote(value, safe=""), quote(value), quote_plus(value),
            json.dumps(value)[1:-1]]


def _leaks(out: str, value: str) -> list[str]:
    sentinel = next(c for c in map(chr, range(0xE000, 0xF900)) if c not in value)
    visible = out.replace(MASK, sentinel)
    return [form for form in _forms(value) if form in visible]


def _embeddings(value: str) -> list[str]:
    b64 = _b64_forms(value)
    return [
        f"plain {value} end",
        value,
        f"postgres://coder:{value}@db:5432/coder?sslmode=disable",
        f"postgres://coder:{quote(value, safe='')}@db:5432/coder",
        f"secret data {b64[0]} and {b64[3]}.",
        f"q={quote(value)}&p={quote_plus(value)}&s={quote(value, safe='')}",
        json.dumps([{"name": "POSTGRES_PASSWORD", "value": value}]),
        f"env:\n- name: POSTGRES_PASSWORD\n  value: {value}\n",
        f"auth:\n  password: {value}\n  user: coder\n",
        json.dumps({"password": value, "message": f"login as {value} failed"}),
        json.dumps({"password": value}, ensure_ascii=False),
        repr({"token": value}),
    ]


@SETTINGS
@given(value=secrets)
@example(value="p ss word")
def test_registered_value_never_survives(value: str) -> None:
    r = Redactor()
    r.add(value)
    for text in _embeddings(value):
        assert _leaks(r(text), value) == [], text


def test_registered_odd_values_never_survive() -> None:
    for value in ODD:
        r = Redactor()
        r.add(value)
        for text in _embeddings(value):
            assert _leaks(r(text), value) == [], (value[:20], text[:80])


@SETTINGS
@given(value=secrets)
def test_registered_value_in_deep_data(value: str) -> None:
    r = Redactor()
    r.add(value)
    out = r.deep({"detail": f"x {value} y", "list": [value, {"k": quote(value, safe="")}]})
    assert isinstance(out, dict)
    for text in (out["detail"], out["list"][0], out["list"][1]["k"]):
        assert _leaks(text, value) == []


@SETTINGS
@given(value=secrets.filter(lambda v: v.strip() != ""))
@example(value="p@ss/w@rd")
@example(value="4821/qwertyZX")
@example(value="a\nb@c")
def test_mask_url_hides_any_unregistered_password(value: str) -> None:
    assert mask_url(f"postgres://coder:{value}@db:5432/coder?sslmode=disable") == (
        f"postgres://coder:{MASK}@db:5432/coder?sslmode=disable")


def _no_placeholder(value: str) -> bool:
    stripped = value.strip().strip("\"'")
    return stripped != "" and not stripped.startswith(("$", "<"))


@SETTINGS
@given(value=line_secrets.filter(_no_placeholder))
@example(value="p ss word")
@example(value="p@ss/w@rd")
@example(value="[")
@example(value="{")
@example(value='"0"')
def test_structure_hides_unregistered_values(value: str) -> None:
    r = Redactor()
    assert r(f"dsn postgres://coder:{value}@db/coder") == f"dsn postgres://coder:{MASK}@db/coder"
    assert r(json.dumps({"password": value})) == json.dumps({"password": MASK})
    assert r(json.dumps([{"name": "DB_PASSWORD", "value": value}])) == json.dumps(
        [{"name": "DB_PASSWORD", "value": MASK}])
    # a quoted value keeps its quotes (YAML and shell syntax): `"0"` is the string 0, masked as `"***"`
    quoted = len(value) > 2 and value[0] in "\"'" and value[-1] == value[0]
    masked = value[0] + MASK + value[0] if quoted else MASK
    stripped = value.strip(" \t")
    if stripped == value:
        assert r(f"- name: DB_PASSWORD\n  value: {value}\n") == f"- name: DB_PASSWORD\n  value: {masked}\n"
        assert r(f"db:\n  password: {value}\n") == f"db:\n  password: {masked}\n"
    if not any(c.isspace() or c == "&" for c in value):
        assert r(f"PGPASSWORD={value} psql") == f"PGPASSWORD={masked} psql"
        assert r(f"postgres://u@h/d?password={value}&x=1") == f"postgres://u@h/d?password={masked}&x=1"
