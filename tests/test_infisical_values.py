"""infisical.values against the lab's fake Infisical (the InfisicalSecret's hostAPI): the healthy lab, a value
changed in Infisical and not synced, a Secret edited by hand, credentials rejected or overridden from the
environment, Infisical down or hanging; no secret value in any output, odd-shaped values included. And the
doctor folding the check's problems under the operator's root causes."""

from __future__ import annotations

import base64
import json
import random
import secrets
import string
import time
from typing import Any
from urllib.parse import quote

import pytest

from clirun import Result, run_cli
from coderctl.checks.secrets import INFISICAL_VARS
from coderctl.facts.infisical import operator_etag
from lab.deployment import MANAGED_SECRET, Lab
from lab.infisical import FakeInfisical
from lab.infisical_operator import (
    NOT_MODIFIED_LOG,
    REFERENCE_KEY_MAP,
    FakeInfisicalOperator,
    as_store,
    compute_etag,
    url_mapper,
)

pytestmark = pytest.mark.fake_only

CHECK = "infisical.values"
WARN_OR_ABOVE = {"critical", "fail", "error", "warn"}


def fake(lab: Lab) -> FakeInfisical:
    assert lab.infisical is not None
    return lab.infisical


def verify(lab: Lab, *more: str, env: dict[str, str] | None = None, extra: tuple[str, ...] = (),
           timeout: float = 3.0) -> tuple[Result, dict[str, Any]]:
    """`-o json verify --only secrets`; the output holds no secret of the lab nor any of `extra`."""
    r = run_cli(*lab.args("-o", "json", timeout=timeout), "verify", "--only", "secrets", *more, env=env)
    assert_clean(lab, r, extra)
    doc = json.loads(r.stdout)
    return r, next(c for c in doc["checks"] if c["id"] == CHECK)


def assert_clean(lab: Lab, r: Result, extra: tuple[str, ...] = ()) -> None:
    lab.assert_no_secrets(r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    for value in extra:
        forms = {value, quote(value, safe=""), json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
        for form in forms:
            assert form not in r.stdout and form not in r.stderr, "a secret value leaked into the output"


def codes(check: dict[str, Any]) -> list[str]:
    return [p["code"] for p in check["problems"]]


def set_secret_key(lab: Lab, key: str, value: str) -> None:
    """Change the managed Secret by hand (the version annotation is left as it was)."""
    lab.kube.patch("Secret", *MANAGED_SECRET, {"data": {key: base64.b64encode(value.encode()).decode()}},
                   reconcile=False)


def test_the_etag_is_the_operators() -> None:
    rng = random.Random(7)
    for _ in range(50):
        data = {"".join(rng.choices(string.ascii_lowercase + "-", k=rng.randint(1, 20))):
                bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))) for _ in range(rng.randint(0, 5))}
        assert operator_etag(data) == compute_etag(data)


def test_the_standard_lab_points_the_operator_at_its_fake_and_is_in_sync(lab: Lab) -> None:
    """The InfisicalSecret's hostAPI is the lab's fake (never a real host), and the operator finds nothing to
    write: the Secret holds Infisical's values under the operator's own version annotation."""
    obj = lab.kube.get("InfisicalSecret", "coder", "coder-database-secrets")
    assert obj is not None and obj["spec"]["hostAPI"] == f"{fake(lab).url}/api" == lab.values["INFISICAL_HOST_API"]
    operator = FakeInfisicalOperator(as_store(lab.kube), url_mapper(fake(lab).url), key_map=REFERENCE_KEY_MAP)
    assert all(r.ok for r in operator.sync_once())
    assert operator.writes == 0 and NOT_MODIFIED_LOG in operator.log


def test_healthy_lab_is_ok_with_the_operators_token(lab: Lab) -> None:
    r, check = verify(lab)
    assert check["status"] == "ok", check
    assert "the operator's service token (Secret infisical-operator/infisical-service-token)" in check["detail"]
    assert check["data"]["host"] == f"{fake(lab).url}/api"
    assert r.code == 0


def test_a_value_changed_in_infisical_and_not_synced_fails_naming_the_key(lab: Lab) -> None:
    new = "changed-in-infisical-" + secrets.token_hex(8)
    fake(lab).set_secret("CODER_USER_PASSWORD", new)
    r, check = verify(lab, extra=(new,))
    assert check["status"] == "fail" and codes(check) == ["INFISICAL-VALUES-NOT-SYNCED"], check
    assert "coder-user-password (CODER_USER_PASSWORD)" in check["detail"]
    assert "postgres-admin-password" not in check["detail"] and "database-url" not in check["detail"]
    assert "annotate infisicalsecret coder-database-secrets" in check["remediation"]
    assert r.code == 1


