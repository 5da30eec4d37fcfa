"""Object lock for backups in a bucket, against a server that has it (moto's server mode on loopback) and
servers that do not (a moto bucket created without object lock, `rclone serve s3`): the retention reads back
as asked and the server refuses to delete the locked version; list shows it; prune keeps it and says why; sync
locks what it copies into such a bucket from each backup's creation; a bucket that cannot hold a lock is refused
in one line before anything is uploaded; no credential anywhere."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from backup_support import direct
from clirun import run_cli
from lab.deployment import Lab
from s3_support import Bucket, lab_moto, lab_s3, locked, s3, unlocked  # noqa: F401

LOCK = ("--object-lock-mode", "COMPLIANCE", "--object-lock-days", "3")


def steps(doc: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in doc.get("steps", [])}


def errors(stderr: str) -> list[str]:
    """stderr without the warning that --database-url (used by --via direct here) prints."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("coderctl: warning:")]


def key_of(bucket: Bucket, doc: dict) -> str:
    return str(doc["result"]["file"]).removeprefix(f"s3://{bucket.name}/")


def next_second() -> None:
    """Backups of the same second sort by name, not by their -2 suffix: keep them a second apart."""
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.05)


def test_create_with_retention_list_and_prune(locked: Bucket, lab: Lab) -> None:
    next_second()
    r, doc = locked.run("backup", "create", "--to", locked.url, *direct(lab))
    assert r.code == 0, r.output
    assert doc["result"]["retention"] is None
    plain = key_of(locked, doc)
    made = []
    for _ in range(2):
        next_second()
        r, doc = locked.run("backup", "create", "--to", locked.url, *direct(lab), *LOCK)
        assert r.code == 0, r.output
        made.append(key_of(locked, doc))
    older, newest = made

    created = _created_at(locked, newest)
    until = doc["result"]["retention"]["retain_until"]
    assert doc["result"]["retention"]["mode"] == "COMPLIANCE"
    assert datetime.fromisoformat(until.replace("Z", "+00:00")) == created + timedelta(days=3)
    commit = next(s for s in doc["steps"] if s["name"] == "commit")
    assert f"both retained COMPLIANCE until {until}" in commit["detail"]
    assert "object lock COMPLIANCE for 3 days" in next(s for s in doc["steps"] if s["name"] == "prepare")["detail"]

    client = locked.server.client()
    for key in (newest, newest + ".json"):
        head = client.head_object(Bucket=locked.name, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] == created + timedelta(days=3)
        version = head["VersionId"]
        with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
            client.delete_object(Bucket=locked.name, Key=key, VersionId=version)

    r, doc = locked.run("backup", "list", locked.url)
    assert r.code == 0, r.output
    listed = {b["file"]: (b["lock_mode"], b["retained_until"]) for b in doc["backups"]}
    assert listed[Path(newest).name] == ("COMPLIANCE", until)
    assert listed[Path(plain).name] == (None, None)
    text = run_cli(*lab.args("--no-color"), "backup", "list", locked.url, "--quick")
    locked.assert_no_secrets(text.output)
    assert text.code == 0 and "RETAINED UNTIL" in text.stdout and f"{until} (COMPLIANCE)" in text.stdout

    r, doc = locked.run("backup", "prune", locked.url, "--keep-last", "1")
    assert r.code == 0, r.output
    actions = {b["file"]: (b["action"], b["reasons"]) for b in doc["result"]["backups"]}
    retained_until = {b["file"]: b["retained_until"] for b in doc["result"]["backups"]}
    older_until = retained_until[Path(older).name]
    assert actions == {
        Path(newest).name: ("keep", ["last #1", "newest verified backup", f"retained until {until} (COMPLIANCE)"]),
        Path(older).name: ("keep", [f"retained until {older_until} (COMPLIANCE)"]),
        Path(plain).name: ("removed", ["no rule keeps it"]),
    }
    assert locked.objects() == sorted(k + ext for k in made for ext in ("", ".json"))
    assert locked.uploads() == []


def _created_at(bucket: Bucket, key: str) -> datetime:
    import json

    manifest = json.loads(bucket.server.client().get_object(Bucket=bucket.name, Key=key + ".json")["Body"].read())
    return datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00")).astimezone(UTC)


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_bucket_without_object_lock_is_refused_before_any_upload(unlocked: Bucket, lab: Lab, how: str) -> None:
    env = {"CODERCTL_S3_OBJECT_LOCK_MODE": "GOVERNANCE", "CODERCTL_S3_OBJECT_LOCK_DAYS": "7"}
    args = LOCK if how == "flags" else ()
    r, doc = unlocked.run("backup", "create", "--to", unlocked.url, *direct(lab), *args,
                          env=env if how == "environment" else None)
    assert r.code == 2, r.output
    assert errors(r.stderr) == [
        f"coderctl: error: object lock asked ({'COMPLIANCE for 3' if how == 'flags' else 'GOVERNANCE for 7'} days) "
        f"but bucket {unlocked.name} at {unlocked.server.endpoint} has no object lock configuration: use a bucket "
        "created with object lock enabled, or unset s3_object_lock_mode and s3_object_lock_days (or "
        "--object-lock-mode and --object-lock-days); nothing was uploaded"]
    assert steps(doc) == {"prepare": "failed"}
    assert unlocked.objects() == [] and unlocked.uploads() == []


