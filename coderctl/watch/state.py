"""The watcher's latest results: one entry per check and one backup reading, each replacing the last.

Everything here is keyed by check id (and status), so its size is fixed by the checks selected, never by
how long the watcher has run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coderctl.checks.base import CheckResult, Status

if TYPE_CHECKING:
    from coderctl.watch.backups import BackupReading


@dataclass
class CheckState:
    result: CheckResult
    finished_at: float
    """Unix time the run ended (or was abandoned)."""


@dataclass
class Snapshot:
    """A consistent copy of the state for one scrape or one /status answer."""

    started_at: float
    checks: dict[str, CheckState]
    runs: dict[tuple[str, str], int]
    timeouts: dict[str, int]
    overlaps: dict[str, int]
    running: dict[str, float]
    backup: BackupReading | None
    rounds: int


@dataclass
class State:
    started_at: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _checks: dict[str, CheckState] = field(default_factory=dict)
    _runs: dict[tuple[str, str], int] = field(default_factory=dict)
    _timeouts: dict[str, int] = field(default_factory=dict)
    _backup: BackupReading | None = None

    def record(self, result: CheckResult, *, timed_out: bool = False) -> None:
        with self._lock:
            previous = self._checks.get(result.id)
            self._checks[result.id] = CheckState(result, time.time())
            key = (result.id, result.status.value)
            self._runs[key] = self._runs.get(key, 0) + 1
            if timed_out:
                self._timeouts[result.id] = self._timeouts.get(result.id, 0) + 1
        if previous is None or previous.result.status is not result.status:
            _log_change(previous.result.status if previous else None, result)

    def status(self, check_id: str) -> Status | None:
        with self._lock:
            found = self._checks.get(check_id)
            return found.result.status if found else None

    def record_backup(self, reading: BackupReading) -> None:
        with self._lock:
            self._backup = reading

    def snapshot(self, *, overlaps: dict[str, int], running: dict[str, float], rounds: int) -> Snapshot:
        with self._lock:
            return Snapshot(self.started_at, dict(self._checks), dict(self._runs), dict(self._timeouts),
                            dict(overlaps), dict(running), self._backup, rounds)


def _log_change(before: Status | None, result: CheckResult) -> None:
    """A status change on stderr: a check turning bad by default, the others with -v."""
    import logging

    bad = result.status in (Status.WARN, Status.FAIL, Status.ERROR)
    first = result.detail.splitlines()[0] if result.detail else ""
    logging.getLogger("coderctl.watch").log(logging.WARNING if bad else logging.INFO, "%s: %s -> %s: %s",
                                            result.id, before.value if before else "none", result.status.value,
                                            first)
