"""The Infisical client layer against the fake Infisical: every way to authenticate, reads that keep the
version, writes confirmed by a read-back, approval policies, rate limits, discovery from the settings and the
InfisicalSecret, and errors without secrets."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests

from clirun import run_cli
from coderctl.clients.infisical import (
    InfisicalApprovalRequired,
    InfisicalAuth,
    InfisicalClient,
    InfisicalError,
    InfisicalNotFound,
    InfisicalRateLimited,
    InfisicalTokenRejected,
    InfisicalWriteNotConfirmed,
    InfisicalWriteUncertain,
    api_base,
    retry_after,
)
from lab.deployment import Lab
from lab.infisical import FakeInfisical, fake_infisical  # noqa: F401

ODD_VALUES = {
    "spaces": "correct horse battery staple",
    "at": "p@ss@word",
    "slash": "a/b//c/",
    "percent": "100%%20off%",
    "one-char": "§",
    "long": ("x7/+=@% " * 1250).strip() + "Z",
    "url": "postgres://coder:p@ss/w%rd@db:5432/coder?sslmode=disable",
    "newline-end": "line one\nline two\n",
}


def where(fake: FakeInfisical) -> dict[str, Any]:
    return {"project_id": fake.project_id, "environment": "prod", "path": "/"}


def ua_client(fake: FakeInfisical, **kwargs: Any) -> InfisicalClient:
    assert fake.seed is not None
    kwargs.setdefault("timeout", 3)
    return InfisicalClient(fake.url + "/api", InfisicalAuth("universal-auth", fake.seed.client_id,
                                                            fake.seed.client_secret), **kwargs)


def test_auth_from_environment() -> None:
    assert InfisicalAuth.from_env({}) is None
    ua = InfisicalAuth.from_env({"INFISICAL_UNIVERSAL_AUTH_CLIENT_ID": "id",
                                 "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET": "sec"})
    assert ua is not None and ua.kind == "universal-auth" and "sec" not in repr(ua)
    st = InfisicalAuth.from_env({"INFISICAL_TOKEN": "st.a.b.c"})
    assert st is not None and st.kind == "service-token"
    tok = InfisicalAuth.from_env({"INFISICAL_TOKEN": "eyJhbGciOi"})
    assert tok is not None and tok.kind == "token"
    assert InfisicalAuth.from_values("id", None, None) is None
    assert api_base("https://app.infisical.com/api") == "https://app.infisical.com"


def test_retry_after_forms() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(None) is None and retry_after("soon") is None
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    got = retry_after(http_date)
    assert got is not None and 3 <= got <= 6


def test_reads_carry_the_version_and_id_without_cache(fake_infisical: FakeInfisical) -> None:
    seed = fake_infisical.seed
    assert seed is not None
    client = ua_client(fake_infisical)
    first = client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    assert (first.value, first.version, first.environment, first.path) == (
        seed.values["CODER_USER_PASSWORD"], 1, "prod", "/")
    assert first.id and first.value not in repr(first)
    fake_infisical.set_secret("CODER_USER_PASSWORD", "changed-value-123")
    second = client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    assert (second.value, second.version, second.id) == ("changed-value-123", 2, first.id)
    old = client.get_secret("CODER_USER_PASSWORD", version=1, **where(fake_infisical))
    assert (old.value, old.version) == (seed.values["CODER_USER_PASSWORD"], 1)
    with pytest.raises(InfisicalNotFound):
        client.get_secret("CODER_USER_PASSWORD", version=9, **where(fake_infisical))
    assert ("GET", "/api/v4/secrets/CODER_USER_PASSWORD", 200) in fake_infisical.request_log


def test_service_token_and_its_project(fake_infisical: FakeInfisical) -> None:
    assert fake_infisical.seed is not None
    client = InfisicalClient(fake_infisical.url, InfisicalAuth.service_token(fake_infisical.seed.service_token),
                             timeout=3)
    project = client.service_token_project()
    assert project == fake_infisical.project_id
    secret = client.get_secret("CODER_DATABASE_URL", project_id=project, environment="prod", path="/")
    assert (secret.value, secret.version) == (fake_infisical.seed.values["CODER_DATABASE_URL"], 1)
    written = client.set_secret("CODER_DATABASE_URL", "postgres://x", project_id=project, environment="prod",
                                path="/")
    assert (written.value, written.version) == ("postgres://x", 2)


def test_write_then_read_back(fake_infisical: FakeInfisical) -> None:
    client = ua_client(fake_infisical)
    written = client.set_secret("CODER_USER_PASSWORD", "rotated-1", **where(fake_infisical))
    assert (written.value, written.version) == ("rotated-1", 2)
    assert fake_infisical.version("CODER_USER_PASSWORD") == 2
    assert fake_infisical.get_secret("CODER_USER_PASSWORD") == "rotated-1"
    log = [(m, p) for m, p, _ in fake_infisical.request_log]
    patch = log.index(("PATCH", "/api/v4/secrets/CODER_USER_PASSWORD"))
    assert ("GET", "/api/v4/secrets/CODER_USER_PASSWORD") in log[patch + 1:], "no read-back after the write"

    created = client.set_secret("NEW_SECRET", "fresh", **where(fake_infisical))
    assert (created.value, created.version) == ("fresh", 1)
    with pytest.raises(InfisicalNotFound):
        client.set_secret("ABSENT", "x-value", create=False, **where(fake_infisical))
    assert "ABSENT" not in fake_infisical.secret_names()


def test_every_value_read_or_written_is_registered_first(fake_infisical: FakeInfisical) -> None:
    seen: list[str] = []
    client = ua_client(fake_infisical, register=seen.append)
    read = client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    with pytest.raises(InfisicalError):
        client.set_secret("CODER_USER_PASSWORD", " refused-but-registered", **where(fake_infisical))
    assert read.value in seen and " refused-but-registered" in seen


def test_falls_back_to_the_v3_routes(fake_infisical: FakeInfisical, monkeypatch: pytest.MonkeyPatch) -> None:
    client = ua_client(fake_infisical)
    session = client.session()
    real = session.request

    def no_v4(method: str, url: str, **kwargs: Any) -> requests.Response:
        return real(method, url.replace("/api/v4/", "/api/v9/"), **kwargs)

    monkeypatch.setattr(session, "request", no_v4)
    written = client.set_secret("CODER_USER_PASSWORD", "via-v3", **where(fake_infisical))
    assert written.version == 2
    assert ("PATCH", "/api/v3/secrets/raw/CODER_USER_PASSWORD", 200) in fake_infisical.request_log


def test_read_back_that_shows_another_writer_is_not_a_confirmation(fake_infisical: FakeInfisical) -> None:
    client = ua_client(fake_infisical)

    def concurrent_writer(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        if resp.request.method == "PATCH":
            fake_infisical.set_secret("CODER_USER_PASSWORD", "someone-else")

    client.session().hooks["response"].append(concurrent_writer)
    with pytest.raises(InfisicalWriteNotConfirmed, match="version 3 has already replaced it") as info:
        client.set_secret("CODER_USER_PASSWORD", "mine-value", **where(fake_infisical))
    assert "mine-value" not in str(info.value) and "someone-else" not in str(info.value)


def test_approval_policy_is_its_own_outcome(fake_infisical: FakeInfisical) -> None:
    client = ua_client(fake_infisical)
    elsewhere = fake_infisical.add_approval_policy("/restricted/**", name="restricted-review")
    assert client.set_secret("CODER_USER_PASSWORD", "free-write", **where(fake_infisical)).version == 2
    assert fake_infisical.approvals == []

    policy = fake_infisical.add_approval_policy("/", name="coder-review")
    assert policy.id != elsewhere.id
    with pytest.raises(InfisicalApprovalRequired) as info:
        client.set_secret("CODER_USER_PASSWORD", "held-for-review", **where(fake_infisical))
    held = info.value
    pending = fake_infisical.approvals[-1]
    assert (held.request_id, held.slug, held.policy_id, held.request_status) == (
        pending.id, pending.slug, policy.id, "open")
    assert held.secret == "CODER_USER_PASSWORD"
    assert pending.slug in str(held) and policy.id in str(held) and "held-for-review" not in str(held)
    assert fake_infisical.versions("CODER_USER_PASSWORD") == [fake_infisical.versions("CODER_USER_PASSWORD")[0],
                                                              "free-write"]

    with pytest.raises(InfisicalApprovalRequired):
        client.set_secret("BRAND_NEW", "also-held", **where(fake_infisical))
    assert "BRAND_NEW" not in fake_infisical.secret_names()

    fake_infisical.merge_approval(pending.id)
    merged = client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    assert (merged.value, merged.version) == ("held-for-review", 3)


def test_rate_limit_waits_for_retry_after_then_succeeds(fake_infisical: FakeInfisical) -> None:
    client = ua_client(fake_infisical)
    client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    fake_infisical.retry_after = 1
    fake_infisical.rate_limit_next = 1
    start = time.monotonic()
    written = client.set_secret("CODER_USER_PASSWORD", "after-429", **where(fake_infisical))
    assert time.monotonic() - start >= 1.0
    assert written.version == 2 and fake_infisical.version("CODER_USER_PASSWORD") == 2
    assert ("PATCH", "/api/v4/secrets/CODER_USER_PASSWORD", 429) in fake_infisical.request_log

    fresh = ua_client(fake_infisical)
    fake_infisical.rate_limit_next = 1
    assert fresh.get_secret("CODER_USER_PASSWORD", **where(fake_infisical)).value == "after-429"
    assert ("POST", "/api/v1/auth/universal-auth/login", 429) in fake_infisical.request_log


def test_rate_limit_beyond_the_deadline_fails_at_once(fake_infisical: FakeInfisical) -> None:
    client = ua_client(fake_infisical)
    client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    fake_infisical.retry_after = 30
    fake_infisical.rate_limit_next = 100
    start = time.monotonic()
    with pytest.raises(InfisicalRateLimited) as info:
        client.set_secret("CODER_USER_PASSWORD", "never-written", deadline=time.monotonic() + 2,
                          **where(fake_infisical))
    assert time.monotonic() - start < 1.0
    assert info.value.retry_after == 30 and info.value.status == 429
    assert "HTTP 429" in str(info.value) and "retry after 30 s" in str(info.value)
    assert "never-written" not in str(info.value)
    assert fake_infisical.version("CODER_USER_PASSWORD") == 1

    fake_infisical.retry_after = 0
    with pytest.raises(InfisicalRateLimited, match="still limited after 5 waits"):
        client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))


@pytest.mark.parametrize("value", list(ODD_VALUES.values()), ids=list(ODD_VALUES))
def test_odd_values_round_trip_and_stay_out_of_errors(fake_infisical: FakeInfisical, value: str) -> None:
    client = ua_client(fake_infisical)
    written = client.set_secret("CODER_USER_PASSWORD", value, **where(fake_infisical))
    assert written.value == value
    assert client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical)).value == value
    assert fake_infisical.get_secret("CODER_USER_PASSWORD") == value
    created = client.set_secret("ODD_NEW", value, **where(fake_infisical))
    assert (created.value, created.version) == (value, 1)

    messages: list[str] = []
    fake_infisical.fail_next_writes = 1
    with pytest.raises(InfisicalError) as failed:
        client.set_secret("CODER_USER_PASSWORD", value + "2", **where(fake_infisical))
    messages.append(str(failed.value))
    with pytest.raises(InfisicalError) as trimmed:
        client.set_secret("CODER_USER_PASSWORD", f" {value}", **where(fake_infisical))
    messages.append(str(trimmed.value))
    with pytest.raises(InfisicalNotFound) as missing:
        client.set_secret("ABSENT", value, create=False, **where(fake_infisical))
    messages.append(str(missing.value))
    fake_infisical.add_approval_policy("/")
    with pytest.raises(InfisicalApprovalRequired) as held:
        client.set_secret("CODER_USER_PASSWORD", value + "3", **where(fake_infisical))
    messages.append(str(held.value))
    fake_infisical.retry_after = 60
    fake_infisical.rate_limit_next = 1
    with pytest.raises(InfisicalRateLimited) as limited:
        client.set_secret("CODER_USER_PASSWORD", value + "4", **where(fake_infisical))
    messages.append(str(limited.value))
    for message in messages:
        assert value not in message and "\n" not in message
    assert fake_infisical.get_secret("CODER_USER_PASSWORD") == value
    assert value not in repr(fake_infisical.request_log)


def test_wrong_credentials_and_expired_tokens_are_one_line_without_secrets(fake_infisical: FakeInfisical) -> None:
    bad = InfisicalClient(fake_infisical.url, InfisicalAuth("universal-auth", "nobody", "wrong-secret-42"), timeout=3)
    with pytest.raises(InfisicalError, match="HTTP 401") as info:
        bad.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    assert "wrong-secret-42" not in str(info.value) and "\n" not in str(info.value)
    assert fake_infisical.seed is not None
    fake_infisical.token_expired = True
    client = InfisicalClient(fake_infisical.url, InfisicalAuth.service_token(fake_infisical.seed.service_token),
                             timeout=3)
    with pytest.raises(InfisicalTokenRejected, match="token was rejected") as expired:
        client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    assert fake_infisical.seed.service_token.split(".")[2] not in str(expired.value)


def test_an_expired_access_token_is_replaced_by_a_new_login(fake_infisical: FakeInfisical) -> None:
    client = ua_client(fake_infisical)
    client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    fake_infisical.expire_access_tokens()
    assert client.set_secret("CODER_USER_PASSWORD", "after-relogin", **where(fake_infisical)).version == 2
    logins = [r for r in fake_infisical.request_log if r.path == "/api/v1/auth/universal-auth/login"]
    assert len(logins) == 2


def test_a_write_without_an_answer_is_uncertain(fake_infisical: FakeInfisical) -> None:
    client = ua_client(fake_infisical, timeout=0.5)
    client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    fake_infisical.latency = 1.0
    with pytest.raises(InfisicalWriteUncertain, match="may have been applied") as info:
        client.set_secret("CODER_USER_PASSWORD", "late-write-value", **where(fake_infisical))
    assert "late-write-value" not in str(info.value)
    with pytest.raises(InfisicalError, match="no answer") as read:
        client.get_secret("CODER_USER_PASSWORD", **where(fake_infisical))
    assert not isinstance(read.value, InfisicalWriteUncertain)


def test_unreachable_host_is_a_clear_error() -> None:
    client = InfisicalClient("http://127.0.0.1:9", InfisicalAuth("token", secret="tok-secret-1"), timeout=1)
    with pytest.raises(InfisicalError, match=r"no answer from http://127\.0\.0\.1:9") as info:
        client.get_secret("X", project_id="p", environment="prod", path="/")
    assert "tok-secret-1" not in str(info.value)


def test_config_show_discovers_the_infisical_target(lab: Lab) -> None:
    r = run_cli(*lab.args("-o", "json"), "config", "show", "--discover")
    values = json.loads(r.stdout)["values"]
    assert values["infisical_host"] == {"value": lab.values["INFISICAL_HOST_API"], "source": "cluster"}
    assert values["infisical_environment"]["value"] == "prod"
    assert values["infisical_path"]["value"] == "/"
    assert values["infisical_token_secret"]["value"] == "infisical-operator/infisical-service-token"
    lab.assert_no_secrets(r.stdout, r.stderr)


def test_discovered_client_uses_the_operators_service_token(lab: Lab, fake_infisical: FakeInfisical) -> None:
    from coderctl import discovery
    from coderctl.context import App
    from coderctl.profile import load_settings

    assert fake_infisical.seed is not None
    token = fake_infisical.seed.service_token
    lab.kube.patch("Secret", "infisical-operator", "infisical-service-token",
                   {"data": {"infisicalToken": base64.b64encode(token.encode()).decode()}})
    settings = load_settings(flags={"kubeconfig": str(lab.kubeconfig), "timeout": 3},
                             environ={"CODERCTL_INFISICAL_HOST": fake_infisical.url + "/api"})
    app = App(settings=settings)
    client, project = discovery.infisical_client(app)
    assert project == fake_infisical.project_id and client.auth.kind == "service-token"
    secret = client.get_secret("CODER_USER_PASSWORD", project_id=project, environment="prod", path="/")
    assert secret.value == fake_infisical.seed.values["CODER_USER_PASSWORD"]
    assert app.redact(f"token {token}") == "token ***"
    assert app.redact(f"value {secret.value}") == "value ***"


def test_discovered_client_takes_universal_auth_from_the_settings(lab: Lab, fake_infisical: FakeInfisical) -> None:
    from coderctl import discovery
    from coderctl.context import App
    from coderctl.profile import load_settings

    assert fake_infisical.seed is not None
    environ = {"CODERCTL_INFISICAL_HOST": fake_infisical.url + "/api",
               "CODERCTL_INFISICAL_PROJECT": fake_infisical.project_id,
               "INFISICAL_UNIVERSAL_AUTH_CLIENT_ID": fake_infisical.seed.client_id,
               "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET": fake_infisical.seed.client_secret}
    settings = load_settings(flags={"kubeconfig": str(lab.kubeconfig), "timeout": 3}, environ=environ)
    assert settings.source("infisical_client_secret") == "env INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"
    app = App(settings=settings)
    client, project = discovery.infisical_client(app)
    assert client.auth.kind == "universal-auth" and project == fake_infisical.project_id
    written = client.set_secret("CODER_USER_PASSWORD", "from-settings", project_id=project, environment="prod",
                                path="/")
    assert written.version == 2
    assert app.redact(fake_infisical.seed.client_secret) == "***"

    half = load_settings(flags={"kubeconfig": str(lab.kubeconfig)},
                         environ={"INFISICAL_UNIVERSAL_AUTH_CLIENT_ID": "only-the-id"})
    with pytest.raises(discovery.DiscoveryError, match="INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"):
        discovery.infisical_client(App(settings=half))


def test_config_show_masks_infisical_credentials(lab: Lab) -> None:
    r = run_cli(*lab.args("-o", "json"), "config", "show",
                env={"INFISICAL_UNIVERSAL_AUTH_CLIENT_ID": "cid-visible",
                     "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET": "csecret-hidden-77",
                     "INFISICAL_TOKEN": "st.tokid.toksecret-hidden-88.key"})
    values = json.loads(r.stdout)["values"]
    assert values["infisical_client_id"] == {"value": "cid-visible", "source": "env INFISICAL_UNIVERSAL_AUTH_CLIENT_ID"}
    assert values["infisical_client_secret"]["value"] == "***"
    assert "csecret-hidden-77" not in r.stdout + r.stderr and "toksecret-hidden-88" not in r.stdout + r.stderr
