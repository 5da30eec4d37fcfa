"""Running the watcher and its server until SIGTERM or SIGINT, then stopping within a second."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coderctl.watch.watcher import Watcher

STOP_GRACE = 0.4
"""Seconds the running checks get to finish after a stop signal; the rest of the second is for the server."""


def run(watcher: Watcher, listen: str, *, on_ready: Callable[[str], None],
        stop: threading.Event | None = None, on_stopped: Callable[[float], None] | None = None) -> None:
    """Bind `listen`, start the checks, serve until a signal (or `stop`), then stop both. The running checks
    get STOP_GRACE seconds; those still going are abandoned (daemon threads). `on_stopped` gets the seconds
    from the stop to the end of serving."""
    from coderctl.watch.server import serve

    server = serve(watcher, listen)
    stop = stop or threading.Event()
    previous = _on_signals(lambda: stop.set())
    try:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name="watch http", daemon=True)
        watcher.start()
        thread.start()
        host, port = server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{port}")
        while not stop.wait(0.5):
            pass
        stopping = time.monotonic()
        deadline = stopping + STOP_GRACE
        watcher.stop(STOP_GRACE)
        server.shutdown()
        server.server_close()
        thread.join(max(0.0, deadline + 0.2 - time.monotonic()))
        if on_stopped is not None:
            on_stopped(time.monotonic() - stopping)
    finally:
        _restore(previous)


def _on_signals(handler: Callable[[], None]) -> dict[int, Any]:
    """SIGTERM and SIGINT call `handler` (only possible on the main thread; elsewhere `stop` is the way)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda *_: handler())
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)
