"""Problems: what a check found wrong, as data with a stable code.

A check reports the problems it found; its status is that of the worst one. Each problem is made from a
registered `Code` (meaning and documented fix, listed in docs/problems.md), with the message, the evidence
(objects, fields, observed values) and the exact fix for this deployment (commands or edits with the real
names). Codes are a contract: a renamed code is a breaking change. doctor correlates problems by code,
never by their prose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    """The check could not look (forbidden, unreachable): nothing is known about what it checks."""


RANK: dict[Severity, int] = {Severity.WARN: 1, Severity.ERROR: 2, Severity.FAIL: 3}

CODE_SHAPE = re.compile(r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+$")


@dataclass(frozen=True)
class Problem:
    code: str
    severity: Severity
    message: str
    evidence: tuple[str, ...] = ()
    fix: tuple[str, ...] = ()
    coder_code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "evidence": list(self.evidence),
            "fix": list(self.fix),
            "coder_code": self.coder_code,
        }

    def redacted(self, redact: Any) -> Problem:
        """This problem with every text passed through `redact` (a Redactor)."""
        return Problem(self.code, self.severity, redact(self.message), tuple(redact(e) for e in self.evidence),
                       tuple(redact(f) for f in self.fix), self.coder_code)


@dataclass(frozen=True)
class Code:
    """A registered problem code: what it means and how it is fixed in general, for docs/problems.md.

    Calling it makes a Problem for one occurrence: `DB_HOST_NO_SERVICE("...", evidence=[...], fix=[...])`.
    """

    code: str
    severity: Severity
    title: str
    meaning: str
    fix: str
    check: str = ""
    coder_code: str | None = None
    evidence: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __call__(self, message: str, *, evidence: Iterable[str] = (), fix: Iterable[str] = (),
                 severity: Severity | None = None) -> Problem:
        return Problem(self.code, severity or self.severity, message, tuple(evidence), tuple(fix), self.coder_code)


CODES: dict[str, Code] = {}
"""Every problem code coderctl can raise, by code; filled as the modules that define them are imported."""


def code(code: str, severity: Severity | str, title: str, *, meaning: str, fix: str, check: str = "",
         evidence: str = "", coder_code: str | None = None) -> Code:
    """Register a problem code. `meaning`, `evidence` and `fix` are the documentation of the code."""
    if not CODE_SHAPE.match(code):
        raise ValueError(f"problem code {code!r} is not UPPER-KEBAB-CASE")
    if code in CODES:
        raise ValueError(f"problem code {code} registered twice")
    registered = Code(code, Severity(severity), title, meaning, fix, check, coder_code, evidence)
    CODES[code] = registered
    return registered


def worst(problems: Iterable[Problem]) -> Severity | None:
    ranked = sorted(problems, key=lambda p: RANK[p.severity], reverse=True)
    return ranked[0].severity if ranked else None
