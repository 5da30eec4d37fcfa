"""Run checks concurrently under one deadline.

Every check starts at once, each in its own daemon thread: checks are I/O bound, a hung one cannot be
interrupted, and a daemon thread left behind by the deadline does not keep the process alive. A check
that needs others still starts at once (checks only read, so running one early is harmless), but its
result is published only when what it needs passed; when a need did not pass, the check is reported as
skipped with the reason, at that moment, without waiting for it. So dependencies cost no wall time and
one cause is reported once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coderctl.checks.base import PASSING, Check, CheckResult, Outcome, Status
from coderctl.checks.errors import outcome_for
from coderctl.errors import ConfigError

if TYPE_CHECKING:
    from coderctl.context import App


class _Run:
    def __init__(self, checks: list[Check], app: App, check_timeout: float, deadline: float) -> None:
        self.checks = {c.id: c for c in checks}
        self.app = app
        self.check_timeout = check_timeout
        self.deadline = deadline
        self.started = time.monotonic()
        self.finished: dict[str, tuple[Outcome, float]] = {}
        self.results: dict[str, CheckResult] = {}
        self.lock = threading.Condition()
        self.fatal: BaseException | None = None
        self.go = threading.Event()

    def worker(self, check: Check) -> None:
        self.go.wait()
        start = time.monotonic()
        try:
            outcome = check.fn(self.app)
        except ConfigError as exc:
            with self.lock:
                self.fatal = self.fatal or exc
            outcome = outcome_for(exc)
        except Exception as exc:  # a check that raises becomes an error result, never a crash
            outcome = outcome_for(exc)
        outcome.detail = self.app.redact(outcome.detail)
        if outcome.remediation:
            outcome.remediation = self.app.redact(outcome.remediation)
        outcome.problems = [p.redacted(self.app.redact) for p in outcome.problems]
        with self.lock:
            self.finished[check.id] = (outcome, time.monotonic() - start)
            self.publish()
            self.lock.notify_all()

    def record(self, check: Check, outcome: Outcome, duration: float) -> None:
        self.results[check.id] = CheckResult(
            id=check.id, category=check.category, title=check.title, status=outcome.status,
            detail=outcome.detail, remediation=outcome.remediation, duration_s=duration, data=outcome.data,
            problems=outcome.problems,
        )

    def publish(self) -> None:
        """Publish every result whose needs are settled, until nothing changes (skips cascade)."""
        changed = True
        while changed:
            changed = False
            for cid, check in self.checks.items():
                if cid in self.results:
                    continue
                needs = [n for n in check.needs if n in self.checks]
                failed = [n for n in needs if n in self.results and self.results[n].status not in PASSING]
                if failed:
                    self.record(check, Outcome(Status.SKIP, f"skipped: {failed[0]} "
                                                            f"{self.results[failed[0]].status.value}"), 0.0)
                    changed = True
                elif all(n in self.results for n in needs) and cid in self.finished:
                    self.record(check, *self.finished[cid])
                    changed = True

    def expire(self, now: float) -> None:
        """Checks past their own timeout, or everything past the deadline, become errors."""
        for cid in self.checks:
            if cid in self.results or cid in self.finished:
                continue
            if now >= self.deadline:
                self.finished[cid] = (Outcome(Status.ERROR, "did not finish before the overall deadline"),
                                      now - self.started)
            elif now - self.started >= self.check_timeout:
                self.finished[cid] = (Outcome(Status.ERROR, f"timed out after {self.check_timeout:g}s"),
                                      now - self.started)
        self.publish()


def run_checks(
    checks: Iterable[Check],
    app: App,
    *,
    check_timeout: float,
    deadline: float,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run every check and return one result per check, in the order given."""
    selected = list(checks)
    run = _Run(selected, app, check_timeout, time.monotonic() + deadline)
    # Every thread is started before any check runs: Thread.start() waits for the new thread to be scheduled,
    # and with checks already busy each start would queue behind the GIL's switch interval.
    for check in selected:
        threading.Thread(target=run.worker, args=(check,), name=f"check {check.id}", daemon=True).start()
    run.started = time.monotonic()
    run.go.set()
    reported: set[str] = set()
    with run.lock:
        while True:
            if on_result:
                for cid in [c for c in run.results if c not in reported]:
                    reported.add(cid)
                    on_result(run.results[cid])
            if len(run.results) == len(selected):
                break
            run.lock.wait(0.05)
            run.expire(time.monotonic())
    if run.fatal is not None:
        raise run.fatal
    return [run.results[c.id] for c in selected]


CHECKED = frozenset({Status.OK, Status.WARN, Status.FAIL})
"""A check that ended so looked at what it checks; `skip` and `error` did not."""


@dataclass(frozen=True)
class Unchecked:
    """A category of which checks were selected but none could look: the run is not healthy."""

    category: str
    checks: tuple[str, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"category": self.category, "checks": list(self.checks), "reason": self.reason}


def unchecked(results: list[CheckResult]) -> list[Unchecked]:
    """Every category among `results` in which no check ended ok, warn or fail, with the commonest reason
    its checks gave (a skip's reason first: it names what was missing, such as --access-url)."""
    by_category: dict[str, list[CheckResult]] = {}
    for r in results:
        by_category.setdefault(r.category, []).append(r)
    found: list[Unchecked] = []
    for category, members in by_category.items():
        if any(r.status in CHECKED for r in members):
            continue
        skipped = [r.detail for r in members if r.status is Status.SKIP]
        details = skipped or [r.detail for r in members]
        reason = Counter(d.splitlines()[0] if d else "no reason given" for d in details).most_common(1)[0][0]
        found.append(Unchecked(category, tuple(r.id for r in members), reason))
    return found
