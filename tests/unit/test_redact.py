from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest

from coderctl.context import App
from coderctl.profile import load_settings
from coderctl.redact import MASK, Redactor, log_filter, mask_url, scrub


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


@pytest.mark.parametrize("secret", ["a", "ab", "xyz", "7"])
def test_short_values_are_registered(secret: str) -> None:
    r = Redactor()
    r.add(secret, "", None)
    out = r(f"value={secret} and {secret}!")
    assert secret not in out.replace(MASK, "\0")


def test_known_value_base64_and_percent_forms() -> None:
    secret = "p ss/w@rd%1"
    r = Redactor()
    r.add(secret)
    raw = secret.encode()
    forms = [base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("="),
             quote(secret, safe=""), quote(secret), quote_plus(secret), quote(secret, safe="").lower()]
    for form in forms:
        assert form not in r(f"x {form} y"), form
    for prefix in (b"", b"a", b"ab"):
        blob = base64.b64encode(prefix + raw + b"\n").decode()
        out = r(f"data: {blob}")
        assert blob not in out and MASK in out


def test_token_with_trailing_newline_is_masked_in_reprs() -> None:
    token = "kube-token-0123456789abcdef\n"
    r = Redactor()
    r.add(token)
    out = r(f"ValueError: Invalid header value b'Bearer {token!r}'")
    assert "kube-token-0123456789abcdef" not in out
    assert "0123456789abcdef" not in Redactor()(f"Invalid header value b'Bearer {token.strip()}\\n'")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('{"name":"POSTGRES_PASSWORD","value":"hunter22"}', "hunter22"),
        ('[{"name": "CODER_OAUTH2_GITHUB_CLIENT_SECRET", "value": "gh-s3cr3t"}]', "gh-s3cr3t"),
        ('{"value":"hunter22","name":"X_TOKEN"}', "hunter22"),
        ("env:\n  - name: POSTGRES_PASSWORD\n    value: hunter 22\n  - name: A\n    value: b\n", "hunter 22"),
        ("- name: 'DB_PASSWORD'\n  value: \"hunter22\"\n", "hunter22"),
        ("password: p ss word\n", "p ss word"),
        ("  db_password: hunter22 # comment\n", "hunter22"),
        ("- api_key: hunter22\n", "hunter22"),
        ('{"password": "a\\"b c"}', 'a\\"b c'),
        ("{'password': 'hunter22'}", "hunter22"),
        ("POSTGRES_PASSWORD=hunter22 CODER_TOKEN=tok22", "hunter22"),
        ("INFISICAL_TOKEN=tok22 && x", "tok22"),
        ("PGPASSWORD='p ss' psql", "p ss"),
        ("postgres://u@h/db?sslmode=require&password=hunter22&x=1", "hunter22"),
        ("postgres://u@h/db?password=hunter22", "hunter22"),
        ("password: |\n  line one\n  line two\nnext: 1\n", "line two"),
        ("apiVersion: v1\ndata:\n  password: aHVudGVyMjI=\n  username: Y29kZXI=\nkind: Secret\n", "aHVudGVyMjI="),
        ("stringData:\n  url: postgres://x\n  pem: |\n    BEGIN\n    KEYDATA\n", "KEYDATA"),
        ('{"data":{"password":"aHVudGVyMjI=","user":"Y29kZXI="},"kind":"Secret"}', "aHVudGVyMjI="),
        ("postgres://coder:p@ss/word@db:5432/coder", "ss/word"),
        ("postgresql://coder:4821/qwertyZX@host:5432/coder", "qwertyZX"),
        ("dsn postgres://coder:p ss@db/coder failed", "p ss"),
        ("connecting to postgres://u:pw@db/x as admin@example.com", "pw"),
        ("Authorization: Bearer abcdefghijkl", "abcdefghijkl"),
        ("header b'Bearer abcdefghijkl\\n'", "abcdefghijkl"),
        ("header Bearer 'abcdefghijkl'", "abcdefghijkl"),
        ("token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
        ("kubectl said eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
        ("service token st.abc-1.def2.ghi3 expired", "ghi3"),
    ],
)
def test_structure_masks_unregistered_secrets(text: str, secret: str) -> None:
    out = Redactor()(text)
    assert secret not in out and MASK in out, out


