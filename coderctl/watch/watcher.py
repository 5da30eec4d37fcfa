"""The watcher: the selected checks (and the backup destination) as scheduled jobs, their latest results.

Each round reads the deployment afresh: checks that start together share one App (its cache and snapshot,
so that, as in verify, one object is read once for all of them), and an App older than half the shortest
interval is replaced by a new one for the checks that start after. The clients (and their connection
pools) are the first App's, shared by all: they hold no results. So nothing a round reads outlives it.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coderctl.checks.base import PASSING, Check, CheckResult, Outcome, Status
from coderctl.checks.errors import outcome_for
from coderctl.concurrent import Memo
from coderctl.watch.schedule import Job, Scheduler
from coderctl.watch.state import Snapshot, State

if TYPE_CHECKING:
    from coderctl.context import App
    from coderctl.ops.storage import S3URL
    from coderctl.watch.backups import BackupReading, BackupWatcher
    from coderctl.watch.bucket import BucketWatcher

BACKUP_JOB = "backup.directory"


@dataclass
class WatchOptions:
    interval: float = 60.0
    intervals: dict[str, float] = field(default_factory=dict)
    """Per check id, overriding `interval`."""
    check_timeout: float = 11.0
    workers: int = 8
    jitter: float = 0.1
    """Each check's first run is spread over this fraction of its interval (a fixed offset, no drift)."""
    backup_dir: Path | S3URL | None = None
    """A directory or a bucket prefix whose backups are reported."""
    backup_interval: float = 300.0
    """Seconds between two reads of the backup destination (a bucket is listed once per read)."""
    backup_timeout: float = 3600.0
    seed: int | None = None


