"""Object lock for backups in a bucket: the retention asked for, the check that the bucket can hold it, and
the proof that it holds.

The retention is asked by the settings s3_object_lock_mode (GOVERNANCE | COMPLIANCE) and s3_object_lock_days,
or by `--object-lock-mode --object-lock-days` of `backup create` and `backup sync`; it holds for that many days
from the backup's creation time (a backup copied by sync gets what remains of it). Each object a backup
writes (the dump and its manifest) carries ObjectLockMode and ObjectLockRetainUntilDate on its
CreateMultipartUpload / PutObject.

Before anything is uploaded, the bucket's object lock configuration must say Enabled: a bucket created
without object lock, and a server without it (NotImplemented, or the empty answer of `rclone serve s3`, which
echoes lock headers it does not enforce), are refused. After each object is complete, its retention is read
back (HeadObject's x-amz-object-lock-* headers: AWS answers them to a caller allowed s3:GetObjectRetention,
as it answers GetObjectRetention, and servers without GetObjectRetention, such as moto, answer them too). A
server that ignored the lock given with a multipart upload (moto; some Ceph RGW builds) gets it set with
PutObjectRetention and read back once more; a retention that still does not read back as asked fails the
backup. No retention is reported that was not read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from coderctl.errors import UsageError
from coderctl.ops import manifest as mf
from coderctl.ops.journal import StepFailed
from coderctl.ops.s3 import Bucket, Retention

MODES = ("GOVERNANCE", "COMPLIANCE")
MAX_DAYS = 36500
MODE_SETTING, DAYS_SETTING = "s3_object_lock_mode", "s3_object_lock_days"
_HOW = f"{MODE_SETTING} and {DAYS_SETTING} (or --object-lock-mode and --object-lock-days)"


@dataclass(frozen=True)
class ObjectLock:
    mode: str
    days: int

    def __str__(self) -> str:
        return f"{self.mode} for {self.days} day{'s' if self.days != 1 else ''}"

    def retention(self, created: datetime) -> Retention:
        """Until `days` after `created`, to the second (what S3 stores)."""
        until = (created + timedelta(days=self.days)).astimezone(UTC).replace(microsecond=0)
        return Retention(self.mode, until)


def asked(settings: Any) -> ObjectLock | None:
    """The object lock the settings ask for, or None; a half or invalid one is a usage error."""
    mode, days = getattr(settings, MODE_SETTING, None), getattr(settings, DAYS_SETTING, None)
    if mode is None and days is None:
        return None
    if mode is None or days is None:
        given, missing = (MODE_SETTING, DAYS_SETTING) if mode is not None else (DAYS_SETTING, MODE_SETTING)
        raise UsageError(f"object lock needs a mode and a number of days: {given} is set ({settings.source(given)}) "
                         f"but {missing} is not; set both of {_HOW}")
    if mode not in MODES:
        raise UsageError(f"{MODE_SETTING} ({settings.source(MODE_SETTING)}) must be GOVERNANCE or COMPLIANCE")
    if not 1 <= int(days) <= MAX_DAYS:
        raise UsageError(f"{DAYS_SETTING} ({settings.source(DAYS_SETTING)}) must be from 1 to {MAX_DAYS}")
    return ObjectLock(str(mode), int(days))


def arguments(retention: Retention | None) -> dict[str, Any]:
    """The lock arguments of CreateMultipartUpload / PutObject."""
    if retention is None:
        return {}
    return {"ObjectLockMode": retention.mode, "ObjectLockRetainUntilDate": retention.until}


def require(bucket: Bucket, lock: ObjectLock) -> None:
    """Refuse (exit 2, before any upload) a bucket whose object lock configuration is not Enabled."""
    enabled, why = bucket.lock_configuration()
    if not enabled:
        raise UsageError(f"object lock asked ({lock}) but bucket {bucket.name} at {bucket.endpoint} {why}: use a "
                         f"bucket created with object lock enabled, or unset {_HOW}; nothing was uploaded")


def holds(found: Retention | None, wanted: Retention) -> bool:
    return found is not None and found.mode == wanted.mode and found.until >= wanted.until


def describe(retention: Retention) -> str:
    return f"{retention.mode} until {mf.format_time(retention.until)}"


def confirm(bucket: Bucket, key: str, wanted: Retention) -> tuple[Retention, bool]:
    """The retention `key` holds, read back, and whether it had to be set after the upload (the server ignored
    the upload's); StepFailed if it still does not hold as asked."""
    found = _read(bucket, key)
    if found is not None and holds(found, wanted):
        return found, False
    bucket.set_retention(key, wanted)
    again = _read(bucket, key)
    if again is not None and holds(again, wanted):
        return again, True
    seen = describe(again) if again is not None else "none"
    raise StepFailed(f"s3://{bucket.name}/{key}: the server did not apply the object lock (asked "
                     f"{describe(wanted)}, read back {seen}): the server does not enforce object lock; the backup is "
                     "discarded rather than kept unlocked")


def _read(bucket: Bucket, key: str) -> Retention | None:
    info = bucket.head(key)
    if info is None:
        raise StepFailed(f"s3://{bucket.name}/{key} is gone right after it was written")
    return info.retention


def confirm_or_remove(bucket: Bucket, key: str, wanted: Retention) -> Retention:
    """confirm(); an object whose retention does not hold is removed before the StepFailed goes on (a manifest
    whose backup is being discarded)."""
    try:
        return confirm(bucket, key, wanted)[0]
    except BaseException:
        try:
            bucket.delete(key)
        except Exception:  # the failure being raised says more; `backup list` shows an object left behind
            pass
        raise


def for_backup(lock: ObjectLock, created: datetime | None, now: datetime) -> Retention | None:
    """The retention a backup copied later (backup sync) gets: `days` from its creation, as if it had been
    locked when made; None when that time is already over (S3 refuses a retain-until date in the past)."""
    wanted = lock.retention(created or now)
    return wanted if wanted.until > now else None

