"""Backups in an S3-compatible bucket (a real `rclone serve s3` on loopback): create -> list -> verify ->
restore compared table by table; failures that leave no object under a backup's name and no multipart upload
behind; one clear line and the documented exit code for each configuration error; no credential anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backup_support import (
    copy_of_coder,
    deployment_replicas,
    direct,
    exec_argv_text,
    pod_path_first,
    scratch_database,
    use_database,
    wrapper,
)
from clirun import ROOT
from lab.deployment import Lab
from s3_support import Bucket, lab_s3, s3  # noqa: F401

FAIL_MIDWAY = '"$REAL_BIN/pg_dump" "$@" | head -c 40000\nexit 1'
CHANGE = "DELETE FROM workspace_agent_logs"


def steps(doc: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in doc.get("steps", [])}


def errors(stderr: str) -> list[str]:
    """stderr without the warning that --database-url (used by --via direct here) prints."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("coderctl: warning:")]


def backups(s3: Bucket) -> list[str]:
    return [k for k in s3.objects() if k.endswith((".dump", ".sql"))]


@pytest.mark.flaky(reruns=2)  # exec handshakes can time out under load
def test_round_trip_create_list_verify_restore(s3: Bucket, lab: Lab, tmp_path: Path) -> None:
    with copy_of_coder(lab) as db:
        use_database(lab, db)
        r, doc = s3.run("backup", "create", "--to", s3.url)
        assert r.code == 0, r.stderr
        assert list(steps(doc)) == ["prepare", "dump", "verify", "commit"] and set(steps(doc).values()) == {"ok"}
        result = doc["result"]
        key = result["file"].removeprefix(f"s3://{s3.name}/")
        assert key.startswith("backups/") and key.endswith(".dump")
        assert s3.objects() == [key, key + ".json"] and s3.uploads() == []
        assert result["verified"] and result["rows"] > 0
        manifest = json.loads(s3.server.client().get_object(Bucket=s3.name, Key=key + ".json")["Body"].read())
        assert manifest["size"] == result["size"] and manifest["sha256"] == result["sha256"]
        assert manifest["verification"]["status"] == "ok"
        backed_up = lab.postgres.table_fingerprint(db)

        r, doc = s3.run("backup", "list", s3.url)
        assert r.code == 0, r.stderr
        assert [(b["file"], b["checksum"], b["verified"]) for b in doc["backups"]] == [(Path(key).name, "ok", True)]

        r, doc = s3.run("backup", "verify", result["file"])
        assert r.code == 0, r.stderr
        assert steps(doc) == {"manifest": "ok", "checksum": "ok", "read-back": "ok"}
        assert doc["result"]["rows"] == result["rows"]
        with scratch_database(lab) as scratch:
            r, doc = s3.run("backup", "verify", result["file"] + ".json", "--restore-to",
                            lab.postgres.url(database=scratch))
            assert r.code == 0, r.output
            assert list(steps(doc)) == ["manifest", "checksum", "read-back", "restore-to"]
            assert lab.postgres.table_fingerprint(scratch) == backed_up

        with lab.postgres.connect(database=db) as conn:
            conn.execute(CHANGE)
        assert lab.postgres.table_fingerprint(db) != backed_up
        r, doc = s3.run("backup", "restore", result["file"], "--yes", "--output-dir", str(tmp_path / "local"))
        s3.assert_no_secrets(exec_argv_text(lab))
        assert r.code == 0, r.stderr
        assert set(steps(doc).values()) == {"ok"}
        assert lab.postgres.table_fingerprint(db) == backed_up
        assert deployment_replicas(lab) == 1
        assert (tmp_path / "local" / Path(key).name).exists()  # the verified copy it restored from


def test_damaged_object_fails_verify_and_list(s3: Bucket, lab: Lab) -> None:
    r, doc = s3.run("backup", "create", "--to", s3.url, *direct(lab))
    assert r.code == 0, r.stderr
    key = doc["result"]["file"].removeprefix(f"s3://{s3.name}/")
    client = s3.server.client()
    data = client.get_object(Bucket=s3.name, Key=key)["Body"].read()
    client.put_object(Bucket=s3.name, Key=key, Body=data[:-10] + b"x" * 10)
    r, doc = s3.run("backup", "verify", doc["result"]["file"])
    assert r.code == 1 and steps(doc)["checksum"] == "failed", r.output
    r, doc = s3.run("backup", "list", s3.url)
    assert r.code == 1 and doc["backups"][0]["checksum"] == "mismatch"


@pytest.mark.fake_only
@pytest.mark.flaky(reruns=2)
def test_pg_dump_failing_midway_leaves_no_object_and_no_upload(s3: Bucket, lab: Lab, tmp_path: Path) -> None:
    pod_path_first(lab, wrapper(tmp_path / "bin", "pg_dump", FAIL_MIDWAY).parent)
    r, doc = s3.run("backup", "create", "--to", s3.url)
    assert r.code == 1, r.output
    assert "pg_dump in coder/coder-coder-postgresql-0 failed (exit 1)" in r.stderr
    assert steps(doc)["dump"] == "failed"
    assert s3.objects() == [] and s3.uploads() == []


