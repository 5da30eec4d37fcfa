"""The durable record of an operation: what `--list`, `--resume ID` and `--rollback ID` read.

It holds step states, object names, counts, resourceVersions and Infisical secret versions: never a secret
value. It is written after every change of a step's state, so a process killed at any point leaves a
record saying how far it got.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

RECORD_VERSION = 1

UNFINISHED = frozenset({"running", "needs-person"})
"""Operation states that block another operation on the same deployment until resumed or rolled back."""


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id(kind: str) -> str:
    """`restore-20261130-190102-3fa9`: sortable by time, unique across machines."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{kind}-{stamp}-{secrets.token_hex(2)}"


def holder_identity() -> str:
    """Who runs this process, for the Lease and the record: user@host:pid."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


@dataclass
class StepState:
    name: str
    status: str = "pending"  # pending | running | done | skipped | failed | undoing | undone | undo-failed
    detail: str = ""
    started_at: str = ""
    finished_at: str = ""


@dataclass
class Record:
    id: str
    kind: str
    namespace: str
    holder: str
    status: str = "running"  # running | done | failed | rolled-back | needs-person
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    params: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    steps: list[StepState] = field(default_factory=list)
    message: str = ""
    version: int = RECORD_VERSION

    def step(self, name: str) -> StepState:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED

    @property
    def current(self) -> str:
        """The step it was at: the last one started, else the first."""
        started = [s for s in self.steps if s.status != "pending"]
        return (started[-1] if started else self.steps[0]).name if self.steps else ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Record:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("version") != RECORD_VERSION:
            raise ValueError("not an operation record of this coderctl version")
        steps = [StepState(**s) for s in raw.pop("steps", [])]
        return cls(**raw, steps=steps)

    def summary(self) -> dict[str, Any]:
        """What `--list` shows of it."""
        return {"id": self.id, "kind": self.kind, "status": self.status, "step": self.current,
                "holder": self.holder, "created_at": self.created_at, "updated_at": self.updated_at,
                "message": self.message}