@pytest.mark.parametrize(
    "text",
    [
        "could not load its Infisical token: the Secret is missing",
        'PGPASSWORD="$(cat "$F")" psql', "PGPASSWORD=$V", "password=<password>",
        "secretKeyRef:\n  name: coder-db\n  key: url\n",
        "- name: CODER_ACCESS_URL\n  value: https://coder.example.com\n",
        "postgres://coder@db:5432/coder?sslmode=require", "https://coder.example.com:8443/api",
        "FATAL:  password authentication failed for user \"coder\"",
    ],
)
def test_structure_leaves_what_is_not_a_secret(text: str) -> None:
    assert Redactor()(text) == text


def test_mask_url_any_password_shape() -> None:
    assert mask_url("postgres://coder:p ss@/w@db:5432/coder") == f"postgres://coder:{MASK}@db:5432/coder"
    assert mask_url("postgres://coder:a\nb@db/c") == f"postgres://coder:{MASK}@db/c"
    assert mask_url("postgres://coder@db/c?password=x%20y&sslmode=disable") == (
        f"postgres://coder@db/c?password={MASK}&sslmode=disable")
    assert mask_url("postgres://u:@h/d") == "postgres://u:@h/d"


def test_deep_masks_by_structure() -> None:
    r = Redactor()
    data = {
        "env": [{"name": "POSTGRES_PASSWORD", "value": "v1"}, {"name": "PORT", "value": "5432"}],
        "db_password": "v2",
        "secret": "coder/coder-db",
        "object": {"kind": "Secret", "data": {"url": "djM="}},
        "check": {"data": {"port": "5432"}},
    }
    assert r.deep(data) == {
        "env": [{"name": "POSTGRES_PASSWORD", "value": MASK}, {"name": "PORT", "value": "5432"}],
        "db_password": MASK,
        "secret": "coder/coder-db",
        "object": {"kind": "Secret", "data": {"url": MASK}},
        "check": {"data": {"port": "5432"}},
    }


def test_two_apps_have_independent_redactors() -> None:
    first, second = App(settings=load_settings(environ={})), App(settings=load_settings(environ={}))
    assert first.redact is not second.redact
    first.redact.add("only-in-the-first")
    assert first.redact("x only-in-the-first") == f"x {MASK}"
    assert second.redact("x only-in-the-first") == "x only-in-the-first"


def test_log_filter_redacts_message_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    r = Redactor()
    r.add("hunter22")
    logger = logging.getLogger("coderctl.test")
    handler = logging.Handler()
    handler.addFilter(log_filter(r))
    records: list[str] = []
    handler.emit = lambda record: records.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("bad password hunter22")
        except ValueError:
            logger.exception("login with %s failed", "postgres://u:hunter22@db")
    finally:
        logger.removeHandler(handler)
    assert records and "hunter22" not in records[0] and "Traceback" in records[0]


HOSTILE = [
    "@", ":", "=", "a", "a-", " x", "\n", '"', "%2F", "a://b:", "a://b:c@", "u:p@h/", "password=", 'password:"',
    "token: ", "- token: |\n", '{"name":"X_TOKEN","value":"', '"data":{"a":"b",', "data:\n", "data:\n  k: v\n",
    "- name: A_PASSWORD\n", "- value: x\n", "st.a-", "eyJ-", "Bearer ", "hunte", "aHVudGVy",
]


def _redactor() -> Redactor:
    r = Redactor()
    r.add("hunter22", "p@ss w/rd", "x", "a" * 300)
    return r


_REDACTOR = _redactor()
FUNCTIONS: dict[str, Callable[[str], object]] = {
    "Redactor": _REDACTOR,
    "Redactor.deep": lambda text: _REDACTOR.deep({"password": "x", "list": [text]}),
    "scrub": scrub,
    "mask_url": mask_url,
}


