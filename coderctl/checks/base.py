"""What a check is and what it returns. Results are plain data; printing them is render.py's job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from coderctl.problems import Problem, worst

if TYPE_CHECKING:
    from coderctl.context import App

CATEGORIES: tuple[str, ...] = ("cluster", "secrets", "database", "network", "dns")


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


PASSING = frozenset({Status.OK, Status.WARN})


@dataclass
class Outcome:
    """What a check function returns; the runner adds id, title and timing."""

    status: Status
    detail: str
    remediation: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


class Conclusion(Exception):
    """Raised by a helper that already knows a check's outcome (no access URL, say), so the check function
    does not have to pass it up by hand; the runner reports the outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


class SkipCheck(Exception):
    """Raised inside a check when what it reads is missing for a reason another check reports."""


def found(problems: list[Problem], ok_detail: str, **data: Any) -> Outcome:
    """The outcome of a check that looked and found `problems` (none: ok with `ok_detail`).

    The status is that of the worst problem; the detail joins the messages, the remediation the fixes.
    """
    severity = worst(problems)
    if severity is None:
        return Outcome(Status.OK, ok_detail, None, data)
    fixes = list(dict.fromkeys(f for p in problems for f in p.fix))
    return Outcome(Status(severity.value), "; ".join(p.message for p in problems), "\n".join(fixes) or None, data,
                   list(problems))


def ok(detail: str, **data: Any) -> Outcome:
    return Outcome(Status.OK, detail, None, data)


def warn(detail: str, remediation: str | None = None, **data: Any) -> Outcome:
    return Outcome(Status.WARN, detail, remediation, data)


def fail(detail: str, remediation: str | None = None, **data: Any) -> Outcome:
    return Outcome(Status.FAIL, detail, remediation, data)


def skip(detail: str, **data: Any) -> Outcome:
    return Outcome(Status.SKIP, detail, None, data)


def error(detail: str, remediation: str | None = None, **data: Any) -> Outcome:
    return Outcome(Status.ERROR, detail, remediation, data)


@dataclass
class CheckResult:
    id: str
    category: str
    title: str
    status: Status
    detail: str
    remediation: str | None = None
    duration_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "title": self.title,
            "status": self.status.value,
            "detail": self.detail,
            "remediation": self.remediation,
            "duration_s": round(self.duration_s, 3),
            "data": self.data,
            "problems": [p.as_dict() for p in self.problems],
        }


CheckFn = Callable[["App"], Outcome]


@dataclass(frozen=True)
class Check:
    id: str
    category: str
    title: str
    fn: CheckFn
    needs: tuple[str, ...] = ()
    uses_cluster: bool = True
    reads: str = ""
    modules: tuple[str, ...] = ()


REGISTRY: dict[str, Check] = {}


def check(
    id: str, category: str, title: str, *, needs: tuple[str, ...] = (), uses_cluster: bool = True, reads: str = "",
    modules: tuple[str, ...] = (),
) -> Callable[[CheckFn], CheckFn]:
    """Register a check function under a stable id.

    `modules` are heavy libraries the check imports: they are imported once before the checks start,
    so an import neither serialises concurrent checks behind the import lock nor counts against a timeout.
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category}")

    def register(fn: CheckFn) -> CheckFn:
        if id in REGISTRY:
            raise ValueError(f"check id {id} registered twice")
        REGISTRY[id] = Check(id, category, title, fn, needs, uses_cluster, reads or (fn.__doc__ or "").strip(),
                             modules)
        return fn

    return register