def test_verification_failure_aborts_the_upload(s3: Bucket, lab: Lab, tmp_path: Path) -> None:
    """pg_dump exits 0 but its archive is cut short: the upload is never completed."""
    real = lab.postgres.bindir / "pg_dump"
    bindir = wrapper(tmp_path / "bin", "pg_dump", f'case "$1" in --version) exec "{real}" --version;; esac\n'
                     f'"{real}" "$@" | head -c 40000').parent
    r, doc = s3.run("backup", "create", "--to", s3.url, *direct(lab), env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert r.code == 1 and steps(doc)["verify"] == "failed", r.output
    assert s3.objects() == [] and s3.uploads() == []


def test_connection_dropped_midway_leaves_no_object_and_cleanup_removes_the_upload(s3: Bucket, lab: Lab) -> None:
    proxy = s3.server.proxy
    assert proxy is not None
    proxy.cut_after(30_000)
    try:
        env = s3.server.env(via_proxy=True)
        r, doc = s3.run("backup", "create", "--to", s3.url, *direct(lab), env=env)
    finally:
        proxy.restore()
    assert r.code == 3, r.output
    assert len(errors(r.stderr)) == 1
    assert "cannot reach S3 endpoint" in r.stderr and f"coderctl backup cleanup s3://{s3.name}/backups" in r.stderr
    assert s3.objects() == []
    assert len(s3.uploads()) == 1
    r, doc = s3.run("backup", "list", s3.url)
    assert [b["checksum"] for b in doc["backups"]] == ["partial"]
    r, doc = s3.run("backup", "cleanup", s3.url, "--older-than", "1h")
    assert r.code == 0 and [u["action"] for u in doc["result"]["uploads"]] == ["kept (too recent)"]
    r, doc = s3.run("backup", "cleanup", s3.url, "--older-than", "0")
    assert r.code == 0 and [u["action"] for u in doc["result"]["uploads"]] == ["aborted"]
    assert s3.objects() == [] and s3.uploads() == []


def test_prune_applies_the_same_rules_in_the_bucket(s3: Bucket, lab: Lab) -> None:
    made = []
    for extra in ([], ["--no-verify"], ["--no-verify"]):
        second = int(time.time())
        while int(time.time()) == second:  # backups of the same second sort by name, not by their -2 suffix
            time.sleep(0.05)
        r, doc = s3.run("backup", "create", "--to", s3.url, *direct(lab), *extra)
        assert r.code == 0, r.stderr
        made.append(Path(doc["result"]["file"]).name)
    r, doc = s3.run("backup", "prune", s3.url, "--keep-last", "1", "--dry-run")
    assert r.code == 0, r.output
    actions = {b["file"]: (b["action"], b["reasons"]) for b in doc["result"]["backups"]}
    assert actions == {made[2]: ("keep", ["last #1"]), made[1]: ("would remove", ["no rule keeps it"]),
                       made[0]: ("keep", ["newest verified backup"])}
    assert len(backups(s3)) == 3
    r, doc = s3.run("backup", "prune", s3.url, "--keep-last", "1")
    assert r.code == 0, r.output
    assert s3.objects() == sorted(f"backups/{n}{ext}" for n in (made[0], made[2]) for ext in ("", ".json"))


@pytest.mark.parametrize("case", ["wrong credentials", "missing bucket", "unreachable endpoint"])
def test_configuration_errors_are_one_line(s3: Bucket, lab: Lab, case: str) -> None:
    env: dict[str, str] = {}
    url = s3.url
    expected = {"wrong credentials": (2, "refused the credentials"),
                "missing bucket": (2, "does not exist"),
                "unreachable endpoint": (1, "cannot reach S3 endpoint")}[case]
    if case == "wrong credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-" + "x" * 20
    elif case == "missing bucket":
        url = "s3://no-such-bucket-here/backups/"
    else:
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # discard port: nothing listens
    for args in (["backup", "create", "--to", url, *direct(lab)], ["backup", "list", url],
                 ["backup", "verify", url + "x.dump"], ["backup", "prune", url, "--keep-last", "1"],
                 ["backup", "cleanup", url]):
        r, _doc = s3.run(*args, env=env)
        assert r.code == expected[0], (args, r.output)
        lines = errors(r.stderr)
        assert len(lines) == 1 and expected[1] in lines[0], (args, r.stderr)
        assert "not-the-secret" not in r.output
    assert s3.objects() == []


def test_help_does_not_import_boto(s3: Bucket) -> None:
    code = ("import sys; from coderctl.cli import cli\n"
            "cli.main(args=['backup', 'create', '--help'], standalone_mode=False)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer')),"
            " file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stderr.strip() == "[]"


def test_no_credential_in_argv_of_anything_started(s3: Bucket, lab: Lab) -> None:
    r, _doc = s3.run("backup", "create", "--to", s3.url)
    assert r.code == 0, r.stderr
    assert s3.server.secret_key not in exec_argv_text(lab)


def test_sync_both_ways_copies_what_is_missing_checked_by_checksum(s3: Bucket, lab: Lab, tmp_path: Path) -> None:
    local = tmp_path / "local"
    made = []
    for _ in range(2):
        r, doc = s3.run("backup", "create", "--to", str(local), *direct(lab))
        assert r.code == 0, r.stderr
        made.append(Path(doc["result"]["file"]))
    good, damaged = made
    damaged.write_bytes(damaged.read_bytes()[:-5] + b"xxxxx")  # same size, other SHA-256

    r, doc = s3.run("backup", "sync", "--from", str(local), "--to", s3.url)
    assert r.code == 1, r.output
    actions = {b["file"]: b["action"] for b in doc["result"]["backups"]}
    assert good.name in actions, json.dumps(doc)
    assert actions[good.name] == "copied" and actions[damaged.name].startswith("failed: ")
    assert "does not match its manifest" in actions[damaged.name]
    assert s3.objects() == [f"backups/{good.name}", f"backups/{good.name}.json"] and s3.uploads() == []

    damaged.unlink()
    Path(f"{damaged}.json").unlink()
    r, doc = s3.run("backup", "sync", "--from", str(local), "--to", s3.url)
    assert r.code == 0 and [b["action"] for b in doc["result"]["backups"]] == ["present"], r.output

    back = tmp_path / "back"
    r, doc = s3.run("backup", "sync", "--from", s3.url, "--to", str(back))
    assert r.code == 0 and [b["action"] for b in doc["result"]["backups"]] == ["copied"], r.output
    assert (back / good.name).read_bytes() == good.read_bytes()
    assert json.loads((back / f"{good.name}.json").read_text())["sha256"] == json.loads(
        Path(f"{good}.json").read_text())["sha256"]
    r, doc = s3.run("backup", "verify", str(back / good.name))
    assert r.code == 0, r.output


def test_sync_copies_a_dump_whose_manifest_alone_is_in_the_bucket(s3: Bucket, lab: Lab, tmp_path: Path) -> None:
    """A manifest without its data object is a missing backup, not a present one."""
    local = tmp_path / "local"
    r, doc = s3.run("backup", "create", "--to", str(local), *direct(lab))
    assert r.code == 0, r.stderr
    made = Path(doc["result"]["file"])
    s3.server.client().put_object(Bucket=s3.name, Key=f"backups/{made.name}.json",
                                  Body=Path(f"{made}.json").read_bytes())
    r, doc = s3.run("backup", "sync", "--from", str(local), "--to", s3.url)
    assert r.code == 0 and [b["action"] for b in doc["result"]["backups"]] == ["copied"], r.output
    assert s3.objects() == [f"backups/{made.name}", f"backups/{made.name}.json"]
    r, doc = s3.run("backup", "verify", f"{s3.url}{made.name}")
    assert r.code == 0, r.output


def test_s3_urls() -> None:
    from coderctl.errors import UsageError
    from coderctl.ops.storage import S3URL

    url = S3URL.parse("s3://coder-backups/coder/daily")
    assert (url.bucket, url.prefix, url.name) == ("coder-backups", "coder/daily/", "daily")
    assert str(url.child("x.dump")) == "s3://coder-backups/coder/daily/x.dump"
    assert S3URL.parse("s3://coder-backups").prefix == ""
    for bad in ("s3://", "s3://UPPER/x", "s3://b/a//c", "s3://bucket/../x", "/tmp/x"):
        with pytest.raises(UsageError):
            S3URL.parse(bad)


def test_part_sizes_reach_220_gb_in_10000_parts() -> None:
    from coderctl.ops.s3upload import MAX_PARTS, part_size

    assert part_size(1) == 8 << 20 and part_size(2501) == 16 << 20 and part_size(5001) == 32 << 20
    assert sum(part_size(n) for n in range(1, MAX_PARTS + 1)) > 220e9


def test_a_bucket_given_as_output_dir_is_refused(s3: Bucket) -> None:
    r, _doc = s3.run("backup", "create", "--output-dir", s3.url)
    assert r.code == 2 and "--to s3://" in r.stderr


def test_no_credentials_is_a_configuration_error(s3: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the metadata endpoint disabled (as everywhere in these tests) nothing is looked up on the network."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    r, _doc = s3.run("backup", "list", s3.url)
    assert r.code == 2 and errors(r.stderr) == ["coderctl: error: no S3 credentials: set AWS_ACCESS_KEY_ID and "
                                                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a shared credentials file, "
                                                "or the s3_credentials_secret setting"]
