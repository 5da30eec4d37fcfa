"""One object per run: the effective settings plus lazily created clients, shared by every command."""

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
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _kube: KubeClient | None = None
    _http: HttpClient | None = None
    _cache: Memo = field(default_factory=Memo)

    @property
    def timeout(self) -> float:
        return float(self.settings.timeout)

    @property
    def namespace(self) -> str:
        return str(self.settings.namespace)

    def kube(self) -> KubeClient:
        """The Kubernetes client; a missing or invalid kubeconfig raises ConfigError (exit 2)."""
        with self._lock:
            if self._kube is None:
                from coderctl.clients.kube import KubeClient

                self._kube = KubeClient(self.settings.kubeconfig, self.settings.context, self.timeout)
            return self._kube

    def http(self) -> HttpClient:
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
        so concurrent checks do not each wait for the same timeout."""
        return self._cache.get(key, compute)