def test_a_secret_edited_by_hand_warns(lab: Lab) -> None:
    hand = "edited-by-hand-" + secrets.token_hex(8)
    set_secret_key(lab, "postgres-admin-password", hand)
    r, check = verify(lab, extra=(hand,))
    assert check["status"] == "warn" and codes(check) == ["INFISICAL-SECRET-EDITED"], check
    assert "postgres-admin-password (CODER_POSTGRES_ADMIN_PASSWORD) differ" in check["detail"]
    assert "Infisical/infisical#2038" in check["remediation"]  # the annotation still matches Infisical's values
    assert r.code == 0


def test_an_annotation_edited_by_hand_warns_with_the_values_in_step(lab: Lab) -> None:
    lab.kube.patch("Secret", *MANAGED_SECRET, {"metadata": {"annotations": {
        "secrets.infisical.com/version": 'W/"secrets-1-00000000"'}}}, reconcile=False)
    _, check = verify(lab)
    assert check["status"] == "warn" and codes(check) == ["INFISICAL-SECRET-EDITED"], check
    assert "values equal Infisical's" in check["detail"]


def test_edited_by_hand_and_changed_in_infisical_also_fails(lab: Lab) -> None:
    set_secret_key(lab, "postgres-admin-password", "edited-by-hand")
    fake(lab).set_secret("CODER_POSTGRES_ADMIN_PASSWORD", "changed-in-infisical")
    _, check = verify(lab, extra=("edited-by-hand", "changed-in-infisical"))
    assert check["status"] == "fail", check
    assert sorted(codes(check)) == ["INFISICAL-SECRET-EDITED", "INFISICAL-VALUES-NOT-SYNCED"]


def test_a_value_missing_in_infisical_fails(lab: Lab) -> None:
    fake(lab).delete_secret("CODER_DATABASE_URL")
    _, check = verify(lab)
    assert check["status"] == "fail" and codes(check) == ["INFISICAL-VALUE-MISSING"], check
    assert "CODER_DATABASE_URL" in check["detail"]


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_the_operators_token_rejected_fails_in_one_line_naming_the_host(lab: Lab, how: str) -> None:
    if how == "revoked":
        fake(lab).revoke_service_token(lab.values["INFISICAL_TOKEN"])
    else:
        fake(lab).token_expired = True
    r, check = verify(lab)
    assert check["status"] == "fail" and codes(check) == ["INFISICAL-OPERATOR-TOKEN-REJECTED"], check
    assert "\n" not in check["detail"] and fake(lab).url in check["detail"]
    assert "infisical-service-token" in check["remediation"]
    assert r.code == 1


def test_infisical_down_is_an_error_in_one_line_within_the_timeout(lab: Lab) -> None:
    url = fake(lab).url
    fake(lab).stop()
    r, check = verify(lab, timeout=1.0)
    assert check["status"] == "error" and codes(check) == ["INFISICAL-UNREACHABLE"], check
    assert "\n" not in check["detail"] and url in check["detail"]
    assert check["duration_s"] < 2.0
    assert r.code == 1


def test_a_hanging_infisical_is_bounded_by_the_timeout(lab: Lab) -> None:
    fake(lab).latency = 30.0
    start = time.monotonic()
    _, check = verify(lab, timeout=1.0)
    assert check["status"] == "error" and codes(check) == ["INFISICAL-UNREACHABLE"], check
    assert check["duration_s"] < 2.5 and time.monotonic() - start < 10


def test_infisical_token_in_the_environment_wins_over_the_operators(lab: Lab) -> None:
    mine = fake(lab).new_service_token()
    fake(lab).revoke_service_token(lab.values["INFISICAL_TOKEN"])
    _, check = verify(lab, env={"INFISICAL_TOKEN": mine}, extra=(mine,))
    assert check["status"] == "ok", check
    assert check["data"]["credentials"] == "the token from env INFISICAL_TOKEN"


def test_a_rejected_token_in_the_environment_is_not_the_operators(lab: Lab) -> None:
    revoked = fake(lab).new_service_token()
    fake(lab).revoke_service_token(revoked)
    _, check = verify(lab, env={"INFISICAL_TOKEN": revoked}, extra=(revoked,))
    assert check["status"] == "fail" and codes(check) == ["INFISICAL-CREDENTIALS-REJECTED"], check
    assert "env INFISICAL_TOKEN" in check["detail"]


