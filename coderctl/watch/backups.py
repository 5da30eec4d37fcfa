"""The backup destination as the watcher reports it: the newest backup, and the newest one proven whole.

A backup counts as verified when its manifest says it was read back in full and its data still has the
manifest's SHA-256. The checksum is computed once per file (keyed by path, size and modification time), so
a directory of large backups costs one read of each new backup, not one per scan. A bucket prefix is read by
bucket.py with the same rules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from coderctl.ops.catalog import Entry, scan
from coderctl.ops.files import sha256_file


@dataclass(frozen=True)
class BackupReading:
    directory: str
    """Where: the directory, or s3://BUCKET/PREFIX/."""
    error: str | None = None
    """Why the destination could not be read (None: it was)."""
    count: int = 0
    """Complete backups (data and manifest)."""
    last_time: float | None = None
    last_size: int | None = None
    last_verified: bool = False
    """Whether the newest complete backup is verified."""
    last_verified_time: float | None = None
    """Unix time of the newest verified backup."""
    destination: str = "dir"
    """dir or s3, as on the metrics of `backup create`; a bucket's name and key prefix below."""
    bucket: str = ""
    prefix: str = ""


def summarize(blank: BackupReading, entries: list[Entry], verified: Callable[[Entry], bool]) -> BackupReading:
    """The reading of `entries` (newest first); `verified` is asked newest first, only until it says yes."""
    complete = [e for e in entries if e.complete]
    newest = complete[0] if complete else None
    proven = next((e for e in complete if verified(e)), None)
    return replace(blank, count=len(complete),
                   last_time=newest.time.timestamp() if newest and newest.time else None,
                   last_size=newest.size if newest else None,
                   last_verified=newest is not None and newest is proven,
                   last_verified_time=proven.time.timestamp() if proven and proven.time else None)


class BackupWatcher:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blank = BackupReading(str(directory))
        self._sums: dict[tuple[str, int, int], bool] = {}
        self._lock = threading.Lock()

    def read(self) -> BackupReading:
        with self._lock:
            try:
                entries = [e for e in scan(self.directory, checksums=False) if e.complete]
            except Exception as exc:
                return replace(self.blank, error=str(exc) or type(exc).__name__)
            keys = {self._key(e) for e in entries}
            self._sums = {k: v for k, v in self._sums.items() if k in keys}
            return summarize(self.blank, entries, self._verified)

    @staticmethod
    def _key(entry: Entry) -> tuple[str, int, int]:
        try:
            stat = entry.path.stat()
        except OSError:
            return (str(entry.path), -1, -1)
        return (str(entry.path), stat.st_size, stat.st_mtime_ns)

    def _verified(self, entry: Entry) -> bool:
        if not entry.verified:
            return False
        assert entry.manifest is not None
        key = self._key(entry)
        if key not in self._sums:
            try:
                self._sums[key] = sha256_file(entry.path) == entry.manifest.sha256
            except OSError:
                return False
        return self._sums[key]
