"""The backup directory as the watcher reports it: the newest backup, and the newest one proven whole.

A backup counts as verified when its manifest says it was read back in full and its file still has the
manifest's SHA-256. The checksum is computed once per file (keyed by path, size and modification time), so
a directory of large backups costs one read of each new backup, not one per scan.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from coderctl.ops.catalog import Entry, scan
from coderctl.ops.files import sha256_file


@dataclass(frozen=True)
class BackupReading:
    directory: str
    error: str | None = None
    """Why the directory could not be read (None: it was)."""
    count: int = 0
    """Complete backups (data file and manifest)."""
    last_time: float | None = None
    last_size: int | None = None
    last_verified: bool = False
    """Whether the newest complete backup is verified."""
    last_verified_time: float | None = None
    """Unix time of the newest verified backup."""


class BackupWatcher:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sums: dict[tuple[str, int, int], bool] = {}
        self._lock = threading.Lock()

    def read(self) -> BackupReading:
        with self._lock:
            try:
                entries = [e for e in scan(self.directory, checksums=False) if e.complete]
            except Exception as exc:
                return BackupReading(str(self.directory), error=str(exc) or type(exc).__name__)
            keys = {self._key(e) for e in entries}
            self._sums = {k: v for k, v in self._sums.items() if k in keys}
            newest = entries[0] if entries else None
            verified = next((e for e in entries if self._verified(e)), None)
            return BackupReading(
                str(self.directory), count=len(entries),
                last_time=newest.time.timestamp() if newest and newest.time else None,
                last_size=newest.size if newest else None,
                last_verified=newest is not None and newest is verified,
                last_verified_time=verified.time.timestamp() if verified and verified.time else None)

    @staticmethod
    def _key(entry: Entry) -> tuple[str, int, int]:
        try:
            stat = entry.path.stat()
        except OSError:
            return (str(entry.path), -1, -1)
        return (str(entry.path), stat.st_size, stat.st_mtime_ns)

    def _verified(self, entry: Entry) -> bool:
        if entry.manifest is None or not entry.manifest.verified or entry.checksum not in ("ok", "unchecked"):
            return False
        key = self._key(entry)
        if key not in self._sums:
            try:
                self._sums[key] = sha256_file(entry.path) == entry.manifest.sha256
            except OSError:
                return False
        return self._sums[key]
