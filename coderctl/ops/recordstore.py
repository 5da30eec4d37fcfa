"""Where operation records live: a ConfigMap in the Coder namespace, and a copy on this machine.

The cluster copy is the one that counts: another operator on another machine finds it with `--list` and
can resume or roll back from it, and a new operation refuses while one is unfinished there. The local copy
(`$XDG_STATE_HOME/coderctl/operations/ID.json`) is written first, so a record survives an API server that
stops answering mid-operation; `--list` shows local records the cluster does not have.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coderctl.clients.kube import CONFIGMAPS, KubeAlreadyExists, KubeConflict, KubeNotFound
from coderctl.errors import CoderctlError
from coderctl.fsutil import atomic_write_text
from coderctl.ops.record import Record

if TYPE_CHECKING:
    from coderctl.clients.kube import KubeClient

MANAGED_BY = "coderctl"
KIND_LABEL = "coderctl.dev/operation"
DATA_KEY = "record.json"


class RecordConflict(CoderctlError):
    """Another process wrote this operation's record since we read it: it has been taken over."""


def configmap_name(op_id: str) -> str:
    return f"coderctl-op-{op_id}"


def local_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "coderctl" / "operations"


class RecordStore:
    """Saves a record to both places; remembers the ConfigMap's resourceVersion so a write that would
    overwrite someone else's is refused (RecordConflict) instead of silently winning."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._versions: dict[str, str] = {}

    def save(self, record: Record) -> None:
        from coderctl.ops.record import now_iso

        record.updated_at = now_iso()
        text = record.to_json()
        self._save_local(record.id, text)
        self._save_cluster(record, text)

    def _save_local(self, op_id: str, text: str) -> None:
        where = local_dir()
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_text(where / f"{op_id}.json", text)

    def _save_cluster(self, record: Record, text: str) -> None:
        name = configmap_name(record.id)
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, KIND_LABEL: record.kind},
                         "annotations": {"coderctl.dev/status": record.status}},
            "data": {DATA_KEY: text},
        }
        version = self._versions.get(record.id)
        if version is None:
            try:
                made = self.kube.create(CONFIGMAPS, self.namespace, body)
            except KubeAlreadyExists:
                version = str(self.kube.get(CONFIGMAPS, name, self.namespace)["metadata"]["resourceVersion"])
            else:
                self._versions[record.id] = str(made["metadata"]["resourceVersion"])
                return
        try:
            made = self.kube.replace(CONFIGMAPS, name, self.namespace, body, resource_version=version)
        except KubeConflict:
            raise RecordConflict(f"the record of {record.id} was changed by another process (ConfigMap "
                                 f"{self.namespace}/{name}); it has been taken over") from None
        self._versions[record.id] = str(made["metadata"]["resourceVersion"])

    def load(self, op_id: str) -> Record:
        """The cluster's copy, else the local one; CoderctlError naming both places when neither exists."""
        try:
            cm = self.kube.get(CONFIGMAPS, configmap_name(op_id), self.namespace)
        except KubeNotFound:
            local = local_dir() / f"{op_id}.json"
            if local.is_file():
                return Record.from_json(local.read_text(encoding="utf-8"))
            raise CoderctlError(f"no operation {op_id}: no ConfigMap {self.namespace}/{configmap_name(op_id)} "
                                f"and no {local} (coderctl ... --list shows them)") from None
        self._versions[op_id] = str(cm["metadata"]["resourceVersion"])
        return Record.from_json((cm.get("data") or {})[DATA_KEY])

    def all(self, kind: str | None = None) -> list[Record]:
        """Every record of `kind` (all kinds when None), newest first; local-only ones included."""
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY}" + (f",{KIND_LABEL}={kind}" if kind else "")
        found: dict[str, Record] = {}
        for cm in self.kube.list(CONFIGMAPS, self.namespace, label_selector=selector):
            try:
                rec = Record.from_json((cm.get("data") or {}).get(DATA_KEY, ""))
            except (ValueError, TypeError):
                continue
            found[rec.id] = rec
        where = local_dir()
        if where.is_dir():
            for path in where.glob("*.json"):
                try:
                    rec = Record.from_json(path.read_text(encoding="utf-8"))
                except (ValueError, TypeError, OSError):
                    continue
                if rec.id not in found and rec.namespace == self.namespace and kind in (None, rec.kind):
                    found[rec.id] = rec
        return sorted(found.values(), key=lambda r: r.created_at + r.id, reverse=True)

    def unfinished(self) -> list[Record]:
        """Unfinished operations of any kind in the cluster: they block a new one."""
        return [r for r in self.all() if r.unfinished]
