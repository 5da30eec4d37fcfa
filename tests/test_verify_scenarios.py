"""Each broken deployment fails the check that exists for it, with a detail naming the cause and the
problem codes of that cause; the other checks do not fail for no reason. Every JSON document validates
against the envelope schema."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from clirun import run_cli
from envelope_schema import validate_envelope
from lab.deployment import Lab


@dataclass
class Expect:
    scenario: str
    check: str
    status: str
    says: tuple[str, ...]
    also: frozenset[str] = field(default_factory=frozenset)  # other checks allowed to fail for the same cause
    fix: str = ""
    codes: frozenset[str] = frozenset()  # the codes of the problems the check reports, exactly


SCENARIOS = [
    Expect("coder-crashloop-oom", "coder.pods", "fail", ("CrashLoopBackOff", "OOMKilled", "exit code 137"),
           frozenset({"coder.deployment"}), fix="memory", codes=frozenset({"POD-OOMKILLED"})),
    Expect("coder-scaled-zero", "coder.deployment", "fail", ("scaled to 0",), frozenset({"coder.pods"}),
           codes=frozenset({"COD-SCALED-ZERO"})),
    Expect("coder-rollout-stuck", "coder.deployment", "fail", ("ProgressDeadlineExceeded",),
           frozenset({"coder.pods"}), codes=frozenset({"COD-ROLLOUT-STUCK"})),
    Expect("coder-imagepull", "coder.pods", "fail", ("ImagePullBackOff",), frozenset({"coder.deployment"}),
           fix="image", codes=frozenset({"POD-IMAGE-PULL"})),
    Expect("postgres-pvc-pending", "postgres.pvc", "fail", ("Pending", "ProvisioningFailed", "longhorn"),
           frozenset({"postgres.statefulset", "database.connect", "database.url"}),
           codes=frozenset({"PG-PVC-NOT-BOUND"})),
    Expect("lb-pending", "service.coder", "fail", ("no address", "pending"), codes=frozenset({"SVC-LB-PENDING"})),
    Expect("lb-ip-outside-pool", "service.coder", "fail", ("192.168.90.5", "outside", "192.168.80.100"),
           codes=frozenset({"SVC-LB-OUTSIDE-POOL"})),
    Expect("ingress-short-timeouts", "ingress.timeouts", "fail", ("proxy-read-timeout is 60", "proxy-send-timeout"),
           fix="3600", codes=frozenset({"ING-TIMEOUT-SHORT", "ING-TIMEOUT-UNSET"})),
    Expect("db-wrong-host", "secret.consistency", "fail", ("coder-postgresql", "coder-coder-postgresql"),
           codes=frozenset({"DB-HOST-NO-SERVICE"})),
    Expect("db-sslmode-missing", "database.url", "fail", ("ssl is off", "lib/pq defaults to require"),
           fix="sslmode=disable", codes=frozenset({"DB-SSLMODE-MISMATCH"})),
    Expect("db-password-drift", "database.connect", "fail", ("password authentication failed",),
           fix="Bitnami", codes=frozenset({"DB-PASSWORD-DRIFT"})),
    Expect("infisical-sync-failing", "infisical.sync", "fail", ("Failed to sync secrets",),
           codes=frozenset({"INFISICAL-SYNC-FAILING"})),
    Expect("infisical-token-missing", "infisical.token", "fail", ("infisical-service-token", "not found"),
           frozenset({"infisical.sync"}), codes=frozenset({"INFISICAL-CREDENTIALS-MISSING"})),
    Expect("access-url-mismatch", "coder.env", "fail", ("code.xuperson.org",),
           frozenset({"ingress.access"}), codes=frozenset({"COD-ACCESS-HOST-NO-INGRESS"})),
    Expect("forbidden-pods", "coder.pods", "error", ("list", "pods", "forbidden"),
           codes=frozenset({"KUBE-FORBIDDEN"})),
    Expect("flux-not-ready", "flux.ready", "fail", ("HelmRelease coder/coder not ready", "install retries exhausted"),
           codes=frozenset({"FLUX-NOT-READY"})),
    Expect("ingress-vulnerable-controller", "ingress.controller", "warn", ("CVE-2025-1974", "v1.11.2"),
           codes=frozenset({"ING-CVE-2025-1974"})),
]


def run_verify(lab: Lab, *more: str) -> tuple[int, dict[str, Any]]:
    r = run_cli(*lab.verify(*more))
    lab.assert_no_secrets(r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    validate_envelope(doc)
    return r.code, doc


@pytest.mark.parametrize("expect", SCENARIOS, ids=lambda e: e.scenario)
def test_scenario_fails_its_check(lab: Lab, expect: Expect) -> None:
    lab.scenario(expect.scenario)
    code, doc = run_verify(lab)
    checks = {c["id"]: c for c in doc["checks"]}
    got = checks[expect.check]
    assert got["status"] == expect.status, got
    for needle in expect.says:
        assert needle in got["detail"], (needle, got["detail"])
    if expect.fix:
        assert expect.fix in (got["remediation"] or ""), got["remediation"]
    assert {p["code"] for p in got["problems"]} == expect.codes, got["problems"]
    for problem in got["problems"]:
        assert problem["evidence"] and problem["fix"], problem
    unexpected = {cid: c["detail"] for cid, c in checks.items()
                  if c["status"] in ("fail", "error") and cid != expect.check and cid not in expect.also}
    assert unexpected == {}
    assert code == (0 if expect.status == "warn" else 1)


def test_healthy_lab_validates_and_has_no_fail_or_error(lab: Lab) -> None:
    code, doc = run_verify(lab)
    assert {c["status"] for c in doc["checks"]} <= {"ok", "warn", "skip"}
    assert code == 0


def test_strict_makes_warnings_fail(lab: Lab) -> None:
    lab.scenario("ingress-vulnerable-controller")
    code, _ = run_verify(lab, "--strict")
    assert code == 1


def test_only_and_skip(lab: Lab) -> None:
    _, doc = run_verify(lab, "--only", "secrets", "--skip", "infisical.token")
    ids = [c["id"] for c in doc["checks"]]
    assert ids == ["secret.database", "secret.consistency", "infisical.sync", "infisical.values"]
