"""Running one function over several items at once (each in a daemon thread, with an optional deadline), and
computing a value once however many threads ask for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Overran(TimeoutError):
    """A call still running at its deadline: it goes on in its daemon thread, its result unused."""


def fan_out(fn: Callable[[T], R], items: Sequence[T], deadline: float | None = None) -> list[R | BaseException]:
    """`fn(item)` for every item concurrently; the results in the order of `items`.

    An item whose call raised has the exception in its place; one still running at `deadline`
    (time.monotonic()) has an Overran (a TimeoutError), and its thread is left to finish on its own (daemon
    threads never hold up the process's exit). Without a deadline every call is waited for.
    """
    results: list[R | BaseException] = [Overran("did not finish before the deadline")] * len(items)

    def run(i: int) -> None:
        try:
            results[i] = fn(items[i])
        except BaseException as exc:  # the caller decides what a failure means
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return list(results)


def within(fn: Callable[[], R], seconds: float) -> R:
    """`fn()` waited for at most `seconds`; raises Overran after that, else what `fn` returned or raised. For
    reads only: a write left running might still take effect after the caller gave up. `fn` must not raise
    Overran itself (it would read as still running)."""
    [result] = fan_out(lambda _: fn(), [None], deadline=time.monotonic() + seconds)
    if isinstance(result, Overran):
        raise Overran(f"no complete answer in {seconds:g}s")
    if isinstance(result, BaseException):
        raise result
    return result


def all_results(results: list[R | BaseException]) -> list[R]:
    """The results of `fan_out` when every call must have succeeded: the first failure is raised."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


class Memo:
    """Values computed once per key, even when several threads ask at once.

    A failure is remembered too, so concurrent callers do not each wait for the same timeout; `clear()` forgets
    values and failures alike.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._outcomes: dict[Hashable, tuple[bool, Any]] = {}

    def get(self, key: Hashable, compute: Callable[[], R]) -> R:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._outcomes:
                try:
                    self._outcomes[key] = (True, compute())
                except Exception as exc:
                    self._outcomes[key] = (False, exc)
            good, value = self._outcomes[key]
        if not good:
            raise value
        return value  # type: ignore[no-any-return]

    def clear(self) -> None:
        with self._lock:
            self._outcomes.clear()
            self._locks.clear()
