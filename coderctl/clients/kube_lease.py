"""Leases (coordination.k8s.io/v1): building them, reading their timing, changing holder, renewing, releasing.

Only what the API defines. Every change here returns a new object that keeps `metadata.resourceVersion`,
so writing it with `KubeClient.replace(LEASES, ...)` succeeds only if nobody wrote the Lease in between
(KubeConflict otherwise), and creating with `KubeClient.create` fails with KubeAlreadyExists if another
got there first. Who may take a Lease, and when (the lock's rules), belongs to the caller.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from coderctl.clients.kube import LEASES as LEASES

MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def micro_time(moment: datetime | None = None) -> str:
    """A `MicroTime` as the API writes it: RFC 3339 in UTC with microseconds."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime(MICRO_TIME)


def parse_time(text: str | None) -> datetime | None:
    """A MicroTime or Time (RFC 3339, with or without fractions); None when absent or unreadable."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LeaseInfo:
    """The fields of a Lease a lock needs, read once."""

    name: str
    namespace: str
    holder: str
    duration_s: int | None
    acquired: datetime | None
    renewed: datetime | None
    transitions: int
    resource_version: str
    annotations: dict[str, str]

    @classmethod
    def of(cls, lease: dict[str, Any]) -> LeaseInfo:
        meta = lease.get("metadata") or {}
        spec = lease.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        return cls(
            name=str(meta.get("name") or ""), namespace=str(meta.get("namespace") or ""),
            holder=str(spec.get("holderIdentity") or ""),
            duration_s=int(duration) if isinstance(duration, int) else None,
            acquired=parse_time(spec.get("acquireTime")), renewed=parse_time(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str(meta.get("resourceVersion") or ""),
            annotations=dict(meta.get("annotations") or {}),
        )

    @property
    def expires(self) -> datetime | None:
        """renewTime (else acquireTime) + leaseDurationSeconds; None when either is missing."""
        start = self.renewed or self.acquired
        if start is None or self.duration_s is None:
            return None
        return start + timedelta(seconds=self.duration_s)

    def held(self, now: datetime | None = None) -> bool:
        """Someone holds it and has renewed it within its duration (a Lease without times never expires)."""
        if not self.holder:
            return False
        expires = self.expires
        return expires is None or (now or datetime.now(UTC)) < expires


def lease_object(name: str, namespace: str, *, holder: str, duration_s: int, now: datetime | None = None,
                 labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A new Lease held by `holder` from `now`, for `KubeClient.create`."""
    stamp = micro_time(now)
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": LEASES.group_version, "kind": "Lease", "metadata": meta,
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration_s, "acquireTime": stamp,
                 "renewTime": stamp, "leaseTransitions": 0},
    }


def with_holder(lease: dict[str, Any], holder: str, *, duration_s: int | None = None, now: datetime | None = None,
                annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The Lease held by `holder` from `now`: a new holder gets a new acquireTime and one more
    leaseTransitions; the same holder only renews. `annotations` are merged into the metadata."""
    out = copy.deepcopy(lease)
    spec = out.setdefault("spec", {})
    stamp = micro_time(now)
    if spec.get("holderIdentity") != holder:
        spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["holderIdentity"] = holder
        spec["acquireTime"] = stamp
    spec["renewTime"] = stamp
    if duration_s is not None:
        spec["leaseDurationSeconds"] = duration_s
    if annotations:
        out.setdefault("metadata", {}).setdefault("annotations", {}).update(annotations)
    return out


def renewed(lease: dict[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """The Lease with renewTime moved to `now`, holder unchanged."""
    out = copy.deepcopy(lease)
    out.setdefault("spec", {})["renewTime"] = micro_time(now)
    return out


def released(lease: dict[str, Any]) -> dict[str, Any]:
    """The Lease with no holder (kept, so that leaseTransitions keeps counting); `annotations` stay."""
    out = copy.deepcopy(lease)
    spec = out.setdefault("spec", {})
    for field in ("holderIdentity", "acquireTime", "renewTime"):
        spec.pop(field, None)
    return out
