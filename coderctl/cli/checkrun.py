"""Running a set of checks and reporting them: shared by verify and the probe commands."""

from __future__ import annotations

from typing import TYPE_CHECKING
from datetime import UTC

if TYPE_CHECKING:
    from coderctl.checks.base import Check
    from coderctl.context import App


def run_and_report(app: App, command: str, checks: list[Check], *, check_timeout: float, deadline: float,
                   strict: bool = False) -> int:
    """Run `checks` concurrently, print the results (text or the JSON envelope) and return the exit code:
    1 when a check failed or errored (or warned, with `strict`), else 0."""
    import importlib
    import time
    from datetime import datetime

    from coderctl import render
    from coderctl.checks.base import Status
    from coderctl.checks.runner import run_checks

    if any(c.uses_cluster for c in checks):
        app.kube()  # a missing or invalid kubeconfig is a usage error (exit 2), not a failed check
    for module in sorted({m for c in checks for m in c.modules}):
        importlib.import_module(module)  # startup cost, like the interpreter's: not part of the run's time
    started_at, start = datetime.now(UTC), time.monotonic()
    results = run_checks(checks, app, check_timeout=check_timeout, deadline=deadline)
    duration = time.monotonic() - start
    if app.output == "json":
        render.print_json(render.envelope(command, started_at, duration, summary=render.summary(results),
                                          checks=[app.redact.deep(r.as_dict()) for r in results]))
    else:
        render.print_results(command, results, duration, color=app.color, verbose=app.verbose)
    bad = {Status.FAIL, Status.ERROR} | ({Status.WARN} if strict else set())
    return 1 if any(r.status in bad for r in results) else 0
