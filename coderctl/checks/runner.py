"""Run checks concurrently under one deadline.

Each check runs in its own daemon thread: checks are I/O bound, a hung one cannot be interrupted, and a
daemon thread left behind by the deadline does not keep the process alive. A check waits for the checks
it needs; when one of them did not pass, it is skipped with the reason instead of failing again for the
same cause.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from coderctl.checks.base import PASSING, Check, CheckResult, Outcome, Status
from coderctl.checks.errors import outcome_for
from coderctl.errors import UsageError

if TYPE_CHECKING:
    from coderctl.context import App


class _Run:
    def __init__(self, checks: list[Check], app: "App", check_timeout: float, deadline: float) -> None:
        self.checks = {c.id: c for c in checks}
        self.app = app
        self.check_timeout = check_timeout
        self.deadline = deadline
        self.results: dict[str, CheckResult] = {}
        self.started: dict[str, float] = {}
        self.done = {c.id: threading.Event() for c in checks}
        self.lock = threading.Condition()
        self.fatal: BaseException | None = None

    def record(self, check: Check, outcome: Outcome, duration: float) -> None:
        with self.lock:
            if check.id in self.results:
                return
            self.results[check.id] = CheckResult(
                id=check.id, category=check.category, title=check.title, status=outcome.status,
                detail=outcome.detail, remediation=outcome.remediation, duration_s=duration, data=outcome.data,
            )
            self.done[check.id].set()
            self.lock.notify_all()

    def worker(self, check: Check) -> None:
        for need in check.needs:
            if need not in self.done:
                continue
            self.done[need].wait(max(0.0, self.deadline - time.monotonic()))
            with self.lock:
                dep = self.results.get(need)
            if dep is None or dep.status not in PASSING:
                why = "did not finish" if dep is None else dep.status.value
                self.record(check, Outcome(Status.SKIP, f"skipped: {need} {why}"), 0.0)
                return
        start = time.monotonic()
        with self.lock:
            self.started[check.id] = start
        try:
            outcome = check.fn(self.app)
        except UsageError as exc:
            with self.lock:
                self.fatal = self.fatal or exc
            outcome = outcome_for(exc)
        except Exception as exc:  # a check that raises becomes an error result, never a crash
            outcome = outcome_for(exc)
        outcome.detail = self.app.redact(outcome.detail)
        if outcome.remediation:
            outcome.remediation = self.app.redact(outcome.remediation)
        self.record(check, outcome, time.monotonic() - start)

    def expire(self, now: float) -> None:
        """Turn checks past their own timeout, or everything past the deadline, into errors."""
        for cid, check in self.checks.items():
            if cid in self.results:
                continue
            began = self.started.get(cid)
            if now >= self.deadline:
                self.record(check, Outcome(Status.ERROR, "did not finish before the overall deadline"),
                            now - began if began else 0.0)
            elif began is not None and now - began >= self.check_timeout:
                self.record(check, Outcome(Status.ERROR, f"timed out after {self.check_timeout:g}s"),
                            now - began)


def run_checks(
    checks: Iterable[Check],
    app: "App",
    *,
    check_timeout: float,
    deadline: float,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run every check and return one result per check, in the order given."""
    selected = list(checks)
    run = _Run(selected, app, check_timeout, time.monotonic() + deadline)
    for check in selected:
        threading.Thread(target=run.worker, args=(check,), name=f"check {check.id}", daemon=True).start()
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
