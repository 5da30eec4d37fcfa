"""The Infisical client layer against the fake Infisical: every way to authenticate, reads without a cache,
the project of a service token, discovery from the InfisicalSecret, and errors without secrets."""

from __future__ import annotations

import json

import pytest

from clirun import run_cli
from coderctl.clients.infisical import InfisicalAuth, InfisicalClient, InfisicalError, api_base
from lab.deployment import Lab
from lab.infisical import FakeInfisical, fake_infisical  # noqa: F401


def test_auth_from_environment() -> None:
    assert InfisicalAuth.from_env({}) is None
    ua = InfisicalAuth.from_env({"INFISICAL_UNIVERSAL_AUTH_CLIENT_ID": "id",
                                 "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET": "sec"})
    assert ua is not None and ua.kind == "universal-auth" and "sec" not in repr(ua)
    st = InfisicalAuth.from_env({"INFISICAL_TOKEN": "st.a.b.c"})
    assert st is not None and st.kind == "service-token"
    tok = InfisicalAuth.from_env({"INFISICAL_TOKEN": "eyJhbGciOi"})
    assert tok is not None and tok.kind == "token"
    assert api_base("https://app.infisical.com/api") == "https://app.infisical.com"


def test_universal_auth_reads_without_cache(fake_infisical: FakeInfisical) -> None:
    seed = fake_infisical.seed
    client = InfisicalClient(fake_infisical.url + "/api",
                             InfisicalAuth("universal-auth", seed.client_id, seed.client_secret), timeout=3)
    where = {"project_id": fake_infisical.project_id, "environment": "prod", "path": "/"}
    assert client.get_secret("CODER_USER_PASSWORD", **where) == seed.values["CODER_USER_PASSWORD"]
    fake_infisical.set_secret("CODER_USER_PASSWORD", "changed-value-123")
    assert client.get_secret("CODER_USER_PASSWORD", **where) == "changed-value-123"
    assert client.get_secret("CODER_USER_PASSWORD", version=1, **where) == seed.values["CODER_USER_PASSWORD"]


def test_service_token_and_its_project(fake_infisical: FakeInfisical) -> None:
    token = fake_infisical.seed.service_token
    client = InfisicalClient(fake_infisical.url, InfisicalAuth.service_token(token), timeout=3)
    project = client.service_token_project()
    assert project == fake_infisical.project_id
    value = client.get_secret("CODER_DATABASE_URL", project_id=project, environment="prod", path="/")
    assert value == fake_infisical.seed.values["CODER_DATABASE_URL"]


def test_errors_are_one_line_without_secrets(fake_infisical: FakeInfisical) -> None:
    bad = InfisicalClient(fake_infisical.url, InfisicalAuth("universal-auth", "nobody", "wrong-secret-42"), timeout=3)
    with pytest.raises(InfisicalError) as info:
        bad.get_secret("CODER_USER_PASSWORD", project_id=fake_infisical.project_id, environment="prod", path="/")
    assert "wrong-secret-42" not in str(info.value) and "\n" not in str(info.value)
    fake_infisical.token_expired = True
    client = InfisicalClient(fake_infisical.url, InfisicalAuth.service_token(fake_infisical.seed.service_token),
                             timeout=3)
    with pytest.raises(InfisicalError, match="token was rejected"):
        client.get_secret("CODER_USER_PASSWORD", project_id=fake_infisical.project_id, environment="prod", path="/")


def test_config_show_discovers_the_infisical_target(lab: Lab) -> None:
    r = run_cli(*lab.args("-o", "json"), "config", "show", "--discover")
    values = json.loads(r.stdout)["values"]
    assert values["infisical_host"] == {"value": "https://app.infisical.com/api", "source": "cluster"}
    assert values["infisical_environment"]["value"] == "prod"
    assert values["infisical_path"]["value"] == "/"
    assert values["infisical_token_secret"]["value"] == "infisical-operator/infisical-service-token"
    lab.assert_no_secrets(r.stdout, r.stderr)


def test_discovered_client_uses_the_operators_service_token(lab: Lab, fake_infisical: FakeInfisical) -> None:
    import base64

    from coderctl import discovery
    from coderctl.context import App
    from coderctl.profile import load_settings

    token = fake_infisical.seed.service_token
    lab.kube.patch("Secret", "infisical-operator", "infisical-service-token",
                   {"data": {"infisicalToken": base64.b64encode(token.encode()).decode()}})
    settings = load_settings(flags={"kubeconfig": str(lab.kubeconfig), "timeout": 3},
                             environ={"CODERCTL_INFISICAL_HOST": fake_infisical.url + "/api"})
    app = App(settings=settings)
    client, project = discovery.infisical_client(app)
    assert project == fake_infisical.project_id
    assert client.get_secret("CODER_USER_PASSWORD", project_id=project, environment="prod", path="/") == \
        fake_infisical.seed.values["CODER_USER_PASSWORD"]
    assert app.redact(f"token {token}") == "token ***"
