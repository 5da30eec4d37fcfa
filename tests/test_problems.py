"""Problem codes: every warning and failure carries registered codes, the registry is documented, and the
text output shows codes, fixes and (with -v) evidence."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import coderctl.checks.registry  # noqa: F401  (registers every check and so every code)
from clirun import ROOT, run_cli
from coderctl.checks import cluster, coder, database, errors, flux, ingress, postgres, secrets, services
from coderctl.checks.base import REGISTRY, CheckResult, Status, found
from coderctl.clients.postgres import DatabaseURL
from coderctl.problems import CODES, CODE_SHAPE, RANK, Code, Severity, code
from envelope_schema import validate_envelope
from lab.deployment import Lab
from lab.kubeapi import scenario_names


def _gen_problems_doc():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_problems_doc
    finally:
        sys.path.pop(0)
    return gen_problems_doc


def test_problems_doc_is_current() -> None:
    gen = _gen_problems_doc()
    assert gen.render() == gen.DOC.read_text(), "docs/problems.md is stale: python scripts/gen_problems_doc.py"


def test_codes_in_the_docs_equal_the_registry() -> None:
    text = (ROOT / "docs" / "problems.md").read_text()
    documented = re.findall(r"^### (\S+)$", text, re.M)
    assert len(documented) == len(set(documented))
    assert set(documented) == set(CODES)


def test_every_code_is_complete_and_names_real_checks() -> None:
    for name, entry in CODES.items():
        assert CODE_SHAPE.match(name) and entry.code == name
        assert entry.title and entry.meaning and entry.fix and entry.evidence and entry.check, name
        if entry.coder_code is not None:
            assert re.fullmatch(r"E[A-Z]+\d\d|EUNKNOWN", entry.coder_code), (name, entry.coder_code)
        for part in (p.strip() for p in entry.check.split(",")):
            if "." in part:
                assert part in REGISTRY, (name, part)


def test_a_code_is_registered_once_and_upper_kebab() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        code("KUBE-FORBIDDEN", "error", "t", meaning="m", fix="f")
    with pytest.raises(ValueError, match="UPPER-KEBAB"):
        code("kube_forbidden", "error", "t", meaning="m", fix="f")


def test_status_is_the_worst_problem_and_detail_the_messages() -> None:
    warn = CODES["POD-RESTARTS"]("restarted", evidence=["e"], fix=["f1"])
    fail = CODES["POD-CRASHLOOP"]("crashing", evidence=["e"], fix=["f1", "f2"])
    outcome = found([warn, fail], "fine")
    assert outcome.status == Status.FAIL
    assert outcome.detail == "restarted; crashing"
    assert outcome.remediation == "f1\nf2"
    assert found([], "fine").status == Status.OK and found([], "fine").problems == []


@pytest.mark.parametrize(("error", "expected"), [
    ('FATAL:  password authentication failed for user "coder"', "DB-PASSWORD-DRIFT"),
    ("server does not support SSL, but SSL was required", "DB-SSL-REJECTED"),
    ('FATAL:  database "nosuchdb" does not exist', "DB-ROLE-OR-DATABASE-MISSING"),
    ("FATAL:  sorry, too many clients already", "DB-TOO-MANY-CLIENTS"),
    ('could not translate host name "db" to address: Name or service not known', "DB-HOST-UNRESOLVABLE"),
    ("server closed the connection unexpectedly", "DB-LOGIN-FAILED"),
])
def test_a_failed_login_is_classified_by_its_answer(error: str, expected: str) -> None:
    app = SimpleNamespace(namespace="coder", settings=SimpleNamespace(postgres_pod="coder-coder-postgresql-0",
                                                                      postgres_container="postgresql"))
    kind, fix = database._explain(error, DatabaseURL.parse("postgresql://coder:x@db:5432/coder"), app)  # type: ignore[arg-type]
    assert kind.code == expected and fix


def test_an_unreachable_api_is_its_own_code(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n")
    r = run_cli("--kubeconfig", str(kubeconfig), "-o", "json", "verify", "--only", "cluster")
    reachable = next(c for c in json.loads(r.stdout)["checks"] if c["id"] == "cluster.reachable")
    assert reachable["status"] == "fail"
    assert [p["code"] for p in reachable["problems"]] == ["KUBE-API-UNREACHABLE"]
    assert any(f"127.0.0.1:{port}" in e for e in reachable["problems"][0]["evidence"])


MODULES = (errors, cluster, coder, postgres, services, ingress, flux, secrets, database)
TESTED_ELSEWHERE = {"KUBE-API-UNREACHABLE", "COD-REPLICAS-UNAVAILABLE", "DB-SSL-REJECTED", "DB-TOO-MANY-CLIENTS",
                    "DB-HOST-UNRESOLVABLE", "DB-LOGIN-FAILED", "COD-PG-URL-PLAIN", "COD-PG-URL-OTHER-SECRET",
                    "DB-SSL-UNKNOWN", "KUBE-UNAUTHORIZED"}
"""Codes asserted by tests other than the scenario and finding tables (this file, test_verify_lab.py, the
single tests of test_verify_findings.py)."""
NOT_YET_TESTED = {"DB-CONNECTIONS-NEAR-MAX", "KUBE-UNREACHABLE"}
"""Codes no test raises yet: a new code must not join this list without a reason."""


def test_every_code_of_the_cluster_secrets_and_database_checks_is_raised_by_a_test() -> None:
    from test_verify_findings import CASES
    from test_verify_scenarios import SCENARIOS

    defined = {v.code for m in MODULES for v in vars(m).values() if isinstance(v, Code)}
    asserted = set().union(*(e.codes for e in SCENARIOS), *(c.codes for c in CASES), TESTED_ELSEWHERE)
    assert defined - asserted == NOT_YET_TESTED


def _result(verbose_fix: list[str]) -> CheckResult:
    problems = [
        CODES["COD-SC-NOT-NON-ROOT"]("runAsNonRoot is not true", evidence=["Deployment coder/coder: unset"],
                                     fix=verbose_fix),
        CODES["COD-SC-WRITABLE-ROOT"]("readOnlyRootFilesystem is not true",
                                      evidence=["Deployment coder/coder: false"], fix=verbose_fix),
    ]
    outcome = found(problems, "")
    return CheckResult("coder.security-context", "cluster", "t", outcome.status, outcome.detail,
                       outcome.remediation, 0.1, {}, outcome.problems)


def _render(result: CheckResult, verbose: int) -> str:
    from coderctl import render

    out = io.StringIO()
    render.print_results("verify", [result], 0.1, color=False, verbose=verbose, stream=out)
    return out.getvalue()


def test_text_shows_each_code_with_its_fix_once_and_evidence_only_with_verbose() -> None:
    text = _render(_result(["set coder.securityContext"]), verbose=0)
    lines = text.splitlines()
    assert lines[1].startswith("  [fail]  coder.security-context  [COD-SC-NOT-NON-ROOT] runAsNonRoot is not true")
    assert "      [COD-SC-WRITABLE-ROOT] readOnlyRootFilesystem is not true" in lines
    assert text.count("-> fix: set coder.securityContext") == 1
    assert "evidence:" not in text
    verbose = _render(_result(["set coder.securityContext"]), verbose=1)
    assert "        evidence: Deployment coder/coder: unset" in verbose.splitlines()


@pytest.mark.fake_only
@pytest.mark.parametrize("scenario", ["healthy", *scenario_names()])
def test_every_warning_and_failure_carries_registered_codes(lab: Lab, scenario: str) -> None:
    """On each lab scenario (and the healthy lab), each warn/fail check has problems with registered codes,
    and its status is the severity of its worst problem."""
    if scenario != "healthy":
        lab.scenario(scenario)
    r = run_cli(*lab.verify())
    lab.assert_no_secrets(r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    validate_envelope(doc)
    lacking = []
    for check in doc["checks"]:
        problems = check["problems"]
        if check["status"] in ("ok", "skip"):
            assert problems == [], check
            continue
        if not problems:
            if check["status"] != "error":  # an error without problems: the check raised or timed out
                lacking.append(check["id"])
            continue
        for problem in problems:
            assert problem["code"] in CODES, (check["id"], problem["code"])
            assert problem["message"] and problem["fix"], (check["id"], problem)
        worst = max((Severity(p["severity"]) for p in problems), key=lambda s: RANK[s])
        assert worst.value == check["status"], (check["id"], problems)
    assert lacking == [], "warn/fail checks without problems"
