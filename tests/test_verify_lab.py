"""verify end to end against the lab: the healthy deployment, and each broken one failing its check."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clirun import run_cli
from lab.deployment import Lab


def verify(lab: Lab, *more: str) -> tuple[int, dict[str, Any], str]:
    r = run_cli(*lab.verify(*more))
    lab.assert_no_secrets(r.stdout, r.stderr)
    assert r.stderr == "" or "Traceback" not in r.stderr
    return r.code, json.loads(r.stdout), r.stderr


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in doc["checks"]}


FOUNDATION = ("cluster.reachable", "coder.deployment", "coder.pods", "http.healthz")


def test_healthy_lab_foundation_checks_ok(lab: Lab) -> None:
    code, doc, _ = verify(lab, *[a for cid in FOUNDATION for a in ()])
    checks = by_id(doc)
    for cid in FOUNDATION:
        assert checks[cid]["status"] == "ok", (cid, checks[cid]["detail"])


def test_healthy_lab_has_no_fail_and_no_error(lab: Lab) -> None:
    code, doc, _ = verify(lab)
    bad = {c["id"]: c["detail"] for c in doc["checks"] if c["status"] in ("fail", "error")}
    assert bad == {}
    assert code == 0


def test_crashloop_oomkilled(lab: Lab) -> None:
    lab.scenario("coder-crashloop-oom")
    code, doc, _ = verify(lab)
    pods = by_id(doc)["coder.pods"]
    assert code == 1
    assert pods["status"] == "fail"
    assert "CrashLoopBackOff" in pods["detail"] and "OOMKilled" in pods["detail"]
    assert "memory" in pods["remediation"]
    assert [p["code"] for p in pods["problems"]] == ["POD-OOMKILLED"]
    assert [p["code"] for p in by_id(doc)["coder.deployment"]["problems"]] == ["COD-REPLICAS-UNAVAILABLE"]
    problem = pods["problems"][0]
    assert problem["severity"] == "fail" and any("restartCount: 7" in e for e in problem["evidence"])
    assert any("memory" in f for f in problem["fix"])


def test_scaled_to_zero(lab: Lab) -> None:
    lab.scenario("coder-scaled-zero")
    code, doc, _ = verify(lab)
    dep = by_id(doc)["coder.deployment"]
    assert code == 1 and dep["status"] == "fail" and "scaled to 0" in dep["detail"]
    assert [p["code"] for p in dep["problems"]] == ["COD-SCALED-ZERO"]
    assert "kubectl -n coder scale deployment/coder --replicas=1" in dep["problems"][0]["fix"]


def test_text_output_shows_codes_and_fixes_and_evidence_with_verbose(lab: Lab) -> None:
    lab.scenario("db-wrong-host")
    plain = run_cli(*lab.args(), "verify", "--only", "secrets", *lab.net_args(), "--access-url", lab.access_url)
    lab.assert_no_secrets(plain.stdout, plain.stderr)
    line = next(x for x in plain.stdout.splitlines() if "secret.consistency" in x)
    assert line.lstrip().startswith("[fail]") and "[DB-HOST-NO-SERVICE] host 'coder-postgresql'" in line
    assert "-> fix: use host coder-coder-postgresql in CODER_DATABASE_URL" in plain.stdout
    assert "-> fix: kubectl -n coder rollout restart deployment/coder" in plain.stdout
    assert "evidence:" not in plain.stdout
    verbose = run_cli(*lab.args("-v"), "verify", "--only", "secrets", *lab.net_args(), "--access-url",
                      lab.access_url)
    lab.assert_no_secrets(verbose.stdout, verbose.stderr)
    assert "evidence: Secret coder/coder-database-secrets key database-url: host coder-postgresql" in verbose.stdout


@pytest.mark.fake_only
def test_text_output_in_every_scenario_keeps_secrets_out(lab: Lab) -> None:
    from lab.kubeapi import scenario_names

    for name in scenario_names():
        lab.kube.apply_scenario(name)
        r = run_cli(*lab.args("-v", "--debug"), "verify", *lab.net_args(), "--access-url", lab.access_url)
        lab.assert_no_secrets(r.stdout, r.stderr)
        assert "Traceback" not in r.stderr


def test_database_login_keeps_the_password_off_the_command_line(lab: Lab) -> None:
    code, doc, _ = verify(lab, "--only", "database")
    assert by_id(doc)["database.connect"]["status"] == "ok"
    assert lab.kube.exec_log, "the login ran through exec"
    lab.assert_no_secrets(*(" ".join(e["command"]) for e in lab.kube.exec_log))
