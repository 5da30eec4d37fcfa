"""The backups in a directory or under an s3:// prefix, each with its manifest and the state of its checksum
(`backup list`); in a bucket with object lock enabled, each data object's retention too."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coderctl.errors import CoderctlError, UsageError
from coderctl.ops import manifest as mf
from coderctl.ops.files import PARTIAL, sha256_file

if TYPE_CHECKING:
    from coderctl.ops.s3 import Bucket, Retention
    from coderctl.ops.storage import S3URL

DATA_SUFFIXES = (".dump", ".sql")


@dataclass
class Entry:
    path: Path
    time: datetime | None
    size: int | None
    manifest: mf.Manifest | None
    checksum: str  # ok mismatch size-mismatch unchecked unreadable missing-file no-manifest bad-manifest partial
    detail: str = ""
    bucket: Bucket | None = None
    key: str = ""
    """In a bucket: the object's key (`path` then holds only its name)."""
    upload_id: str = ""
    retention: Retention | None = None
    """The data object's object lock, as the bucket reports it (None: none, or a directory)."""

    @property
    def name(self) -> str:
        return self.path.name

    def retained(self, now: datetime) -> bool:
        """Under an object lock still in force: the server would refuse to delete this version."""
        return self.retention is not None and self.retention.until > now

    @property
    def location(self) -> str:
        return f"s3://{self.bucket.name}/{self.key}" if self.bucket is not None else str(self.path)

    def sha256(self) -> str:
        """The SHA-256 of the data as stored now (read in full: from the bucket, a download)."""
        if self.bucket is None:
            return sha256_file(self.path)
        digest = hashlib.sha256()
        for chunk in self.bucket.chunks(self.key):
            digest.update(chunk)
        return digest.hexdigest()

    def remove(self) -> None:
        """Delete the data and its manifest."""
        if self.bucket is None:
            self.path.unlink(missing_ok=True)
            mf.manifest_path(self.path).unlink(missing_ok=True)
        else:
            self.bucket.delete(self.key)
            self.bucket.delete(self.key + ".json")

    @property
    def complete(self) -> bool:
        """A finished coderctl backup: data file and readable manifest both present."""
        return self.manifest is not None and self.checksum not in ("missing-file", "partial")

    @property
    def verified(self) -> bool:
        return self.manifest is not None and self.manifest.verified and self.checksum in ("ok", "unchecked")


def newest_first(e: Entry) -> tuple[bool, datetime, int, str]:
    """Sort key (with reverse=True): by time, then by the -2, -3 of backups started within the same second."""
    return e.time is not None, e.time or datetime.min, mf.sequence_from_name(e.name), e.name


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
    entries.sort(key=newest_first, reverse=True)
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


def scan_s3(bucket: Bucket, url: S3URL, *, checksums: bool = True) -> list[Entry]:
    """As `scan`, for the objects directly under an s3:// prefix; incomplete multipart uploads are `partial`."""
    prefix = url.prefix
    objects = {o.name: o for o in bucket.objects(prefix)}
    names = {n for n in objects if n.endswith(DATA_SUFFIXES)}
    names |= {n[: -len(".json")] for n in objects if n.endswith(tuple(s + ".json" for s in DATA_SUFFIXES))}
    entries = [_s3_entry(bucket, prefix + name, objects, checksums) for name in names]
    if _may_lock(bucket):
        for entry in entries:
            if entry.size is not None:
                info = bucket.head(entry.key)
                entry.retention = info.retention if info is not None else None
    for u in bucket.pending_uploads(prefix):
        name = u.key[len(prefix):]
        if "/" in name:
            continue
        started = f" on {mf.format_time(u.initiated)}" if u.initiated else ""
        entries.append(Entry(Path(name), mf.time_from_name(name), None, None, "partial",
                             f"incomplete multipart upload started{started}, never completed (an interrupted run); "
                             "coderctl backup cleanup removes it", bucket=bucket, key=u.key, upload_id=u.upload_id))
    entries.sort(key=newest_first, reverse=True)
    return entries


def _may_lock(bucket: Bucket) -> bool:
    """Whether objects may carry a lock: one request for the bucket, then (only if so) a HEAD per backup. A
    configuration the key may not read counts as maybe, so that prune never deletes a retained backup unseen."""
    try:
        return bucket.lock_configuration()[0]
    except CoderctlError:
        return True


def parse_manifest(data: bytes, name: str) -> mf.Manifest:
    try:
        loaded: Any = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise mf.ManifestError(f"{name} cannot be read: {exc}") from None
    if not isinstance(loaded, dict):
        raise mf.ManifestError(f"{name} is not a coderctl manifest")
    try:
        return mf.Manifest.from_dict(loaded)
    except mf.ManifestError as exc:
        raise mf.ManifestError(f"{name}: {exc}") from None


def read_s3_manifest(bucket: Bucket, key: str) -> mf.Manifest:
    name = key.rpartition("/")[2] + ".json"
    if bucket.head(key + ".json") is None:
        raise mf.ManifestError(f"{name} is missing: without a manifest there is no checksum to check")
    return parse_manifest(bucket.get_bytes(key + ".json"), name)


def _s3_entry(bucket: Bucket, key: str, objects: dict[str, Any], checksums: bool) -> Entry:
    name = key.rpartition("/")[2]
    info = objects.get(name)
    size = info.size if info is not None else None
    path = Path(name)
    if name + ".json" not in objects:
        return Entry(path, mf.time_from_name(name), size, None, "no-manifest", "no manifest beside it",
                     bucket=bucket, key=key)
    try:
        record = parse_manifest(bucket.get_bytes(key + ".json"), name + ".json")
    except mf.ManifestError as exc:
        return Entry(path, mf.time_from_name(name), size, None, "bad-manifest", str(exc), bucket=bucket, key=key)
    try:
        moment: datetime | None = record.time
    except ValueError:
        moment = mf.time_from_name(name)
    entry = Entry(path, moment, size, record, "ok", bucket=bucket, key=key)
    if size is None:
        entry.checksum, entry.detail = "missing-file", "the manifest's data object is gone"
    elif size != record.size:
        entry.checksum, entry.detail = "size-mismatch", f"{size} bytes, manifest says {record.size}"
    elif not checksums:
        entry.checksum = "unchecked"
    elif entry.sha256() != record.sha256:
        entry.checksum, entry.detail = "mismatch", "SHA-256 differs from the manifest"
    return entry