def _seconds(function: Callable[[str], object], text: str, runs: int) -> float:
    """Best CPU time of `runs` calls: CPU, not wall, time, so that a busy machine does not fail the test."""
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        function(text)
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.slow
@pytest.mark.parametrize("name", FUNCTIONS)
def test_redaction_is_linear(name: str) -> None:
    function = FUNCTIONS[name]
    for unit in HOSTILE:
        sizes = {n: (unit * (n // len(unit) + 1))[:n] for n in (10**3, 10**4, 10**5, 10**6)}
        times = {n: _seconds(function, text, runs=3 if n < 10**6 else 1) for n, text in sizes.items()}
        if times[10**6] > 2.0:
            times[10**6] = _seconds(function, sizes[10**6], runs=2)
        assert times[10**6] < 2.0, (unit, times)
        assert times[10**6] / max(times[10**5], 0.005) < 30, (unit, times)


def test_registering_a_long_value_is_fast() -> None:
    secret = "s3cr3t/" * 150_000
    r = Redactor()
    start = time.process_time()
    r.add(secret)
    out = r(f"a {secret} b " + json.dumps({"k": secret}))
    assert time.process_time() - start < 5
    assert secret not in out and "s3cr3t/s3cr3t" not in out


TOKEN = "kubetoken-0123456789abcdef\n"


def _failing_settings(exc: BaseException) -> Callable[..., object]:
    def load_settings(**_: object) -> object:
        raise exc

    return load_settings


def test_debug_traceback_is_redacted_and_keeps_the_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from clirun import run_cli

    from coderctl.errors import ConfigError

    monkeypatch.setattr("coderctl.profile.load_settings",
                        _failing_settings(ValueError(f"Invalid header value {('Bearer ' + TOKEN).encode()!r}")))
    r = run_cli("--debug", "completion", "bash")
    assert r.code == 1 and "Traceback" in r.stderr and "internal error" in r.stderr
    assert "0123456789abcdef" not in r.output

    monkeypatch.setattr("coderctl.profile.load_settings",
                        _failing_settings(ConfigError("bad url postgres://coder:p ss@db/coder")))
    for args in (["--debug"], []):
        r = run_cli(*args, "completion", "bash")
        assert r.code == 2 and "p ss" not in r.output and "coderctl: error: bad url" in r.stderr
        assert ("Traceback" in r.stderr) == bool(args)


def test_usage_errors_and_log_lines_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from clirun import run_cli

    from coderctl import profile

    r = run_cli("--timeout", "PGPASSWORD=hunter22", "verify")
    assert r.code == 2 and "hunter22" not in r.output and "--timeout" in r.output

    real = profile.load_settings

    def load_settings(**kwargs: object) -> object:
        logging.getLogger("coderctl.test").info("connecting with password=hunter22")
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("coderctl.profile.load_settings", load_settings)
    r = run_cli("-v", "completion", "bash")
    assert r.code == 0 and "connecting with password=***" in r.stderr and "hunter22" not in r.output
    assert not [h for h in logging.getLogger().handlers if h.filters], "the run's log handler outlived it"


def test_secret_settings_are_registered_with_the_run_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    from coderctl.cli import Run, cli

    monkeypatch.setenv("INFISICAL_TOKEN", "zq")
    monkeypatch.setenv("CODERCTL_CONFIG", "")
    run = Run()
    cli.main(args=["completion", "bash"], prog_name="coderctl", standalone_mode=False, obj=run)
    assert run.redactor()("token zq end") == f"token {MASK} end"


def test_a_nested_object_under_a_secret_looking_key_keeps_the_json_valid() -> None:
    import json

    text = json.dumps({"serviceToken": {"secretsScope": [{"env": "prod"}], "token": "abcdefgh1234"}}, indent=1)
    out = Redactor()(text)
    assert json.loads(out)["serviceToken"]["token"] == MASK
    assert "abcdefgh1234" not in out


@pytest.mark.parametrize("value", ["%80", "%ff%fe", "a%C3"])
def test_a_value_whose_percent_escapes_are_not_utf8_is_registered_as_it_is(value: str) -> None:
    r = Redactor()
    r.add(value)
    assert value not in r(f"x {value} y")
