"""A scheduler for periodic jobs on a small pool of daemon threads.

Each job runs at `start + offset + k * interval` (a fixed offset per job spreads the jobs over the interval
without drifting apart), never overlapping itself: a run that comes due while the previous one is still
going is skipped and counted. A run past its job's timeout is abandoned: the job's `on_timeout` reports it
at once, the pool gets a fresh worker in place of the stuck one, and the stuck thread ends when its call
finally returns, its late result dropped. So a hanging job neither delays the others nor stacks up: it holds
at most one thread, and only until it returns.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    id: str
    interval: float
    timeout: float
    run: Callable[[], Any]
    """Called on a worker; what it returns (or raises) goes to `on_done`."""
    on_done: Callable[[Any, float], None]
    """(result or exception, duration in seconds); not called for an abandoned run."""
    on_timeout: Callable[[float], None]
    """(seconds running) when a run is abandoned."""
    offset: float = 0.0


@dataclass
class _Running:
    started: float
    abandoned: bool = False


@dataclass
class Stats:
    """What the scheduler did, per job id."""

    overlaps: dict[str, int] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=dict)


class Scheduler:
    def __init__(self, jobs: list[Job], *, workers: int = 8, clock: Callable[[], float] = time.monotonic) -> None:
        if len({j.id for j in jobs}) != len(jobs):
            raise ValueError("job ids must be unique")
        self.jobs = {j.id: j for j in jobs}
        self.workers = max(1, workers)
        self.clock = clock
        self.stats = Stats()
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, str]] = []
        self._queue: deque[str] = deque()
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self._seq = itertools.count()
        self._start = 0.0
        self._dispatcher: threading.Thread | None = None

    def start(self) -> None:
        self._start = self.clock()
        with self._cond:
            for job in self.jobs.values():
                heapq.heappush(self._due, (self._start + job.offset, next(self._seq), job.id))
        for _ in range(self.workers):
            self._spawn_worker()
        self._dispatcher = threading.Thread(target=self._dispatch, name="watch scheduler", daemon=True)
        self._dispatcher.start()

    @property
    def alive(self) -> bool:
        """The dispatcher is running (it is what /healthz vouches for)."""
        return self._dispatcher is not None and self._dispatcher.is_alive() and not self._stopping

    def stop(self, grace: float) -> bool:
        """Stop taking new runs; wait up to `grace` seconds for the running ones. True when none is left (the
        others are abandoned: daemon threads never hold up the process's exit)."""
        deadline = self.clock() + grace
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._cond.notify_all()
            while self._running and (left := deadline - self.clock()) > 0:
                self._cond.wait(left)
            return not self._running

    def counts(self) -> Stats:
        """A copy of the counts, consistent with each other."""
        with self._cond:
            return Stats(dict(self.stats.overlaps), dict(self.stats.timeouts))

    def running(self) -> dict[str, float]:
        """Job id -> seconds running, for every run in progress (abandoned ones included)."""
        now = self.clock()
        with self._cond:
            return {jid: now - r.started for jid, r in self._running.items()}

    def _spawn_worker(self) -> None:
        threading.Thread(target=self._work, name="watch worker", daemon=True).start()

    def _next_time(self, job: Job, now: float) -> float:
        base = self._start + job.offset
        k = int((now - base) // job.interval) + 1
        return base + k * job.interval

    def _dispatch(self) -> None:
        abandoned: list[tuple[Job, float]] = []
        with self._cond:
            while not self._stopping:
                now = self.clock()
                for jid, run in self._running.items():
                    job = self.jobs[jid]
                    if not run.abandoned and now - run.started >= job.timeout:
                        run.abandoned = True
                        self.stats.timeouts[jid] = self.stats.timeouts.get(jid, 0) + 1
                        abandoned.append((job, now - run.started))
                        self._spawn_worker()
                while self._due and self._due[0][0] <= now:
                    _, _, jid = heapq.heappop(self._due)
                    job = self.jobs[jid]
                    if jid in self._running or jid in self._queue:
                        self.stats.overlaps[jid] = self.stats.overlaps.get(jid, 0) + 1
                    else:
                        self._queue.append(jid)
                        self._cond.notify_all()
                    heapq.heappush(self._due, (self._next_time(job, now), next(self._seq), jid))
                if abandoned:
                    self._cond.release()
                    try:
                        for job, seconds in abandoned:
                            job.on_timeout(seconds)
                    finally:
                        self._cond.acquire()
                    abandoned.clear()
                    continue
                wake = [self._due[0][0]] if self._due else []
                wake += [r.started + self.jobs[jid].timeout for jid, r in self._running.items() if not r.abandoned]
                self._cond.wait(max(0.0, min(wake) - self.clock()) if wake else None)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                jid = self._queue.popleft()
                run = self._running[jid] = _Running(self.clock())
                self._cond.notify_all()  # the dispatcher's next wake-up now includes this run's timeout
            job = self.jobs[jid]
            result: Any
            try:
                result = job.run()
            except Exception as exc:  # the job decides what a failure means
                result = exc
            duration = self.clock() - run.started
            with self._cond:
                del self._running[jid]
                self._cond.notify_all()
            if run.abandoned:
                return  # a replacement took this worker's place
            try:
                job.on_done(result, duration)
            except Exception:
                import logging

                logging.getLogger(__name__).exception("recording the result of %s failed", jid)
