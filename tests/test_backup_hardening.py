"""Unsafe defaults of the backup commands, against the lab: a scratch database that is not empty, a backup
directory that is not coderctl's to tighten."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from backup_support import copy_of_coder, create, files, scratch_database
from clirun import run_cli
from lab.deployment import Lab


def _backup(lab: Lab, directory: Path, fmt: str = "custom") -> Path:
    r, doc = create(lab, directory, "--format", fmt)
    assert r.code == 0, r.stderr
    return Path(doc["result"]["file"])


def _verify_into(lab: Lab, backup: Path, url: str) -> tuple[int, dict[str, object], str]:
    r = run_cli(*lab.args("-o", "json"), "backup", "verify", str(backup), "--restore-to", url)
    lab.assert_no_secrets(r.stdout, r.stderr)
    assert "Traceback" not in r.output
    return r.code, json.loads(r.stdout), r.stderr


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_restore_to_a_database_with_data_is_refused_before_anything_runs(lab: Lab, tmp_path: Path, fmt: str) -> None:
    """A plain dump starts with DROP statements: restoring it into a database in use replaced that database
    (exit 0, every step ok). Now nothing is read or run, for either format."""
    with copy_of_coder(lab) as db:
        before = lab.postgres.table_fingerprint(db)
        code, doc, stderr = _verify_into(lab, _backup(lab, tmp_path, fmt), lab.postgres.url(database=db))
        assert code == 2, stderr
        assert stderr.count("\n") == 1 and "is not empty" in stderr and "nothing was read or restored" in stderr
        assert f"--restore-to database {db}" in stderr
        assert doc["steps"] == [] and doc["result"]["status"] == "failed"  # type: ignore[index]
        assert lab.postgres.table_fingerprint(db) == before


@pytest.mark.parametrize("what", ["CREATE TABLE t (id int)", "CREATE SEQUENCE s", "CREATE VIEW v AS SELECT 1 AS one",
                                  "CREATE SCHEMA app; CREATE TABLE app.t (id int)"])
def test_restore_to_refuses_any_user_relation(lab: Lab, tmp_path: Path, what: str) -> None:
    with scratch_database(lab) as db:
        with lab.postgres.connect(database=db, autocommit=True) as conn:
            conn.execute(what)  # type: ignore[arg-type]
        code, _, stderr = _verify_into(lab, _backup(lab, tmp_path, "plain"), lab.postgres.url(database=db))
        assert code == 2 and "is not empty" in stderr, stderr


def test_a_malformed_restore_to_url_is_refused_before_the_backup_is_read(lab: Lab, tmp_path: Path) -> None:
    backup = _backup(lab, tmp_path)
    code, doc, stderr = _verify_into(lab, backup, "postgresql://coder:4821/qwerty@127.0.0.1:1/x")
    assert code == 2 and stderr.count("\n") == 1 and "database URL" in stderr, stderr
    assert doc["steps"] == []


def test_restore_to_an_empty_database_still_works(lab: Lab, tmp_path: Path) -> None:
    backup = _backup(lab, tmp_path, "plain")
    with scratch_database(lab) as db:
        code, doc, stderr = _verify_into(lab, backup, lab.postgres.url(database=db))
        assert code == 0, stderr
        assert [s["name"] for s in doc["steps"]] == ["manifest", "checksum", "read-back",  # type: ignore[index]
                                                     "restore-to"]


def test_an_output_dir_everyone_can_write_is_refused_and_left_as_it_is(lab: Lab, tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    r = run_cli(*lab.args(), "backup", "create", "--output-dir", str(shared))
    assert r.code == 2 and r.stderr.count("\n") == 1 and "writable by every user" in r.stderr, r.output
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777 and files(shared) == []
    link = tmp_path / "link"
    link.symlink_to(shared)
    r = run_cli(*lab.args(), "backup", "create", "--output-dir", str(link))
    assert r.code == 2 and stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_an_existing_output_dir_keeps_its_mode(lab: Lab, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    mine.chmod(0o755)
    r, doc = create(lab, mine)
    assert r.code == 0, r.stderr
    assert stat.S_IMODE(mine.stat().st_mode) == 0o755
    assert stat.S_IMODE(Path(doc["result"]["file"]).stat().st_mode) == 0o600
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o2770)
    r, doc = create(lab, group)
    assert r.code == 0, r.stderr
    prepare = doc["steps"][0]
    assert prepare["status"] == "warn" and "writable by its group" in prepare["detail"]
    assert stat.S_IMODE(group.stat().st_mode) == 0o2770
