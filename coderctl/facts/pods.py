"""What a pod's status says: why its container is not running and ready, and which kind of trouble that is."""

from __future__ import annotations

from typing import Any, Literal

IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName"})
"""Waiting reasons of a container whose image cannot be pulled."""
CANNOT_START_REASONS = IMAGE_PULL_REASONS | {"ErrImageNeverPull", "CreateContainerConfigError",
                                             "CreateContainerError", "RunContainerError"}
"""Waiting reasons that waiting does not cure: the container will not start until something is changed (unlike
CrashLoopBackOff, which may be a start that is merely slow)."""

PodTrouble = Literal["oomkilled", "image-pull", "crashloop", "not-ready"]


def pod_problem(pod: dict[str, Any], container: str) -> tuple[str | None, dict[str, Any]]:
    """Why a pod is not running and ready, or None; plus facts about its container (phase, restarts, and
    `waiting`, `last_reason`, `last_exit_code` when the status has them)."""
    status = pod.get("status") or {}
    phase = status.get("phase", "Unknown")
    statuses = status.get("containerStatuses") or []
    cs = next((s for s in statuses if s.get("name") == container), statuses[0] if statuses else None)
    facts: dict[str, Any] = {"phase": phase, "restarts": int((cs or {}).get("restartCount") or 0)}
    if cs is None:
        reason = next((c.get("reason") or c.get("message") for c in status.get("conditions") or []
                       if c.get("status") == "False" and (c.get("reason") or c.get("message"))), None)
        return f"{phase}" + (f" ({reason})" if reason else ""), facts
    state, last = cs.get("state") or {}, (cs.get("lastState") or {}).get("terminated")
    parts: list[str] = []
    if "waiting" in state:
        waiting = state["waiting"]
        facts["waiting"] = waiting.get("reason")
        parts.append(waiting.get("reason") or "Waiting")
        if waiting.get("reason") in IMAGE_PULL_REASONS and waiting.get("message"):
            parts.append(waiting["message"])
    elif "terminated" in state:
        term = state["terminated"]
        parts.append(f"terminated: {term.get('reason', 'Error')} (exit code {term.get('exitCode')})")
    if last:
        facts["last_reason"] = last.get("reason")
        facts["last_exit_code"] = last.get("exitCode")
        parts.append(f"last terminated: {last.get('reason', 'Error')} (exit code {last.get('exitCode')})")
    if not parts and (phase != "Running" or not cs.get("ready")):
        parts.append(f"{phase}, not ready")
    return ("; ".join(parts) if parts and (not cs.get("ready") or "waiting" in state) else None), facts


def pod_trouble(facts: dict[str, Any]) -> PodTrouble:
    """The kind of trouble the facts of `pod_problem` show; the memory limit wins over the crash it causes."""
    reasons = {facts.get("last_reason"), facts.get("waiting")}
    if "OOMKilled" in reasons:
        return "oomkilled"
    if reasons & IMAGE_PULL_REASONS:
        return "image-pull"
    if "CrashLoopBackOff" in reasons:
        return "crashloop"
    return "not-ready"
