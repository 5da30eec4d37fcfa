"""Turning exceptions a check did not handle into results: a forbidden call names what it needed."""

from __future__ import annotations

from coderctl.checks.base import Conclusion, Outcome, SkipCheck, Status
from coderctl.clients.kube import KubeForbidden, KubeUnreachable
from coderctl.errors import CoderctlError


def outcome_for(exc: Exception) -> Outcome:
    if isinstance(exc, Conclusion):
        return exc.outcome
    if isinstance(exc, SkipCheck):
        return Outcome(Status.SKIP, str(exc))
    if isinstance(exc, KubeForbidden):
        return Outcome(
            Status.ERROR,
            f"the API refused to {exc.verb} {exc.resource}: {exc}",
            f"grant {exc.verb} on {exc.resource} to this user (docs/rbac.md has the Role verify needs)",
            {"forbidden": {"verb": exc.verb, "resource": exc.resource}},
        )
    if isinstance(exc, KubeUnreachable):
        return Outcome(Status.ERROR, str(exc))
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, CoderctlError):
        return Outcome(Status.ERROR, first)
    return Outcome(Status.ERROR, f"{type(exc).__name__}: {first}")
