"""One change at a time: a Lease in the Coder namespace held while an operation changes the deployment.

The holder renews it every third of its duration from a background thread; a holder that dies (kill -9, a
laptop closed) stops renewing, and the Lease expires after `duration_s`. A live Lease held by another
operation makes a new one refuse, naming the holder and how to take over; the same operation (a resume
from another machine) takes it over at once. Writes carry the resourceVersion, so two operators racing
for a free Lease cannot both win.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from coderctl.clients.kube import LEASES, KubeConflict, KubeError, KubeNotFound
from coderctl.clients.kube_lease import LeaseInfo, lease_object, released, renewed, with_holder
from coderctl.errors import CoderctlError

if TYPE_CHECKING:
    from coderctl.clients.kube import KubeClient

LEASE_NAME = "coderctl-operation"
OPERATION_ANNOTATION = "coderctl.dev/operation"


class LeaseHeld(CoderctlError):
    """Another live operation holds the Lease."""


class OperationLock:
    """Acquire with `acquire()`, give back with `release()`; `lost` turns true when a renewal finds the Lease
    taken by someone else, and the operation stops before its next step."""

    def __init__(self, kube: KubeClient, namespace: str, *, holder: str, operation: str,
                 duration_s: int = 60) -> None:
        self.kube = kube
        self.namespace = namespace
        self.holder = holder
        self.operation = operation
        self.duration_s = duration_s
        self.lost = False
        self.lost_reason = ""
        self._lease: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write = threading.Lock()

    def describe(self) -> str:
        return f"Lease {self.namespace}/{LEASE_NAME}"

    def acquire(self) -> None:
        mine = {OPERATION_ANNOTATION: self.operation}
        try:
            current = self.kube.get(LEASES, LEASE_NAME, self.namespace)
        except KubeNotFound:
            current = None
        try:
            if current is None:
                self._lease = self.kube.create(LEASES, self.namespace, lease_object(
                    LEASE_NAME, self.namespace, holder=self.holder, duration_s=self.duration_s, annotations=mine))
            else:
                info = LeaseInfo.of(current)
                if info.held() and info.annotations.get(OPERATION_ANNOTATION) != self.operation:
                    raise LeaseHeld(self.held_message(info))
                self._lease = self.kube.replace(LEASES, LEASE_NAME, self.namespace, with_holder(
                    current, self.holder, duration_s=self.duration_s, annotations=mine))
        except KubeConflict:
            raise LeaseHeld(f"another operation took {self.describe()} at the same moment; "
                            f"coderctl ... --list shows it") from None
        self._thread = threading.Thread(target=self._renew_loop, name="lease renewal", daemon=True)
        self._thread.start()

    def held_message(self, info: LeaseInfo) -> str:
        now = datetime.now(UTC)
        operation = info.annotations.get(OPERATION_ANNOTATION) or "an unknown operation"
        ago = f"{(now - info.renewed).total_seconds():.0f}s ago" if info.renewed else "never"
        left = f"{max(0.0, (info.expires - now).total_seconds()):.0f}s" if info.expires else "never (no duration)"
        return (f"another operation holds {self.describe()}: {operation} by {info.holder}, renewed {ago}. "
                f"If that process is gone the Lease expires in {left}; to take over at once, when you are sure "
                f"it is gone: kubectl -n {self.namespace} delete lease {LEASE_NAME}")

    def renew(self) -> None:
        """Push renewTime forward; a conflict means someone took the Lease over."""
        with self._write:
            if self._lease is None or self.lost:
                return
            try:
                self._lease = self.kube.replace(LEASES, LEASE_NAME, self.namespace, renewed(self._lease))
            except (KubeConflict, KubeNotFound):
                self.lost = True
                self.lost_reason = f"{self.describe()} was taken over or deleted while this operation ran"
            except KubeError:
                pass  # a blip: the next renewal tries again, well before the Lease expires

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.duration_s / 3):
            self.renew()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._write:
            if self._lease is None or self.lost:
                return
            lease = released(self._lease)
            annotations = (lease.get("metadata") or {}).get("annotations") or {}
            annotations.pop(OPERATION_ANNOTATION, None)
            try:
                self.kube.replace(LEASES, LEASE_NAME, self.namespace, lease)
            except KubeError:
                pass  # it expires by itself
            self._lease = None
