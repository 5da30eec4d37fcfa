"""The fake Infisical API driven by the real SDK (`infisicalsdk`) and by raw HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from infisical_sdk import InfisicalSDKClient
from infisical_sdk.infisical_requests import APIError

from lab.infisical import (
    HIDDEN_VALUE_MASK,
    REFERENCE_SECRET_NAMES,
    TOKEN_EXPIRED_MESSAGE,
    FakeInfisical,
    fake_infisical,  # noqa: F401
    reference_database_url,
)


@pytest.fixture
def sdk(fake_infisical: FakeInfisical) -> Iterator[InfisicalSDKClient]:
    assert fake_infisical.seed is not None
    client = InfisicalSDKClient(host=fake_infisical.url, cache_ttl=None)
    client.auth.universal_auth.login(fake_infisical.seed.client_id, fake_infisical.seed.client_secret)
    yield client
    client.close()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


def scope(fake: FakeInfisical) -> dict[str, str]:
    return {"project_id": fake.project_id, "environment_slug": "prod", "secret_path": "/"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def access_token(fake: FakeInfisical, http: requests.Session) -> str:
    assert fake.seed is not None
    resp = http.post(f"{fake.url}/api/v1/auth/universal-auth/login",
                     json={"clientId": fake.seed.client_id, "clientSecret": fake.seed.client_secret})
    assert resp.status_code == 200
    return str(resp.json()["accessToken"])


def assert_error_shape(body: dict[str, Any], status: int, error: str) -> None:
    assert set(body) >= {"reqId", "statusCode", "message", "error"}
    assert body["statusCode"] == status
    assert body["error"] == error


def test_seeded_like_the_reference_deployment(fake_infisical: FakeInfisical) -> None:
    seed = fake_infisical.seed
    assert seed is not None
    assert fake_infisical.secret_names() == sorted(REFERENCE_SECRET_NAMES)
    assert seed.values["CODER_DATABASE_URL"] == reference_database_url(seed.values["CODER_USER_PASSWORD"])
    assert "@coder-coder-postgresql:5432/coder" in seed.values["CODER_DATABASE_URL"]
    assert seed.service_token.startswith("st.") and seed.service_token.count(".") == 3


@pytest.mark.parametrize("fake_infisical", [{"CODER_USER_PASSWORD": "p/w+="}], indirect=True)
def test_seed_values_can_be_passed_in(fake_infisical: FakeInfisical) -> None:
    assert fake_infisical.get_secret("CODER_USER_PASSWORD") == "p/w+="
    assert "coder:p%2Fw%2B%3D@" in fake_infisical.get_secret("CODER_DATABASE_URL")


def test_universal_auth_login_shape(fake_infisical: FakeInfisical) -> None:
    assert fake_infisical.seed is not None
    with InfisicalSDKClient(host=fake_infisical.url, cache_ttl=None) as client:
        login = client.auth.universal_auth.login(fake_infisical.seed.client_id, fake_infisical.seed.client_secret)
    assert login.tokenType == "Bearer"
    assert login.expiresIn > 0 and login.accessTokenMaxTTL > 0
    assert login.accessToken.count(".") == 2


def test_sdk_get_list_update_create_delete(fake_infisical: FakeInfisical, sdk: InfisicalSDKClient) -> None:
    assert fake_infisical.seed is not None
    original = fake_infisical.seed.values["CODER_USER_PASSWORD"]
    secret = sdk.secrets.get_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical))
    assert (secret.secretValue, secret.version, secret.type) == (original, 1, "shared")
    assert secret.workspace == fake_infisical.project_id and secret.environment == "prod"
    assert secret.secretPath == "/"

    listed = sdk.secrets.list_secrets(**scope(fake_infisical))
    assert sorted(s.secretKey for s in listed.secrets) == sorted(REFERENCE_SECRET_NAMES)
    assert listed.imports == []

    updated = sdk.secrets.update_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical), secret_value="rotated")
    assert (updated.secretValue, updated.version) == ("rotated", 2)
    assert sdk.secrets.get_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical)).secretValue == "rotated"
    old = sdk.secrets.get_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical), version="1")
    assert (old.secretValue, old.version) == (original, 1)
    assert fake_infisical.versions("CODER_USER_PASSWORD") == [original, "rotated"]

    created = sdk.secrets.create_secret_by_name("EXTRA", **scope(fake_infisical), secret_value="  padded  ")
    assert (created.secretValue, created.version) == ("padded", 1)
    with pytest.raises(APIError) as dup:
        sdk.secrets.create_secret_by_name("EXTRA", **scope(fake_infisical), secret_value="x")
    assert dup.value.status_code == 400
    deleted = sdk.secrets.delete_secret_by_name("EXTRA", **scope(fake_infisical))
    assert deleted.secretKey == "EXTRA"
    with pytest.raises(APIError) as gone:
        sdk.secrets.get_secret_by_name("EXTRA", **scope(fake_infisical))
    assert gone.value.status_code == 404
    assert gone.value.response["message"] == "Secret with name 'EXTRA' not found"


def test_v4_routes(fake_infisical: FakeInfisical, http: requests.Session) -> None:
    hdrs = bearer(access_token(fake_infisical, http))
    base = f"{fake_infisical.url}/api/v4/secrets"
    params = {"projectId": fake_infisical.project_id, "environment": "prod", "secretPath": "/", "type": "shared"}
    got = http.get(f"{base}/CODER_USER_PASSWORD", params=params, headers=hdrs)
    assert got.status_code == 200
    assert got.json()["secret"]["secretKey"] == "CODER_USER_PASSWORD"
    assert got.json()["secret"]["_id"] == got.json()["secret"]["id"]

    body = {"projectId": fake_infisical.project_id, "environment": "prod", "secretPath": "/",
            "secretValue": "v4-value", "type": "shared"}
    patched = http.patch(f"{base}/CODER_USER_PASSWORD", json=body, headers=hdrs)
    assert patched.status_code == 200 and patched.json()["secret"]["version"] == 2
    old = http.get(f"{base}/CODER_USER_PASSWORD", params={**params, "version": "1"}, headers=hdrs).json()["secret"]
    assert old["version"] == 1 and old["secretValue"] == fake_infisical.versions("CODER_USER_PASSWORD")[0]
    missing = http.get(f"{base}/CODER_USER_PASSWORD", params={**params, "version": "9"}, headers=hdrs)
    assert missing.status_code == 404

    listed = http.get(base, params=params, headers=hdrs).json()
    assert {"secrets", "imports"} <= set(listed) and len(listed["secrets"]) == 3
    created = http.post(f"{base}/NEW_ONE", json={**body, "secretValue": "n"}, headers=hdrs)
    assert created.json()["secret"]["version"] == 1
    deleted = http.delete(f"{base}/NEW_ONE", json=body, headers=hdrs)
    assert deleted.status_code == 200 and "NEW_ONE" not in fake_infisical.secret_names()


def test_service_token_only_first_three_parts(fake_infisical: FakeInfisical, http: requests.Session) -> None:
    assert fake_infisical.seed is not None
    full = fake_infisical.seed.service_token
    three = ".".join(full.split(".")[:3])
    url = f"{fake_infisical.url}/api/v3/secrets/raw"
    params = {"workspaceId": fake_infisical.project_id, "environment": "prod", "secretPath": "/"}
    ok = http.get(url, params=params, headers=bearer(three))
    assert ok.status_code == 200 and len(ok.json()["secrets"]) == 3
    details = http.get(f"{fake_infisical.url}/api/v2/service-token", headers=bearer(three)).json()
    assert details["workspace"] == fake_infisical.project_id
    assert details["scopes"] == [{"environment": "prod", "secretPath": "/"}]

    rejected = http.get(url, params=params, headers=bearer(full))
    assert rejected.status_code == 401
    assert_error_shape(rejected.json(), 401, "UnauthorizedError")
    wrong_secret = ".".join(three.split(".")[:2] + ["0" * 32])
    assert http.get(url, params=params, headers=bearer(wrong_secret)).status_code == 401
    unknown = http.get(url, params=params, headers=bearer("st.nope.secret"))
    assert unknown.status_code == 404

    with InfisicalSDKClient(host=fake_infisical.url, token=three, cache_ttl=None) as client:
        secret = client.secrets.get_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical))
    assert secret.secretValue == fake_infisical.seed.values["CODER_USER_PASSWORD"]


def test_unknown_credentials_are_401(fake_infisical: FakeInfisical) -> None:
    with InfisicalSDKClient(host=fake_infisical.url, cache_ttl=None) as client, pytest.raises(APIError) as err:
        client.auth.universal_auth.login("nobody", "nothing")
    assert err.value.status_code == 401
    assert_error_shape(err.value.response, 401, "UnauthorizedError")
    assert err.value.response["message"] == "Invalid credentials"


def test_missing_and_malformed_tokens(fake_infisical: FakeInfisical, http: requests.Session) -> None:
    url = f"{fake_infisical.url}/api/v3/secrets/raw"
    missing = http.get(url)
    assert missing.status_code == 401 and missing.json()["message"] == "Token missing"
    garbage = http.get(url, headers=bearer("garbage"))
    assert garbage.status_code == 403
    assert_error_shape(garbage.json(), 403, "TokenError")


def test_expired_token(fake_infisical: FakeInfisical, sdk: InfisicalSDKClient, http: requests.Session) -> None:
    fake_infisical.token_expired = True
    with pytest.raises(APIError) as err:
        sdk.secrets.get_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical))
    assert err.value.status_code == 403
    assert_error_shape(err.value.response, 403, "TokenError")
    assert err.value.response["message"] == TOKEN_EXPIRED_MESSAGE
    fake_infisical.token_expired = False
    sdk.secrets.get_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical))

    fake_infisical.expire_access_tokens()
    with pytest.raises(APIError):
        sdk.secrets.get_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical))
    renew = http.post(f"{fake_infisical.url}/api/v1/auth/token/renew", json={"accessToken": sdk.get_token()})
    assert renew.status_code == 403 and renew.json()["message"] == TOKEN_EXPIRED_MESSAGE
    assert fake_infisical.seed is not None
    sdk.auth.universal_auth.login(fake_infisical.seed.client_id, fake_infisical.seed.client_secret)
    sdk.secrets.get_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical))


def test_rate_limit_answers_429_with_retry_after(fake_infisical: FakeInfisical, sdk: InfisicalSDKClient,
                                                 http: requests.Session) -> None:
    fake_infisical.rate_limit_next = 2
    first = http.get(f"{fake_infisical.url}/api/status")
    assert first.status_code == 429 and first.headers["Retry-After"] == "1"
    assert_error_shape(first.json(), 429, "RateLimitExceeded")
    with pytest.raises(APIError) as err:
        sdk.secrets.list_secrets(**scope(fake_infisical))
    assert err.value.status_code == 429
    assert http.get(f"{fake_infisical.url}/api/status").status_code == 200


def test_failing_writes(fake_infisical: FakeInfisical, sdk: InfisicalSDKClient) -> None:
    before = fake_infisical.get_secret("CODER_USER_PASSWORD")
    fake_infisical.fail_next_writes = 1
    with pytest.raises(APIError) as err:
        sdk.secrets.update_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical), secret_value="x")
    assert err.value.status_code == 500
    assert_error_shape(err.value.response, 500, "InternalServerError")
    assert fake_infisical.versions("CODER_USER_PASSWORD") == [before]
    sdk.secrets.get_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical))
    sdk.secrets.update_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical), secret_value="x")
    assert fake_infisical.get_secret("CODER_USER_PASSWORD") == "x"


def test_approval_policy_holds_the_change(fake_infisical: FakeInfisical, sdk: InfisicalSDKClient,
                                          http: requests.Session) -> None:
    fake_infisical.approval_policy = True
    before = fake_infisical.get_secret("CODER_USER_PASSWORD")
    body = {"projectId": fake_infisical.project_id, "environment": "prod", "secretPath": "/",
            "secretValue": "needs-review", "type": "shared"}
    resp = http.patch(f"{fake_infisical.url}/api/v4/secrets/CODER_USER_PASSWORD", json=body,
                      headers=bearer(access_token(fake_infisical, http)))
    assert resp.status_code == 200
    approval = resp.json()["approval"]
    assert "secret" not in resp.json()
    assert approval["status"] == "open" and approval["hasMerged"] is False
    assert fake_infisical.get_secret("CODER_USER_PASSWORD") == before

    # The SDK expects {"secret": ...} and breaks on the approval answer: callers must handle it.
    with pytest.raises(KeyError):
        sdk.secrets.update_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical), secret_value="y")
    assert fake_infisical.get_secret("CODER_USER_PASSWORD") == before

    fake_infisical.merge_approval(approval["id"])
    assert fake_infisical.get_secret("CODER_USER_PASSWORD") == "needs-review"


def test_latency(fake_infisical: FakeInfisical, http: requests.Session) -> None:
    fake_infisical.latency = 0.3
    start = time.monotonic()
    assert http.get(f"{fake_infisical.url}/api/status").status_code == 200
    assert time.monotonic() - start >= 0.3


def test_references_hidden_values_and_recursion(fake_infisical: FakeInfisical, sdk: InfisicalSDKClient) -> None:
    fake_infisical.set_secret("HOST", "db.internal")
    fake_infisical.set_secret("URL", "postgres://${HOST}/x")
    fake_infisical.set_secret("NESTED", "n", path="/sub/dir")
    expanded = sdk.secrets.get_secret_by_name("URL", **scope(fake_infisical))
    assert expanded.secretValue == "postgres://db.internal/x"
    raw = sdk.secrets.get_secret_by_name("URL", **scope(fake_infisical), expand_secret_references=False)
    assert raw.secretValue == "postgres://${HOST}/x"
    hidden = sdk.secrets.get_secret_by_name("URL", **scope(fake_infisical), view_secret_value=False)
    assert hidden.secretValue == HIDDEN_VALUE_MASK and hidden.secretValueHidden is True
    flat = sdk.secrets.list_secrets(**scope(fake_infisical))
    deep = sdk.secrets.list_secrets(**scope(fake_infisical), recursive=True)
    assert "NESTED" not in {s.secretKey for s in flat.secrets}
    assert {s.secretPath for s in deep.secrets if s.secretKey == "NESTED"} == {"/sub/dir"}


def test_not_found_shapes(fake_infisical: FakeInfisical, http: requests.Session) -> None:
    hdrs = bearer(access_token(fake_infisical, http))
    url = f"{fake_infisical.url}/api/v3/secrets/raw"
    env = http.get(url, params={"workspaceId": fake_infisical.project_id, "environment": "staging"}, headers=hdrs)
    assert env.status_code == 404 and "staging" in env.json()["message"]
    assert_error_shape(env.json(), 404, "NotFound")
    project = http.get(url, params={"workspaceId": "other", "environment": "prod"}, headers=hdrs)
    assert project.status_code == 404
    empty = http.get(url, params={"workspaceId": fake_infisical.project_id, "environment": "prod",
                                  "secretPath": "/nothing/here"}, headers=hdrs)
    assert empty.status_code == 200 and empty.json()["secrets"] == []
    route = http.get(f"{fake_infisical.url}/api/v9/nothing")
    assert route.status_code == 404 and route.json()["message"] == "Route GET:/api/v9/nothing not found"


def test_request_log_has_no_secret_values(fake_infisical: FakeInfisical, sdk: InfisicalSDKClient) -> None:
    sdk.secrets.update_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical), secret_value="s3cr3t-value")
    sdk.secrets.get_secret_by_name("CODER_USER_PASSWORD", **scope(fake_infisical))
    log = fake_infisical.request_log
    assert ("POST", "/api/v1/auth/universal-auth/login", 200) in log
    assert ("PATCH", "/api/v3/secrets/raw/CODER_USER_PASSWORD", 200) in log
    assert "s3cr3t-value" not in repr(log)
    assert fake_infisical.seed is not None
    assert fake_infisical.seed.client_secret not in repr(log)


def test_stop_is_clean_and_idempotent() -> None:
    fake = FakeInfisical()
    with fake:
        url = fake.url
        assert requests.get(f"{url}/api/status", timeout=5).status_code == 200
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/api/status", timeout=2)


APPROVAL_REQUEST_KEYS = {"id", "policyId", "hasMerged", "status", "conflicts", "slug", "folderId", "bypassReason",
                         "createdAt", "updatedAt", "isReplicated", "committerUserId", "statusChangedByUserId"}


def test_every_write_adds_a_version_and_reads_return_it(fake_infisical: FakeInfisical,
                                                        http: requests.Session) -> None:
    hdrs = bearer(access_token(fake_infisical, http))
    v4 = f"{fake_infisical.url}/api/v4/secrets/CODER_USER_PASSWORD"
    v3 = f"{fake_infisical.url}/api/v3/secrets/raw/CODER_USER_PASSWORD"
    v4_scope = {"projectId": fake_infisical.project_id, "environment": "prod", "secretPath": "/"}
    v3_scope = {"workspaceId": fake_infisical.project_id, "environment": "prod", "secretPath": "/"}
    first = fake_infisical.get_secret("CODER_USER_PASSWORD")
    assert fake_infisical.version("CODER_USER_PASSWORD") == 1
    assert http.patch(v4, json={**v4_scope, "secretValue": "two"}, headers=hdrs).json()["secret"]["version"] == 2
    assert http.patch(v3, json={**v3_scope, "secretValue": "three"}, headers=hdrs).json()["secret"]["version"] == 3
    assert http.patch(v4, json={**v4_scope, "secretValue": "three"}, headers=hdrs).json()["secret"]["version"] == 4
    assert fake_infisical.set_secret("CODER_USER_PASSWORD", "five") == 5
    assert fake_infisical.versions("CODER_USER_PASSWORD") == [first, "two", "three", "three", "five"]
    for url, scope_params in ((v4, v4_scope), (v3, v3_scope)):
        latest = http.get(url, params=scope_params, headers=hdrs).json()["secret"]
        assert (latest["version"], latest["secretValue"]) == (5, "five")
        old = http.get(url, params={**scope_params, "version": "2"}, headers=hdrs).json()["secret"]
        assert (old["version"], old["secretValue"], old["id"]) == (2, "two", latest["id"])


def test_approval_policy_on_one_path(fake_infisical: FakeInfisical, http: requests.Session) -> None:
    hdrs = bearer(access_token(fake_infisical, http))
    fake_infisical.set_secret("DB_PASSWORD", "held-before", path="/restricted/db")
    policy = fake_infisical.add_approval_policy("/restricted/*", name="restricted-review")
    base = f"{fake_infisical.url}/api/v4/secrets"
    free = {"projectId": fake_infisical.project_id, "environment": "prod", "secretPath": "/", "secretValue": "ok"}
    assert "secret" in http.patch(f"{base}/CODER_USER_PASSWORD", json=free, headers=hdrs).json()
    assert fake_infisical.get_secret("CODER_USER_PASSWORD") == "ok"

    held_body = {**free, "secretPath": "/restricted/db/", "secretValue": "held-after"}
    answers = [
        http.patch(f"{base}/DB_PASSWORD", json=held_body, headers=hdrs),
        http.post(f"{base}/NEW_IN_RESTRICTED", json=held_body, headers=hdrs),
        http.delete(f"{base}/DB_PASSWORD", json=held_body, headers=hdrs),
    ]
    for resp in answers:
        assert resp.status_code == 200 and set(resp.json()) == {"approval"}
        approval = resp.json()["approval"]
        assert set(approval) == APPROVAL_REQUEST_KEYS
        assert (approval["policyId"], approval["status"], approval["hasMerged"]) == (policy.id, "open", False)
    assert [(a.method, a.name, a.policy_name) for a in fake_infisical.approvals] == [
        ("PATCH", "DB_PASSWORD", "restricted-review"), ("POST", "NEW_IN_RESTRICTED", "restricted-review"),
        ("DELETE", "DB_PASSWORD", "restricted-review")]
    assert fake_infisical.versions("DB_PASSWORD", path="/restricted/db") == ["held-before"]
    assert fake_infisical.secret_names(path="/restricted/db") == ["DB_PASSWORD"]

    fake_infisical.merge_approval(fake_infisical.approvals[0].id)
    assert fake_infisical.versions("DB_PASSWORD", path="/restricted/db") == ["held-before", "held-after"]


def test_rate_limit_for_the_next_n_requests_with_retry_after(fake_infisical: FakeInfisical,
                                                             http: requests.Session) -> None:
    fake_infisical.retry_after = 7
    fake_infisical.rate_limit_next = 3
    answers = [http.get(f"{fake_infisical.url}/api/status") for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 429, 429, 200]
    assert answers[0].headers["Retry-After"] == "7"
    assert answers[0].json()["message"] == "Rate limit exceeded. Please try again in 7 seconds"
    assert fake_infisical.rate_limit_next == 0
