"""The in-pod runner (coderctl.database.pod) as operations use it: a failed query fails the step."""

from __future__ import annotations

from coderctl.context import App
from coderctl.database.pod import (
    DUMP,
    READABLE,
    RESTORE,
    PodQueryFailed,
    Target,
    credentials_in_pod,
    error_line,
    run,
    target,
)
from coderctl.database.pod import query as _query

__all__ = ["DUMP", "READABLE", "RESTORE", "Target", "credentials_in_pod", "error_line", "query", "run", "target"]


def query(app: App, t: Target, sql: str) -> list[list[str]]:
    """Rows of a psql query in the pod (`|`-separated, unaligned); StepFailed with its error line."""
    from coderctl.ops.journal import StepFailed

    try:
        return _query(app, t, sql)
    except PodQueryFailed as exc:
        raise StepFailed(str(exc)) from None