class Rounds:
    """Fresh per-round Apps over the base App's clients."""

    def __init__(self, base: App, fresh_for: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.fresh_for = fresh_for
        self.clock = clock
        self.count = 0
        self._lock = threading.Lock()
        self._app: App | None = None
        self._born = 0.0

    def current(self) -> App:
        with self._lock:
            now = self.clock()
            if self._app is None or now - self._born >= self.fresh_for:
                self._app = dataclasses.replace(self.base, _cache=Memo(), _lock=threading.RLock(),
                                                started_at=datetime.now(UTC), started=now)
                self._born = now
                self.count += 1
            return self._app


class Watcher:
    def __init__(self, app: App, checks: list[Check], options: WatchOptions) -> None:
        self.app = app
        self.checks = {c.id: c for c in checks}
        self.options = options
        self.state = State()
        intervals = [options.intervals.get(c.id, options.interval) for c in checks] or [options.interval]
        self.rounds = Rounds(app, min(intervals) / 2)
        rng = random.Random(options.seed)
        jobs = [self._check_job(c, options.intervals.get(c.id, options.interval), rng) for c in checks]
        self.backups: BackupWatcher | BucketWatcher | None = None
        self._backup_error: str | None = None
        if options.backup_dir is not None:
            self.backups = _backup_source(app, options.backup_dir)
            jobs.append(Job(BACKUP_JOB, options.backup_interval, options.backup_timeout, self.backups.read,
                            self._backup_done, lambda s: self._backup_done(TimeoutError(f"timed out after {s:.0f}s"),
                                                                           s)))
        self.scheduler = Scheduler(jobs, workers=options.workers)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self, grace: float) -> bool:
        return self.scheduler.stop(grace)

    # --- checks ---------------------------------------------------------------------------------------------

    def _check_job(self, check: Check, interval: float, rng: random.Random) -> Job:
        def done(outcome: Any, duration: float) -> None:
            if not isinstance(outcome, Outcome):
                outcome = self._redacted(outcome_for(outcome))
            self.state.record(self._result(check, outcome, duration))

        def timed_out(seconds: float) -> None:
            outcome = Outcome(Status.ERROR, f"timed out after {self.options.check_timeout:g}s; the next run "
                                            "starts once this one returns")
            self.state.record(self._result(check, outcome, seconds), timed_out=True)

        return Job(check.id, interval, self.options.check_timeout, lambda: self._run(check), done, timed_out,
                   offset=rng.uniform(0, self.options.jitter * interval))

    def _run(self, check: Check) -> Outcome:
        """One run of a check on this round's App; skipped, as verify does, when a check it needs did not pass
        its latest run."""
        for need in check.needs:
            status = self.state.status(need) if need in self.checks else None
            if status is not None and status not in PASSING:
                return Outcome(Status.SKIP, f"skipped: {need} {status.value}")
        app = self.rounds.current()
        try:
            outcome = check.fn(app)
        except Exception as exc:  # a check that raises becomes an error result, never a crash
            outcome = outcome_for(exc)
        return self._redacted(outcome)

    def _redacted(self, outcome: Outcome) -> Outcome:
        redact = self.app.redact
        outcome.detail = redact(outcome.detail)
        if outcome.remediation:
            outcome.remediation = redact(outcome.remediation)
        outcome.problems = [p.redacted(redact) for p in outcome.problems]
        return outcome

    @staticmethod
    def _result(check: Check, outcome: Outcome, duration: float) -> CheckResult:
        return CheckResult(id=check.id, category=check.category, title=check.title, status=outcome.status,
                           detail=outcome.detail, remediation=outcome.remediation, duration_s=duration,
                           data=outcome.data, problems=outcome.problems)

    def _backup_done(self, reading: Any, duration: float) -> None:
        from coderctl.watch.backups import BackupReading

        assert self.backups is not None
        if not isinstance(reading, BackupReading):
            reading = dataclasses.replace(self.backups.blank, error=str(reading) or type(reading).__name__)
        if reading.error is not None:
            reading = dataclasses.replace(reading, error=self.app.redact(reading.error))
        self._log_backup(reading)
        self.state.record_backup(reading)

    def _log_backup(self, reading: BackupReading) -> None:
        """A destination turning unreadable (or its error changing) on stderr; its recovery with -v."""
        import logging

        log = logging.getLogger("coderctl.watch")
        if reading.error is not None and reading.error != self._backup_error:
            log.warning("backups in %s: unreadable: %s", reading.directory, reading.error.partition("\n")[0])
        elif reading.error is None and self._backup_error is not None:
            log.info("backups in %s: readable again, %d complete", reading.directory, reading.count)
        self._backup_error = reading.error

    # --- what the server shows ------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.scheduler.alive

    def snapshot(self) -> Snapshot:
        running = {k: v for k, v in self.scheduler.running().items() if k in self.checks}
        return self.state.snapshot(overlaps=self.scheduler.counts().overlaps, running=running,
                                   rounds=self.rounds.count)

    def status_document(self) -> dict[str, Any]:
        """The latest results as the verify JSON envelope (command `watch`), plus when each check ran."""
        from coderctl import render

        snap = self.snapshot()
        results = [snap.checks[cid].result for cid in self.checks if cid in snap.checks]
        runs = {cid: {"last_run_at": _iso(snap.checks[cid].finished_at),
                      "runs": sum(n for (c, _), n in snap.runs.items() if c == cid),
                      "timeouts": snap.timeouts.get(cid, 0), "skipped_runs": snap.overlaps.get(cid, 0),
                      "running_s": round(snap.running[cid], 3) if cid in snap.running else None}
                for cid in self.checks if cid in snap.checks}
        body: dict[str, Any] = {"summary": render.summary(results),
                                "checks": [r.as_dict() for r in results],
                                "watch": {"rounds": snap.rounds, "pending": [c for c in self.checks
                                                                            if c not in snap.checks],
                                          "checks": runs}}
        if snap.backup is not None:
            body["backup"] = dataclasses.asdict(snap.backup)
        redacted = self.app.redact.deep(body)
        assert isinstance(redacted, dict)
        started = datetime.fromtimestamp(snap.started_at, UTC)
        return render.envelope("watch", started, max(0.0, time.time() - snap.started_at), **redacted)


def _backup_source(app: App, where: Path | S3URL) -> BackupWatcher | BucketWatcher:
    if isinstance(where, Path):
        from coderctl.watch.backups import BackupWatcher

        return BackupWatcher(where)
    from coderctl.watch.bucket import BucketWatcher

    return BucketWatcher(app, where)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
