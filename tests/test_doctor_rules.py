"""Each causal rule alone, on problem data: its cause gives exactly its finding; with every failure it
explains present as well, still exactly one finding, with those failures folded under it. And the table
holds together: codes are unique, documented, and no rule explains the cause of a rule read before it."""

from __future__ import annotations

import pytest

import coderctl.checks.registry  # noqa: F401  (registers every problem code)
from coderctl.checks.base import CheckResult, Status
from coderctl.doctor.diagnose import diagnose
from coderctl.doctor.model import SEVERITIES, Signal
from coderctl.doctor.rules import RULES, Rule
from coderctl.problems import CODES, Severity

NAMES = {"ns": "coder", "pg_service": "coder-coder-postgresql", "deployment": "coder"}


def _check_of(code: str) -> str:
    return (CODES[code].check.split(",")[0].strip() or "x.check") if "." in CODES[code].check else "x.check"


def result(check: str, *codes: str) -> CheckResult:
    problems = [CODES[c](f"{c} seen", evidence=[f"evidence of {c}"], fix=[f"fix for {c}"]) for c in codes]
    status = Status.FAIL if any(p.severity is Severity.FAIL for p in problems) else (
        Status.ERROR if not problems or any(p.severity is Severity.ERROR for p in problems) else Status.WARN)
    return CheckResult(check, "cluster", check, status, "; ".join(p.message for p in problems) or "could not run",
                       problems=problems)


def world(codes: list[str], unique: str = "") -> tuple[list[CheckResult], list[Signal]]:
    """Checks and signals showing `codes`: a problem code in a check of its own (named after the code, so
    each stands alone), a check id as a check that errored without a problem, anything else as a signal."""
    results, signals = [], []
    for i, entry in enumerate(codes):
        code, _, check = entry.partition("@")
        if code in CODES:
            results.append(result(check or f"{_check_of(code)}{unique}.{i}", code))
        elif "." in code:
            results.append(result(code))
        else:
            signals.append(Signal(code, f"source of {code}", f"line of {code}"))
    return results, signals


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_each_cause_alone_gives_the_rule(rule: Rule) -> None:
    for cause in rule.causes:
        results, signals = world([cause])
        findings = diagnose(results, signals, NAMES, rules=RULES)
        assert [f.code for f in findings] == [rule.code], (cause, [f.code for f in findings])
        finding = findings[0]
        assert finding.severity == rule.severity and finding.title == rule.title
        assert finding.evidence and finding.fix, finding
        if cause.partition("@")[0] in CODES:
            assert finding.checks == [results[0].id]
            assert "fix for" in " ".join(finding.fix)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_what_a_rule_explains_is_folded_under_it(rule: Rule) -> None:
    results, signals = world([rule.causes[0], *rule.explains])
    findings = diagnose(results, signals, NAMES, rules=RULES)
    assert [f.code for f in findings] == [rule.code], [f.code for f in findings]
    folded = {r.id for r in results[1:]} - set(findings[0].checks)
    assert folded <= set(findings[0].consequences), folded - set(findings[0].consequences)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_a_rule_alone_without_its_cause_does_not_fire(rule: Rule) -> None:
    explained_only = [c for c in rule.explains if c not in {x.partition("@")[0] for r in RULES for x in r.causes}]
    results, signals = world(explained_only)
    assert rule.code not in [f.code for f in diagnose(results, signals, NAMES, rules=RULES)]


def test_an_independent_fault_is_its_own_finding_more_severe_first() -> None:
    results, signals = world(["ING-TIMEOUT-SHORT", "DB-HOST-NO-SERVICE", "POD-CRASHLOOP", "HTTP-HEALTHZ-STATUS"])
    findings = diagnose(results, signals, NAMES)
    assert [f.code for f in findings] == ["DATABASE-HOST-WRONG", "PROXY-TIMEOUT-SHORT"]
    assert set(findings[0].consequences) == {results[2].id, results[3].id}


def test_a_problem_no_rule_names_is_a_finding_under_its_own_code() -> None:
    results, signals = world(["COD-SC-PRIVILEGED"])
    findings = diagnose(results, signals, NAMES)
    assert [(f.code, f.severity, f.checks) for f in findings] == [("COD-SC-PRIVILEGED", "fail", [results[0].id])]
    assert findings[0].fix == ["fix for COD-SC-PRIVILEGED"]


def test_a_coder_health_code_no_rule_names_is_a_finding() -> None:
    findings = diagnose([], [Signal("CODER-EPD01", "Coder health (provisioner_daemons)", "EPD01: none", "warn")],
                        NAMES)
    assert [(f.code, f.severity) for f in findings] == [("CODER-EPD01", "warn")]


def test_nothing_wrong_gives_nothing() -> None:
    ok = CheckResult("coder.pods", "cluster", "pods", Status.OK, "fine")
    assert diagnose([ok], [Signal("EVENT-BACKOFF", "event", "old back-off")], NAMES) == []


def test_the_table_holds_together() -> None:
    codes = [r.code for r in RULES]
    assert len(codes) == len(set(codes))
    assert not set(codes) & set(CODES), "a finding code must not reuse a problem code"
    for i, rule in enumerate(RULES):
        assert rule.severity in SEVERITIES
        assert rule.causes and rule.chain and rule.meaning and rule.fix
        for cause in rule.causes:
            code = cause.partition("@")[0]
            assert code in CODES or code.split("-")[0] in {"LOG", "EVENT", "COND", "CODER", "INGRESS"}, cause
        earlier = {c.partition("@")[0] for r in RULES[:i] for c in r.causes}
        assert not earlier & set(rule.explains), (rule.code, earlier & set(rule.explains))


def _gen_doctor_doc():  # type: ignore[no-untyped-def]
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    try:
        import gen_doctor_doc
    finally:
        sys.path.pop(0)
    return gen_doctor_doc


def test_doctor_doc_is_current() -> None:
    gen = _gen_doctor_doc()
    assert gen.render() == gen.DOC.read_text(), "docs/doctor.md is stale: python scripts/gen_doctor_doc.py"


def test_every_finding_code_is_documented() -> None:
    import re

    text = _gen_doctor_doc().DOC.read_text()
    assert set(re.findall(r"^### (\S+)$", text, re.M)) == {r.code for r in RULES}


def test_fixes_name_the_database_user_the_checks_found() -> None:
    """Under rotate-secrets --strategy alternate the URL's user is a login role: the password-drift fix changes
    its password, not coder's."""
    results, signals = world(["DB-PASSWORD-DRIFT@database.connect"])
    results[0].data = {"user": "coder_a", "database": "coder"}
    fix = "\n".join(diagnose(results, signals, NAMES)[0].fix)
    assert "'\\password coder_a'" in fix and "\\password coder'" not in fix


def test_a_broken_login_role_claims_the_objects_it_made() -> None:
    results, signals = world(["DB-ROLE-NOT-OWNER@database.roles"])
    results[0].problems.append(CODES["DB-OBJECTS-OWNED-ELSEWHERE"]("owned by coder_a", fix=["REASSIGN ..."]))
    results[0].data = {"user": "coder_a", "owner": "coder", "database": "coder"}
    findings = diagnose(results, signals, NAMES)
    assert [f.code for f in findings] == ["DATABASE-ROLE-LAYOUT-BROKEN"]
    assert "REASSIGN ..." in findings[0].fix and findings[0].chain.startswith("the URL's user (coder_a)")
    assert findings[0].fix[0].startswith("make coder_a act as coder")
