"""Turning check results and signals into findings with the causal table (rules.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from coderctl.checks.base import CheckResult, Status
from coderctl.doctor.model import RANK, Finding, Signal
from coderctl.doctor.rules import RULES, Rule
from coderctl.doctor.signatures import CODER_CODES
from coderctl.problems import CODES, Problem

BAD = frozenset({Status.WARN, Status.FAIL, Status.ERROR})
PROBLEM_SEVERITY = {"fail": "fail", "error": "error", "warn": "warn"}


@dataclass(frozen=True)
class Occurrence:
    """One cause that was seen: a check's problem, or a signal."""

    code: str
    check: str | None
    problem: Problem | None = None
    signal: Signal | None = None

    def evidence(self) -> list[str]:
        if self.signal is not None:
            return [self.signal.evidence()]
        assert self.problem is not None
        return [f"{self.check}: {self.problem.code}: {self.problem.message}",
                *(f"{self.check}: {line}" for line in self.problem.evidence)]

    def fix(self) -> list[str]:
        return list(self.problem.fix) if self.problem is not None else []


def occurrences(results: Iterable[CheckResult], signals: Iterable[Signal]) -> list[Occurrence]:
    found = [Occurrence(p.code, r.id, problem=p) for r in results if r.status in BAD for p in r.problems]
    return found + [Occurrence(s.code, None, signal=s) for s in signals]


def _explained(occ: Occurrence, explained: set[str]) -> bool:
    return occ.code in explained or f"{occ.code}@{occ.check}" in explained


def _matches(cause: str, occ: Occurrence) -> bool:
    code, _, check = cause.partition("@")
    return occ.code == code and (not check or occ.check == check)


class _Names(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def _fill(template: str, names: Mapping[str, str]) -> str:
    return template.format_map(_Names(names))


FOUND_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "db_user": (("database.roles", "user"), ("database.connect", "user")),
    "db_owner": (("database.roles", "owner"),),
    "db_name": (("database.roles", "database"), ("database.connect", "database")),
}
"""Names the fixes use that only the checks know, as (check id, data key) in order of preference: the database
URL's user is `coder_a` under rotate-secrets --strategy alternate, not the chart's `coder`."""


def found_names(results: Iterable[CheckResult], names: Mapping[str, str]) -> dict[str, str]:
    """`names`, completed with what the checks found (a name given wins)."""
    data = {r.id: r.data for r in results}
    found: dict[str, str] = {}
    for name, sources in FOUND_NAMES.items():
        value = next((data[cid][key] for cid, key in sources if data.get(cid, {}).get(key)), None)
        if value is not None:
            found[name] = str(value)
    return {**found, **names}


def diagnose(results: list[CheckResult], signals: list[Signal], names: Mapping[str, str],
             rules: tuple[Rule, ...] = RULES) -> list[Finding]:
    """The root causes, most severe first (then in the table's order); every failing check is either a
    cause of a finding (`checks`) or folded under one as a consequence, or is its own finding."""
    names = found_names(results, names)
    seen = occurrences(results, signals)
    explained: set[str] = set()
    fired: list[tuple[Rule, list[Occurrence]]] = []
    for rule in rules:
        hits = [o for o in seen if any(_matches(c, o) for c in rule.causes)]
        if all(_explained(o, explained) for o in hits):
            continue
        hits += [o for o in seen if any(_matches(c, o) for c in rule.claims) and o.problem is not None
                 and o not in hits]
        support = [o for o in seen if o not in hits and (o.code in rule.supports
                                                         or (o.signal is not None and o.code in rule.explains))]
        fired.append((rule, hits + support))
        explained.update(rule.explains, rule.causes, rule.claims)
    findings: list[Finding] = []
    taken: set[str] = set()
    for rule, hits in sorted(fired, key=lambda fh: -RANK[fh[0].severity]):
        finding = _finding(rule, hits, results, names, taken)
        taken.update(finding.checks, finding.consequences)
        findings.append(finding)
    claimed: set[str] = {o.check for _, hits in fired for o in hits if o.check} | {
        cid for f in findings for cid in f.consequences}
    findings += _leftovers(results, seen, explained, claimed)
    order = {f.code: i for i, f in enumerate(findings)}
    return sorted(findings, key=lambda f: (-RANK[f.severity], order[f.code]))


def _finding(rule: Rule, hits: list[Occurrence], results: list[CheckResult], names: Mapping[str, str],
             taken: set[str]) -> Finding:
    cause_checks = sorted({o.check for o in hits if o.check
                           and any(_matches(c, o) for c in (*rule.causes, *rule.claims))})
    evidence: list[str] = []
    fix = [_fill(line, names) for line in rule.fix]
    for occ in hits:
        for line in occ.evidence():
            if line not in evidence:
                evidence.append(line)
        for line in occ.fix():
            if line not in fix:
                fix.append(line)
    return Finding(rule.code, rule.title, rule.severity, evidence, fix, cause_checks,
                   consequences(rule, results, set(cause_checks) | taken), _fill(rule.chain, names))


def consequences(rule: Rule, results: list[CheckResult], exclude: set[str]) -> list[str]:
    """The failing checks this rule explains: every problem they report is explained by the rule (a check
    that failed without a problem is explained when the rule names its id)."""
    allowed = {*rule.explains, *rule.claims, *rule.causes}
    folded = []
    for r in results:
        if r.status not in BAD or r.id in exclude:
            continue
        if r.problems:
            if all(p.code in allowed or f"{p.code}@{r.id}" in allowed for p in r.problems):
                folded.append(r.id)
        elif r.id in allowed:
            folded.append(r.id)
    return folded


def _leftovers(results: list[CheckResult], seen: list[Occurrence], explained: set[str],
               claimed: set[str]) -> list[Finding]:
    """A problem no rule covers is its own finding, under its problem code; a check that could not run, with
    no problem to say why, is gathered into one CHECKS-DID-NOT-RUN finding."""
    by_code: dict[str, Finding] = {}
    for occ in seen:
        if occ.problem is None or _explained(occ, explained):
            continue
        entry = CODES.get(occ.code)
        finding = by_code.setdefault(occ.code, Finding(
            occ.code, entry.title if entry else occ.problem.message, PROBLEM_SEVERITY[occ.problem.severity.value]))
        if occ.check and occ.check not in finding.checks:
            finding.checks.append(occ.check)
        finding.evidence += [e for e in occ.evidence() if e not in finding.evidence]
        finding.fix += [f for f in occ.fix() if f not in finding.fix]
    for occ in seen:
        sig = occ.signal
        if sig is None or not sig.severity or _explained(occ, explained):
            continue
        meaning = CODER_CODES.get(sig.code.removeprefix("CODER-"), sig.line)
        finding = by_code.setdefault(sig.code, Finding(sig.code, f"Coder's health check: {meaning}", sig.severity))
        finding.evidence.append(sig.evidence())
        if not finding.fix:
            finding.fix.append(f"https://coder.com/docs/admin/monitoring/health-check#{sig.code.removeprefix('CODER-').lower()}")
    silent = [r for r in results if r.status is Status.ERROR and not r.problems and r.id not in claimed
              and r.id not in explained]
    found = list(by_code.values())
    if silent:
        found.append(Finding("CHECKS-DID-NOT-RUN", "Some checks could not look", "error",
                             [f"{r.id}: {r.detail.splitlines()[0] if r.detail else 'no detail'}" for r in silent],
                             ["run again with a longer --timeout or --deadline; -v shows each check's detail"],
                             [r.id for r in silent]))
    return found
