"""Running a set of checks and reporting them: shared by verify and the probe commands."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from coderctl.checks.base import Check
    from coderctl.checks.runner import Unchecked
    from coderctl.context import App


def run_and_report(app: App, command: str, checks: list[Check], *, check_timeout: float, deadline: float,
                   strict: bool = False) -> int:
    """Run `checks` concurrently, print the results (text or the JSON envelope) and return the exit code:
    1 when a check failed or errored (or warned, with `strict`), or when a category had checks selected but
    none of them could look (all skipped or errored: a run that checked nothing is not healthy), else 0."""
    import importlib
    import time
    from datetime import datetime

    from coderctl import render
    from coderctl.checks.base import Status
    from coderctl.checks.runner import run_checks, unchecked
    from coderctl.clients.kube import preload

    if any(c.uses_cluster for c in checks):
        app.kube()  # a missing or invalid kubeconfig is a usage error (exit 2), not a failed check
    modules = {m for c in checks for m in c.modules}
    if not (app.settings.access_url and app.settings.wildcard_url):
        preload(app.settings.kubeconfig, app.settings.context)  # checks will ask the cluster for the URLs
    for module in sorted(modules):
        importlib.import_module(module)  # startup cost, like the interpreter's: not part of the run's time
    started_at, start = datetime.now(UTC), time.monotonic()
    results = run_checks(checks, app, check_timeout=check_timeout, deadline=deadline)
    duration = time.monotonic() - start
    blind = unchecked(results)
    if app.output == "json":
        extra = {"unchecked": [app.redact.deep(u.as_dict()) for u in blind]} if blind else {}
        render.print_json(render.envelope(command, started_at, duration, summary=render.summary(results),
                                          checks=[app.redact.deep(r.as_dict()) for r in results], **extra))
    else:
        render.print_results(command, results, duration, color=app.color, verbose=app.verbose)
        for line in _unchecked_lines(blind):
            render.say(f"coderctl: {app.redact(line)}", err=True)
    bad = {Status.FAIL, Status.ERROR} | ({Status.WARN} if strict else set())
    return 1 if blind or any(r.status in bad for r in results) else 0


def _unchecked_lines(blind: list[Unchecked]) -> list[str]:
    """One line per reason: `nothing checked in network, dns: no --access-url given and ...`."""
    reasons: dict[str, list[str]] = {}
    for u in blind:
        reasons.setdefault(u.reason, []).append(u.category)
    return [f"nothing checked in {', '.join(categories)}: {reason}" for reason, categories in reasons.items()]
