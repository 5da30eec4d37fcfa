from __future__ import annotations

from coderctl.redact import MASK, Redactor, mask_url


def test_known_values_and_their_url_encoding_are_masked() -> None:
    r = Redactor()
    r.add("p/a?ss#w@rd+=")
    text = "password p/a?ss#w@rd+= and encoded p%2Fa%3Fss%23w%40rd%2B%3D"
    out = r(text)
    assert "p/a?ss#w@rd+=" not in out and "p%2Fa%3Fss%23w%40rd%2B%3D" not in out


def test_patterns_catch_unknown_credentials() -> None:
    r = Redactor()
    assert r("postgresql://coder:hunter2@db:5432/coder") == f"postgresql://coder:{MASK}@db:5432/coder"
    assert "abcdefghijkl" not in r("Authorization: Bearer abcdefghijkl")
    assert "st.abc.def.ghi" not in r("token st.abc.def.ghi expired")
    assert "s3cr3t" not in r('PGPASSWORD=s3cr3t psql')


def test_deep_and_mask_url() -> None:
    r = Redactor()
    r.add("topsecret")
    assert r.deep({"a": ["x topsecret", {"b": "topsecret"}], "n": 1}) == {"a": [f"x {MASK}", {"b": MASK}], "n": 1}
    assert mask_url("postgres://u:p@h/d") == f"postgres://u:{MASK}@h/d"
    assert mask_url(None) is None


def test_short_values_are_not_registered() -> None:
    r = Redactor()
    r.add("ab", "", None)
    assert r("abc") == "abc"
