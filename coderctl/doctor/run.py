"""One doctor run: the checks and the evidence gatherers start together and share one deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from coderctl.checks.base import Check, CheckResult
from coderctl.doctor.diagnose import diagnose
from coderctl.doctor.evidence import Evidence, finish, observed_memory, start
from coderctl.doctor.model import Finding, Signal

if TYPE_CHECKING:
    from coderctl.context import App


@dataclass
class Report:
    started_at: datetime
    duration_s: float
    results: list[CheckResult]
    evidence: Evidence
    findings: list[Finding]

    @property
    def unhealthy(self) -> bool:
        return bool(self.findings)


def names(app: App, signals: list[Signal] | None = None) -> dict[str, str]:
    """The real names the fixes use, from the effective settings (and what discovery tells), and what the
    evidence measured."""
    s = app.settings
    token = str(s.infisical_token_secret or "infisical-operator/infisical-service-token")
    token_ns, _, token_name = token.partition("/")
    access = str(s.access_url or "")
    host = access.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0] if access else "<access host>"
    wildcard = str(s.wildcard_url or "").lstrip("*.").split(":", 1)[0] or host.partition(".")[2]
    return {
        "ns": app.namespace, "deployment": str(s.coder_deployment), "container": str(s.coder_container),
        "coder_service": str(s.coder_service), "pg_service": str(s.postgres_service),
        "pg_statefulset": str(s.postgres_statefulset), "pg_pod": str(s.postgres_pod),
        "pg_container": str(s.postgres_container), "pvc": f"data-{s.postgres_pod}",
        "db_secret": str(s.database_secret), "infisical_secret": str(s.infisical_secret),
        "token_secret_ns": token_ns or "infisical-operator", "token_secret": token_name or "infisical-service-token",
        "ingress": str(s.access_ingress), "wildcard_ingress": str(s.wildcard_ingress),
        "ingress_ns": str(s.ingress_namespace), "controller": str(s.ingress_controller),
        "env": str(s.infisical_environment or "prod"), "path": str(s.infisical_path or "/"),
        "access_host": host, "wildcard_domain": wildcard, "flux_ns": str(s.flux_namespace),
        "metallb_ns": str(s.metallb_namespace), "metallb_pool": str(s.metallb_pool),
        "expected_ip": str(s.expected_coder_ip), "expected_version": str(s.expected_coder_version),
        "memory_limit": str(s.coder_limits_memory), "storage_class": str(s.storage_class),
        "observed_memory": observed_memory(signals or []) or "unknown (no OOMKilling event gave it; "
                                                             "kubectl top pod needs metrics-server)",
    }


def run(app: App, checks: list[Check], *, check_timeout: float, deadline: float, since_s: float) -> Report:
    from coderctl.checks.runner import run_checks

    started_at, start_t = datetime.now(UTC), time.monotonic()
    ev, threads = start(app, since_s)
    results = run_checks(checks, app, check_timeout=check_timeout, deadline=deadline)
    evidence = finish(ev, threads, start_t + deadline)
    found = diagnose(results, evidence.signals, names(app, evidence.signals))
    found += _unchecked(results, {cid for f in found for cid in (*f.checks, *f.consequences)})
    findings = [_redacted(app, f) for f in found]
    return Report(started_at, time.monotonic() - start_t, results, evidence, findings)


def _redacted(app: App, finding: Finding) -> Finding:
    doc: Any = app.redact.deep(finding.as_dict())
    return Finding(doc["code"], doc["title"], doc["severity"], doc["evidence"], doc["fix"], doc["checks"],
                   doc["consequences"], doc["chain"])


def _unchecked(results: list[CheckResult], explained: set[str]) -> list[Finding]:
    """A category in which no check could look is not healthy (as for verify), unless a finding already
    explains why (the database checks cannot log in to a PostgreSQL whose volume is pending): one finding
    per reason."""
    from coderctl.checks.runner import unchecked

    reasons: dict[str, list[str]] = {}
    for u in unchecked(results):
        if set(u.checks) <= explained | {r.id for r in results if r.status.value == "skip"} and \
                set(u.checks) & explained:
            continue
        reasons.setdefault(u.reason, []).extend(u.checks)
    return [Finding("NOTHING-CHECKED", f"Nothing could be checked: {reason}", "error",
                    [f"{cid}: not checked" for cid in checks[:5]],
                    ["give what is missing (e.g. --access-url, a kubeconfig with read access) and run doctor again"],
                    checks) for reason, checks in reasons.items()]