def test_rclone_without_object_lock_is_refused_the_same_way(s3: Bucket, lab: Lab) -> None:
    """`rclone serve s3` answers GetObjectLockConfiguration with an empty document, and would echo lock headers
    on HEAD that it never enforces: refused before the dump starts."""
    r, doc = s3.run("backup", "create", "--to", s3.url, *direct(lab), *LOCK)
    assert r.code == 2, r.output
    lines = errors(r.stderr)
    assert len(lines) == 1 and f"but bucket {s3.name} at {s3.server.endpoint} does not report object lock as " \
        "enabled: use a bucket created with object lock enabled" in lines[0], r.stderr
    assert steps(doc) == {"prepare": "failed"}
    assert s3.objects() == [] and s3.uploads() == []


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--object-lock-days", "3"], {}, "object lock needs a mode and a number of days: s3_object_lock_days is set "
     "(flag) but s3_object_lock_mode is not"),
    ([], {"CODERCTL_S3_OBJECT_LOCK_MODE": "GOVERNANCE"}, "s3_object_lock_mode is set (env "
     "CODERCTL_S3_OBJECT_LOCK_MODE) but s3_object_lock_days is not"),
    ([], {"CODERCTL_S3_OBJECT_LOCK_MODE": "GOVERNANCE", "CODERCTL_S3_OBJECT_LOCK_DAYS": "0"},
     "s3_object_lock_days (env CODERCTL_S3_OBJECT_LOCK_DAYS) must be from 1 to 36500"),
    ([], {"CODERCTL_S3_OBJECT_LOCK_MODE": "governance", "CODERCTL_S3_OBJECT_LOCK_DAYS": "1"},
     "s3_object_lock_mode must be GOVERNANCE or COMPLIANCE"),
])
def test_an_incomplete_or_invalid_lock_is_a_usage_error(locked: Bucket, lab: Lab, args: list[str],
                                                        env: dict[str, str], expected: str) -> None:
    r, _doc = locked.run("backup", "create", "--to", locked.url, *direct(lab), *args, env=env)
    assert r.code == 2, r.output
    lines = errors(r.stderr)
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert locked.objects() == [] and locked.uploads() == []


def test_object_lock_flags_need_a_bucket(locked: Bucket, lab: Lab, tmp_path: Path) -> None:
    r, _doc = locked.run("backup", "create", "--to", str(tmp_path / "backups"), *direct(lab), *LOCK)
    assert r.code == 2 and "object lock is for a backup written to a bucket" in r.stderr, r.output
    assert not (tmp_path / "backups").exists()


def test_a_lock_that_does_not_hold_is_never_reported(unlocked: Bucket) -> None:
    """The read-back after the upload: an object without the lock asked, on a bucket that cannot take one,
    fails the confirmation (PutObjectRetention refused) instead of being reported retained."""
    from coderctl.context import App
    from coderctl.errors import CoderctlError
    from coderctl.ops import s3lock
    from coderctl.ops.s3 import Bucket as S3Bucket
    from coderctl.ops.s3 import Retention
    from coderctl.profile import load_settings

    unlocked.server.client().put_object(Bucket=unlocked.name, Key="backups/x.dump", Body=b"x")
    bucket = S3Bucket(App(settings=load_settings(flags={"timeout": 3}, environ={})), unlocked.name)
    wanted = s3lock.ObjectLock("GOVERNANCE", 1).retention(datetime.now(UTC))
    with pytest.raises(CoderctlError, match="could not set the retention of backups/x.dump: InvalidRequest"):
        s3lock.confirm(bucket, "backups/x.dump", wanted)
    assert not s3lock.holds(Retention("GOVERNANCE", wanted.until - timedelta(seconds=1)), wanted)
    assert not s3lock.holds(Retention("COMPLIANCE", wanted.until), wanted)
    assert s3lock.holds(Retention("GOVERNANCE", wanted.until + timedelta(days=1)), wanted)


def _local_backup(lab: Lab, directory: Path) -> str:
    r = run_cli(*lab.args("-o", "json"), "backup", "create", "--output-dir", str(directory), *direct(lab))
    assert r.code == 0, r.output
    return Path(json.loads(r.stdout)["result"]["file"]).name


