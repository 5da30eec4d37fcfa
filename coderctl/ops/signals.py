"""SIGINT and SIGTERM during an operation: raise in the main thread so the operation can clean up, and
hold them off while it puts things back (a second Ctrl-C must not stop a scale-up half way)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside: SIGINT and SIGTERM raise Interrupted."""
    if not _main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in HANDLED}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def shielded() -> Iterator[list[int]]:
    """Inside: SIGINT and SIGTERM are only recorded (in the yielded list), never raised."""
    pending: list[int] = []
    if not _main_thread():
        yield pending
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    previous: dict[int, Any] = {s: signal.signal(s, handler) for s in HANDLED}
    try:
        yield pending
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
