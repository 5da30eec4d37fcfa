"""One object per run: the effective settings plus lazily created clients, shared by every command.

The run's inputs (its `Settings` and its typed options such as `DerpOptions`) are fixed once the command
has parsed its flags: they are set while the CLI builds the App and applies the command's flags, and
frozen the first time the App is used for work (`kube()`, `http()`, `cached()`, or `freeze()` itself).
Changing them after that raises RuntimeError. Options are passed explicitly as fields of the App, never
through the cache; what a run discovers is returned to its caller, never written back into the settings.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from coderctl.concurrent import Memo
from coderctl.profile import Settings
from coderctl.redact import Redactor

if TYPE_CHECKING:
    from coderctl.clients.http import HttpClient
    from coderctl.clients.kube import KubeClient


@dataclass(frozen=True)
class DerpOptions:
    """Per-run settings of the DERP checks (`coderctl probe derp --count --hold`)."""

    count: int = 5
    hold: float = 0.0

    def __post_init__(self) -> None:
        """The CLI refuses these (exit 2); a NaN hold would otherwise end at once and pass as held."""
        if not 0 <= self.hold < float("inf") or self.count < 1:
            raise ValueError(f"DERP options out of range: count={self.count}, hold={self.hold}")


_INPUTS = frozenset({"settings", "derp"})
"""The App's fields that are inputs of the run: assigned before it starts, refused after `freeze()`."""


@dataclass
class App:
    settings: Settings
    output: str = "text"
    verbose: int = 0
    debug: bool = False
    color: bool = True
    redact: Redactor = field(default_factory=Redactor)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.monotonic)
    """When the command started (wall clock for the envelope, monotonic for its duration)."""
    derp: DerpOptions = field(default_factory=DerpOptions)
    """Options of the DERP checks; `coderctl probe derp` sets them before the run starts."""
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _kube: KubeClient | None = None
    _http: HttpClient | None = None
    _cache: Memo = field(default_factory=Memo)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _INPUTS and name in self.__dict__ and self.frozen:
            raise RuntimeError(f"the run has started: its {name} can no longer change")
        super().__setattr__(name, value)

    @property
    def frozen(self) -> bool:
        return self.settings.frozen

    def freeze(self) -> None:
        """Fix the run's inputs: from now on the settings and options only change by raising RuntimeError.
        Called by every entry point into the work (kube, http, cached); commands that only read settings
        call it themselves."""
        self.settings.freeze()

    @property
    def timeout(self) -> float:
        return float(self.settings.timeout)

    @property
    def namespace(self) -> str:
        return str(self.settings.namespace)

    def kube(self) -> KubeClient:
        """The Kubernetes client; a missing or invalid kubeconfig raises ConfigError (exit 2)."""
        self.freeze()
        with self._lock:
            if self._kube is None:
                from coderctl.clients.kube import KubeClient

                self._kube = KubeClient(self.settings.kubeconfig, self.settings.context, self.timeout)
            return self._kube

    def http(self) -> HttpClient:
        self.freeze()
        with self._lock:
            if self._http is None:
                from coderctl.clients.http import HttpClient, Resolver

                self._http = HttpClient(
                    timeout=self.timeout,
                    resolver=Resolver.parse(self.settings.resolve),
                    ca_file=self.settings.ca_file,
                    insecure=bool(self.settings.insecure),
                )
            return self._http

    def cached(self, key: str, compute: Any) -> Any:
        """Compute a value once per run, even when several checks ask at once; a failure is remembered too,
        so concurrent checks do not each wait for the same timeout. Results only: options are App fields."""
        self.freeze()
        return self._cache.get(key, compute)
