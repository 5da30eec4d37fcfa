"""What doctor works with: signals (evidence gathered beside the checks) and findings (root causes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITIES: tuple[str, ...] = ("critical", "fail", "error", "warn")
"""Finding severities, most severe first. `critical`: Coder is down for everyone; `fail`: a part of it is
broken; `error`: something could not be looked at; `warn`: it works, at a risk or degraded."""

RANK: dict[str, int] = {s: len(SEVERITIES) - i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Signal:
    """One piece of evidence gathered beside the checks (a log line, an event, a condition, one of Coder's
    health codes, the ingress's answer), named by a code the causal rules match, like a problem's code."""

    code: str
    source: str
    line: str
    severity: str = ""
    """Set when the signal is a fault on its own (one of Coder's health codes): unexplained, it becomes a
    finding under its own code; signals without a severity only support or fire rules."""

    def evidence(self) -> str:
        return f"{self.source}: {self.line}"

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "source": self.source, "line": self.line}


@dataclass
class Finding:
    code: str
    title: str
    severity: str
    evidence: list[str] = field(default_factory=list)
    fix: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    consequences: list[str] = field(default_factory=list)
    chain: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "title": self.title, "severity": self.severity, "chain": self.chain,
                "evidence": list(self.evidence), "fix": list(self.fix), "checks": list(self.checks),
                "consequences": list(self.consequences)}
