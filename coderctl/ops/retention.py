"""Grandfather-father-son retention, as restic (`forget --keep-*`) and k8up apply it.

Backups are walked newest first. Each rule has a count and a bucket: every backup for `last`, the UTC day
for `daily`, the ISO week for `weekly`, the month for `monthly`. A backup is kept by a rule when its bucket
differs from that of the last backup the rule kept, while the rule has count left; so each rule keeps the
newest backup of each of its N most recent buckets. A backup no rule keeps is removed, except the newest
verified backup, which is always kept: "verified" as its manifest says and intact as its SHA-256 shows
now, so a damaged file never takes the place of the last good one. In a bucket, a backup whose object lock is
still in force is kept too ("retained until ..."): deleting it would only hide it behind a delete marker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coderctl.errors import CoderctlError, ExitCode, UsageError
from coderctl.ops import manifest as mf
from coderctl.ops.catalog import Entry, newest_first, scan, scan_s3
from coderctl.ops.files import fsync_dir
from coderctl.ops.journal import Journal, Outcome
from coderctl.ops.storage import S3URL

RULES: tuple[tuple[str, Callable[[datetime, int], str]], ...] = (
    ("last", lambda t, i: str(i)),
    ("daily", lambda t, i: t.strftime("%Y-%m-%d")),
    ("weekly", lambda t, i: f"{t.isocalendar()[0]:04d}-W{t.isocalendar()[1]:02d}"),
    ("monthly", lambda t, i: t.strftime("%Y-%m")),
)


@dataclass(frozen=True)
class Policy:
    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    def counts(self) -> dict[str, int]:
        return {"last": self.last, "daily": self.daily, "weekly": self.weekly, "monthly": self.monthly}

    @property
    def empty(self) -> bool:
        return not any(self.counts().values())


@dataclass
class Decision:
    entry: Entry
    keep: bool
    reasons: list[str] = field(default_factory=list)


def decide(entries: list[Entry], policy: Policy, intact: Callable[[Entry], bool] | None = None,
           now: datetime | None = None) -> list[Decision]:
    """Decisions for complete backups (others are never touched), newest first.

    `intact(entry)` checks a backup's file against its manifest's checksum; the newest verified backup that
    passes it is protected. Without it the manifests' word is taken (the entries' own checksum state)."""
    now = now or datetime.now(UTC)
    if policy.empty:
        raise UsageError("no --keep-* option given: prune would remove every backup")
    backups = sorted((e for e in entries if e.complete and e.time is not None), key=newest_first, reverse=True)
    remaining = policy.counts()
    last_bucket: dict[str, str | None] = {name: None for name, _ in RULES}
    damaged: set[int] = set()
    newest_verified = None
    for e in backups:
        if not e.verified:
            continue
        if intact is None or intact(e):
            newest_verified = e
            break
        damaged.add(id(e))
    decisions: list[Decision] = []
    for index, entry in enumerate(backups):
        assert entry.time is not None
        d = Decision(entry, False)
        for name, bucket in RULES:
            if remaining[name] <= 0:
                continue
            value = bucket(entry.time, index)
            if value != last_bucket[name]:
                last_bucket[name] = value
                remaining[name] -= 1
                d.keep = True
                d.reasons.append(f"{name} #{policy.counts()[name] - remaining[name]}"
                                 + (f" ({value})" if name != "last" else ""))
        if entry is newest_verified:
            d.keep = True
            d.reasons.append("newest verified backup")
        elif id(entry) in damaged:
            d.reasons.append(f"checksum {entry.checksum}: not protected as the newest verified backup")
        if entry.retention is not None and entry.retained(now):
            d.keep = True
            d.reasons.append(f"retained until {mf.format_time(entry.retention.until)} ({entry.retention.mode})")
        if not d.keep:
            d.reasons.append("no rule keeps it")
        decisions.append(d)
    return decisions


def check_checksum(entry: Entry) -> bool:
    """Hash the file and record the result in the entry (`ok`, `mismatch`, or `unreadable`)."""
    assert entry.manifest is not None
    try:
        same = entry.sha256() == entry.manifest.sha256
    except OSError as exc:
        entry.checksum, entry.detail = "unreadable", exc.strerror or str(exc)
        return False
    except CoderctlError as exc:
        entry.checksum, entry.detail = "unreadable", str(exc)
        return False
    entry.checksum = "ok" if same else "mismatch"
    if not same:
        entry.detail = "SHA-256 differs from the manifest"
    return same


def prune(directory: Path | S3URL, policy: Policy, *, dry_run: bool, journal: Journal | None = None,
          bucket: Any = None) -> Outcome:
    """Apply `policy` to a directory, or to an s3:// prefix (with its `bucket`)."""
    journal = journal or Journal()
    start = time.monotonic()
    if isinstance(directory, S3URL):
        entries = scan_s3(bucket, directory, checksums=False)
        where = f"s3://{directory.bucket}/{directory.prefix}"
    else:
        entries = scan(directory, checksums=False)
        where = str(directory)
    decisions = decide(entries, policy, intact=check_checksum)
    removed: list[str] = []
    failed: list[str] = []
    for d in decisions:
        if d.keep or dry_run:
            continue
        try:
            d.entry.remove()
            removed.append(d.entry.name)
        except OSError as exc:
            failed.append(f"{d.entry.name}: {exc.strerror}")
        except CoderctlError as exc:
            failed.append(f"{d.entry.name}: {exc}")
    if removed and isinstance(directory, Path):
        fsync_dir(directory.expanduser())
    untouched = [e.name for e in entries if not e.complete or e.time is None]
    journal.note("decide", "ok", f"{sum(d.keep for d in decisions)} kept, "
                 f"{sum(not d.keep for d in decisions)} {'would go' if dry_run else 'to remove'}")
    if not dry_run:
        journal.note("remove", "failed" if failed else "ok",
                     "; ".join(failed) if failed else f"{len(removed)} removed")
    result: dict[str, Any] = {
        "status": "failed" if failed else "ok", "dry_run": dry_run,
        "directory": where,
        "policy": policy.counts(),
        "backups": [{"file": d.entry.name, "created_at": mf.format_time(d.entry.time) if d.entry.time else None,
                     "action": "keep" if d.keep else ("would remove" if dry_run else "removed"),
                     "reasons": d.reasons,
                     "retained_until": mf.format_time(d.entry.retention.until) if d.entry.retention else None}
                    for d in decisions],
        "untouched": untouched, "duration_s": round(time.monotonic() - start, 3),
    }
    if failed:
        return Outcome(int(ExitCode.PROBLEMS), result, journal.steps, "could not remove: " + "; ".join(failed))
    return Outcome(int(ExitCode.OK), result, journal.steps)

