"""A backup prefix in an S3 bucket as the watcher reports it, with the rules of a directory (backups.py).

Requests cost money and time, so a read lists the prefix once (one request per 1,000 objects) and fetches
only the manifests that are new or changed since the last read; a backup's data is downloaded and hashed
once per version of the object (key, size, ETag, modification time), and only while looking for the newest
verified backup, as a directory's file is read once. No incomplete-upload listing: those are never complete
backups.

The bucket's client lives as long as the watcher. A refused credential, a missing bucket or an unreadable
credentials Secret drops it, so the next read resolves the credentials afresh (a rotated Secret is picked
up). Every failure becomes the reading's error, redacted, never an exception.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from coderctl.errors import UsageError
from coderctl.ops import manifest as mf
from coderctl.ops.catalog import DATA_SUFFIXES, Entry, newest_first, parse_manifest
from coderctl.ops.s3 import Bucket, S3Error, Settings
from coderctl.ops.s3creds import resolve
from coderctl.ops.storage import S3URL
from coderctl.watch.backups import BackupReading, summarize

if TYPE_CHECKING:
    from coderctl.context import App
    from coderctl.ops.s3 import ObjectInfo

Version = tuple[str, int, str, datetime | None]


def _version(info: ObjectInfo) -> Version:
    return (info.key, info.size, info.etag, info.modified)


def _gone(exc: S3Error) -> bool:
    """The object was deleted between the listing and the read (a prune running meanwhile)."""
    return "NoSuchKey" in str(exc)


class BucketWatcher:
    def __init__(self, app: App, url: S3URL) -> None:
        Settings.from_env()  # a malformed CODERCTL_S3_* setting is a usage error at start, not a metric later
        self.app = app
        self.url = url
        self.blank = BackupReading(f"s3://{url.bucket}/{url.prefix}", destination="s3", bucket=url.bucket,
                                   prefix=url.prefix)
        self._bucket: Bucket | None = None
        self._manifests: dict[Version, mf.Manifest | None] = {}
        self._sums: dict[Version, bool] = {}
        self._versions: dict[str, Version] = {}
        self._lock = threading.Lock()

    def read(self) -> BackupReading:
        with self._lock:
            try:
                bucket = self._open()
                return summarize(self.blank, self._entries(bucket), self._verified)
            except Exception as exc:
                if isinstance(exc, UsageError):
                    self._bucket = None
                return replace(self.blank, error=self.app.redact(str(exc) or type(exc).__name__))

    def _open(self) -> Bucket:
        if self._bucket is None:
            self._bucket = Bucket(self.app, self.url.bucket, credentials=resolve(self.app))
        return self._bucket

    def _entries(self, bucket: Bucket) -> list[Entry]:
        """The complete backups directly under the prefix, newest first; size checked, data not read."""
        objects = {o.name: o for o in bucket.objects(self.url.prefix)}
        versions: dict[str, Version] = {}
        entries: list[Entry] = []
        for name, data in objects.items():
            meta = objects.get(name + ".json")
            if not name.endswith(DATA_SUFFIXES) or meta is None:
                continue
            record = self._manifest(bucket, meta)
            if record is None:
                continue
            try:
                moment: datetime | None = record.time
            except ValueError:
                moment = mf.time_from_name(name)
            versions[data.key] = _version(data)
            versions[meta.key] = _version(meta)
            entries.append(Entry(Path(name), moment, data.size, record,
                                 "unchecked" if data.size == record.size else "size-mismatch",
                                 bucket=bucket, key=data.key))
        live = set(versions.values())
        self._manifests = {k: v for k, v in self._manifests.items() if k in live}
        self._sums = {k: v for k, v in self._sums.items() if k in live}
        self._versions = versions
        entries.sort(key=newest_first, reverse=True)
        return entries

    def _manifest(self, bucket: Bucket, meta: ObjectInfo) -> mf.Manifest | None:
        """The manifest object's record, fetched once per version of it; None when it is not one."""
        version = _version(meta)
        if version not in self._manifests:
            try:
                self._manifests[version] = parse_manifest(bucket.get_bytes(meta.key), meta.name)
            except mf.ManifestError:
                self._manifests[version] = None
            except S3Error as exc:
                if _gone(exc):
                    return None
                raise
        return self._manifests[version]

    def _verified(self, entry: Entry) -> bool:
        if not entry.verified:
            return False
        assert entry.manifest is not None
        version = self._versions[entry.key]
        if version not in self._sums:
            try:
                self._sums[version] = entry.sha256() == entry.manifest.sha256
            except S3Error as exc:
                if _gone(exc):
                    return False
                raise
        return self._sums[version]
