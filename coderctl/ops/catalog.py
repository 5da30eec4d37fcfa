"""The backups in a directory, each with its manifest and the state of its checksum (`backup list`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from coderctl.errors import UsageError
from coderctl.ops import manifest as mf
from coderctl.ops.files import PARTIAL, sha256_file

DATA_SUFFIXES = (".dump", ".sql")


@dataclass
class Entry:
    path: Path
    time: datetime | None
    size: int | None
    manifest: mf.Manifest | None
    checksum: str  # ok mismatch size-mismatch unchecked unreadable missing-file no-manifest bad-manifest partial
    detail: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def complete(self) -> bool:
        """A finished coderctl backup: data file and readable manifest both present."""
        return self.manifest is not None and self.checksum not in ("missing-file", "partial")

    @property
    def verified(self) -> bool:
        return self.manifest is not None and self.manifest.verified and self.checksum in ("ok", "unchecked")


def scan(directory: Path, *, checksums: bool = True) -> list[Entry]:
    """Every backup, manifest without data, and leftover `.partial` file; newest first."""
    directory = directory.expanduser()
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory")
    names: set[str] = set()
    partials: list[Path] = []
    for p in directory.iterdir():
        if p.name.endswith(PARTIAL):
            partials.append(p)
        elif p.name.endswith(DATA_SUFFIXES):
            names.add(p.name)
        elif p.name.endswith(tuple(s + ".json" for s in DATA_SUFFIXES)):
            names.add(p.name[: -len(".json")])
    entries = [_entry(directory / name, checksums) for name in names]
    for p in partials:
        entries.append(Entry(p, mf.time_from_name(p.name[: -len(PARTIAL)]), p.stat().st_size, None, "partial",
                             "left by an interrupted run that could not clean up; safe to delete"))
    entries.sort(key=lambda e: (e.time is not None, e.time or datetime.min, e.name), reverse=True)
    return entries


def _entry(path: Path, checksums: bool) -> Entry:
    size = path.stat().st_size if path.exists() else None
    try:
        record = mf.read(path)
    except mf.ManifestError as exc:
        if not mf.manifest_path(path).exists():
            return Entry(path, mf.time_from_name(path.name), size, None, "no-manifest", "no manifest beside it")
        return Entry(path, mf.time_from_name(path.name), size, None, "bad-manifest", str(exc))
    try:
        moment: datetime | None = record.time
    except ValueError:
        moment = mf.time_from_name(path.name)
    if size is None:
        return Entry(path, moment, None, record, "missing-file", "the manifest's data file is gone")
    if size != record.size:
        return Entry(path, moment, size, record, "size-mismatch", f"{size} bytes, manifest says {record.size}")
    if not checksums:
        return Entry(path, moment, size, record, "unchecked")
    if sha256_file(path) != record.sha256:
        return Entry(path, moment, size, record, "mismatch", "SHA-256 differs from the manifest")
    return Entry(path, moment, size, record, "ok")