def test_sync_into_a_locked_bucket_retains_each_copy_from_its_creation(locked: Bucket, lab: Lab,
                                                                       tmp_path: Path) -> None:
    local = tmp_path / "backups"
    name = _local_backup(lab, local)
    r, doc = locked.run("backup", "sync", "--from", str(local), "--to", locked.url, *LOCK)
    assert r.code == 0, r.output
    key = f"backups/{name}"
    created = _created_at(locked, key)
    until = created + timedelta(days=3)
    shown = until.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert doc["result"]["backups"] == [{"file": name, "size": doc["result"]["backups"][0]["size"],
                                         "action": f"copied, retained COMPLIANCE until {shown}"}]
    assert "object lock COMPLIANCE for 3 days" in next(s for s in doc["steps"] if s["name"] == "list")["detail"]
    client = locked.server.client()
    for k in (key, key + ".json"):
        head = client.head_object(Bucket=locked.name, Key=k)
        assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] == until
        with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
            client.delete_object(Bucket=locked.name, Key=k, VersionId=head["VersionId"])
    r, doc = locked.run("backup", "sync", "--from", str(local), "--to", locked.url, *LOCK)
    assert r.code == 0 and doc["result"]["backups"][0]["action"] == "present", r.output
    assert locked.uploads() == []


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_sync_into_a_bucket_without_object_lock_is_refused_before_any_upload(unlocked: Bucket, lab: Lab,
                                                                            tmp_path: Path, how: str) -> None:
    local = tmp_path / "backups"
    _local_backup(lab, local)
    env = {"CODERCTL_S3_OBJECT_LOCK_MODE": "GOVERNANCE", "CODERCTL_S3_OBJECT_LOCK_DAYS": "7"}
    r, doc = unlocked.run("backup", "sync", "--from", str(local), "--to", unlocked.url,
                          *(LOCK if how == "flags" else ()), env=env if how == "environment" else None)
    assert r.code == 2, r.output
    lines = errors(r.stderr)
    assert len(lines) == 1 and "has no object lock configuration" in lines[0] and "nothing was uploaded" in lines[0]
    assert unlocked.objects() == [] and unlocked.uploads() == []


def test_sync_lock_flags_need_a_bucket(locked: Bucket, lab: Lab, tmp_path: Path) -> None:
    r, _doc = locked.run("backup", "sync", "--from", locked.url, "--to", str(tmp_path / "copy"), *LOCK)
    assert r.code == 2 and "object lock is for a backup written to a bucket" in r.stderr, r.output
    assert not (tmp_path / "copy").exists()


def test_a_copied_backup_keeps_what_remains_of_its_retention() -> None:
    from coderctl.ops import s3lock

    lock = s3lock.ObjectLock("GOVERNANCE", 7)
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    recent = s3lock.for_backup(lock, now - timedelta(days=2), now)
    assert recent is not None and recent.mode == "GOVERNANCE" and recent.until == now + timedelta(days=5)
    assert s3lock.for_backup(lock, now - timedelta(days=7), now) is None
    assert s3lock.for_backup(lock, now - timedelta(days=30), now) is None
    fresh = s3lock.for_backup(lock, None, now)
    assert fresh is not None and fresh.until == now + timedelta(days=7)


def test_sync_completes_a_locked_copy_interrupted_before_its_manifest(locked: Bucket, lab: Lab,
                                                                      tmp_path: Path) -> None:
    """A sync killed between the dump and its manifest leaves a locked dump nobody can remove: the next sync
    recognises it byte for byte and writes only the manifest; a dump that differs is left alone."""
    local = tmp_path / "backups"
    name = _local_backup(lab, local)
    key = f"backups/{name}"
    client = locked.server.client()
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    client.put_object(Bucket=locked.name, Key=key, Body=(local / name).read_bytes(),
                      ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until, ChecksumAlgorithm="SHA256")
    r, doc = locked.run("backup", "sync", "--from", str(local), "--to", locked.url, *LOCK)
    assert r.code == 0, r.output
    action = doc["result"]["backups"][0]["action"]
    assert action.startswith("copied, only its manifest was missing") and "manifest retained COMPLIANCE" in action
    assert client.head_object(Bucket=locked.name, Key=key + ".json")["ObjectLockMode"] == "COMPLIANCE"
    versions = client.list_object_versions(Bucket=locked.name, Prefix=key)["Versions"]
    assert sorted(v["Key"] for v in versions) == [key, key + ".json"]
    r, doc = locked.run("backup", "list", locked.url)
    assert r.code == 0 and name in r.stdout and "no-manifest" not in r.stdout, r.output

    other = _local_backup(lab, local)  # in the same directory: another name, even within the same second
    assert other != name
    body = bytearray((local / other).read_bytes())
    body[-1] ^= 1
    client.put_object(Bucket=locked.name, Key=f"backups/{other}", Body=bytes(body))
    r, doc = locked.run("backup", "sync", "--from", str(local), "--to", locked.url, *LOCK)
    assert r.code == 1, r.output
    row = next(b for b in doc["result"]["backups"] if b["file"] == other)
    assert row["action"].startswith("failed: ") and "exists without a manifest and differs" in row["action"]
    assert "SHA-256" in row["action"] and f"backups/{other}.json" not in locked.objects()