def test_universal_auth_in_the_environment_wins_over_every_token(lab: Lab) -> None:
    seed = fake(lab).seed
    assert seed is not None
    fake(lab).revoke_service_token(lab.values["INFISICAL_TOKEN"])
    env = {"INFISICAL_UNIVERSAL_AUTH_CLIENT_ID": seed.client_id, "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET":
           seed.client_secret, "INFISICAL_TOKEN": "st.unknown.token.here", "CODERCTL_INFISICAL_PROJECT":
           fake(lab).project_id}
    _, check = verify(lab, env=env)
    assert check["status"] == "ok", check
    assert check["data"]["credentials"] == "universal auth (env INFISICAL_UNIVERSAL_AUTH_CLIENT_ID)"
    wrong = {**env, "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET": "not-the-secret-" + secrets.token_hex(4)}
    _, check = verify(lab, env=wrong, extra=(wrong["INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"],))
    assert check["status"] == "fail" and codes(check) == ["INFISICAL-CREDENTIALS-REJECTED"], check


def test_half_configured_universal_auth_names_the_missing_variable(lab: Lab) -> None:
    _, check = verify(lab, env={"INFISICAL_UNIVERSAL_AUTH_CLIENT_ID": "only-the-id"})
    assert check["status"] == "error" and "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET" in check["detail"], check


ODD_USER = " a b@c/d%e+f?g#h "
ODD = {
    "postgres-admin-password": "".join(random.Random(11).choices(string.printable.strip(), k=10_000)),
    "coder-user-password": ODD_USER,
    "database-url": f"postgresql://coder:{quote(ODD_USER, safe='')}@coder-coder-postgresql:5432/coder?sslmode=disable",
}
ONE_CHAR = {"postgres-admin-password": "¤"}


@pytest.mark.parametrize("values", [ODD, ONE_CHAR], ids=["spaces-at-slash-percent-10k", "one-char"])
@pytest.mark.parametrize("agree", [True, False], ids=["equal", "differ"])
def test_odd_shaped_values_never_reach_the_output(lab: Lab, values: dict[str, str], agree: bool) -> None:
    for key, value in values.items():
        fake(lab).set_secret(INFISICAL_VARS[key], value)
        set_secret_key(lab, key, value)
    lab.sync_infisical()  # the version annotation, as the operator stamps it
    other = {k: v[::-1] + "~" for k, v in values.items()}
    if not agree:
        for key, value in other.items():
            fake(lab).set_secret(INFISICAL_VARS[key], value)
    leaks = (*values.values(), *other.values())
    _, check = verify(lab, extra=leaks)
    assert check["status"] == ("ok" if agree else "fail"), check
    if not agree:
        assert all(k in check["detail"] for k in values)
    for text_args in (("-v",), ("-v", "--debug")):
        r = run_cli(*lab.args(*text_args), "verify", "--only", "secrets")
        assert_clean(lab, r, leaks)


def run_doctor(lab: Lab) -> dict[str, Any]:
    r = run_cli(*lab.args("-o", "json"), "doctor", *lab.net_args(), "--access-url", lab.access_url)
    assert_clean(lab, r)
    return dict(json.loads(r.stdout))


@pytest.mark.flaky(reruns=2)  # exec streams can fail to open under load
def test_doctor_folds_unsynced_values_under_the_failing_sync(lab: Lab) -> None:
    lab.scenario("infisical-sync-failing")
    fake(lab).set_secret("CODER_USER_PASSWORD", "changed-while-the-sync-fails")
    doc = run_doctor(lab)
    serious = [f for f in doc["findings"] if f["severity"] in WARN_OR_ABOVE]
    assert [f["code"] for f in serious] == ["INFISICAL-SYNC-BROKEN"], doc["findings"]
    assert CHECK in serious[0]["consequences"]


@pytest.mark.flaky(reruns=2)
def test_doctor_names_a_rejected_operator_token_as_the_cause(lab: Lab) -> None:
    fake(lab).revoke_service_token(lab.values["INFISICAL_TOKEN"])
    doc = run_doctor(lab)
    serious = [f for f in doc["findings"] if f["severity"] in WARN_OR_ABOVE]
    assert [f["code"] for f in serious] == ["INFISICAL-TOKEN-EXPIRED"], doc["findings"]
    assert CHECK in serious[0]["checks"]
    assert any("infisical-service-token" in line for line in serious[0]["fix"])
