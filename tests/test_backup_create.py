"""backup create against the lab: exec and direct dumps that restore to identical tables, the manifest,
file modes, metrics, and no secret anywhere."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from backup_support import create, direct, exec_argv_text, files, scratch_database
from clirun import run_cli
from lab.deployment import Lab


@pytest.mark.parametrize("via", ["exec", "direct"])
def test_backup_restores_to_identical_tables(lab: Lab, tmp_path: Path, via: str) -> None:
    out = tmp_path / "backups"
    r, doc = create(lab, out, *(direct(lab) if via == "direct" else []))
    assert r.code == 0, r.stderr
    result = doc["result"]
    assert result["status"] == "ok" and result["verified"] is True and result["via"] == via
    assert [s["name"] for s in doc["steps"]] == ["prepare", "dump", "verify", "commit"]
    assert all(s["status"] == "ok" for s in doc["steps"])
    expected = lab.postgres.table_fingerprint("coder")
    with scratch_database(lab) as db:
        v = run_cli(*lab.args("-o", "json"), "backup", "verify", result["file"], "--restore-to",
                    lab.postgres.url(database=db))
        lab.assert_no_secrets(v.stdout, v.stderr)
        assert v.code == 0, v.output
        assert [s["name"] for s in json.loads(v.stdout)["steps"]] == ["manifest", "checksum", "read-back",
                                                                     "restore-to"]
        assert lab.postgres.table_fingerprint(db) == expected


def test_manifest_modes_and_names(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "backups"
    r, doc = create(lab, out)
    assert r.code == 0, r.stderr
    dump = Path(doc["result"]["file"])
    assert files(out) == [dump.name, dump.name + ".json"]
    assert dump.name.startswith("coder-") and dump.suffix == ".dump"
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(doc["result"]["manifest"]).stat().st_mode) == 0o600
    manifest = json.loads(Path(doc["result"]["manifest"]).read_text())
    expected = lab.postgres.table_fingerprint("coder")
    assert manifest["tables"] == {f"public.{t}": rows for t, (rows, _) in expected.items()}
    assert manifest["size"] == dump.stat().st_size
    import hashlib

    assert manifest["sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert manifest["via"] == "exec" and manifest["format"] == "custom" and manifest["database"] == "coder"
    assert manifest["server_version"].startswith(lab.postgres.version.split()[0])
    assert manifest["pg_dump_version"].startswith("15")
    assert manifest["coder_version"] == "v2.25.0"
    assert manifest["verification"]["status"] == "ok"
    assert manifest["coderctl"] and manifest["created_at"].endswith("Z") and manifest["duration_s"] > 0
    assert manifest["source"]["pod"] == "coder-coder-postgresql-0" and manifest["source"]["credentials"] == "pod"
    lab.assert_no_secrets(json.dumps(manifest))


def test_plain_format_and_no_verify(lab: Lab, tmp_path: Path) -> None:
    r, doc = create(lab, tmp_path / "plain", "--format", "plain", "--via", "direct",
                    "--database-url", lab.postgres.url())
    assert r.code == 0, r.stderr
    assert doc["result"]["file"].endswith(".sql") and doc["result"]["verified"] is True
    expected = lab.postgres.table_fingerprint("coder")
    with scratch_database(lab) as db:
        v = run_cli(*lab.args(), "backup", "verify", doc["result"]["file"], "--restore-to",
                    lab.postgres.url(database=db))
        assert v.code == 0, v.output
        assert lab.postgres.table_fingerprint(db) == expected
    r, doc = create(lab, tmp_path / "fast", "--no-verify")
    assert r.code == 0 and doc["result"]["verified"] is False
    assert next(s for s in doc["steps"] if s["name"] == "verify")["status"] == "skipped"


def test_password_from_stdin_when_the_pod_has_none(lab: Lab, tmp_path: Path) -> None:
    pod = lab.kube.get("Pod", "coder", "coder-coder-postgresql-0")
    assert pod is not None
    container = pod["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if "PASSWORD" not in e["name"]]
    lab.kube.put(pod)
    from lab.deployment import bitnami_pod_env

    env = {k: v for k, v in bitnami_pod_env(lab.postgres).items() if "PASSWORD" not in k}
    lab.kube.set_exec("coder", "coder-coder-postgresql-0", env=env)
    r, doc = create(lab, tmp_path / "b")
    assert r.code == 0, r.stderr
    manifest = json.loads(Path(doc["result"]["manifest"]).read_text())
    assert manifest["source"]["credentials"] == "stdin"
    lab.assert_no_secrets(exec_argv_text(lab))


def test_no_secret_in_output_manifest_metrics_or_exec_argv(lab: Lab, tmp_path: Path) -> None:
    metrics = tmp_path / "coderctl_backup.prom"
    r = run_cli(*lab.args(), "backup", "create", "--output-dir", str(tmp_path / "b"), "--metrics-file", str(metrics))
    assert r.code == 0, r.output
    texts = [r.stdout, r.stderr, metrics.read_text(), exec_argv_text(lab)]
    texts += [p.read_text() for p in (tmp_path / "b").glob("*.json")]
    r2 = run_cli(*lab.args("-o", "json"), "backup", "create", "--output-dir", str(tmp_path / "b"),
                 *direct(lab))
    assert r2.code == 0, r2.output
    texts += [r2.stdout, r2.stderr]
    lab.assert_no_secrets(*texts)
    assert lab.kube.exec_log and all(e["command"][0] == "sh" for e in lab.kube.exec_log)


def test_metrics_file(lab: Lab, tmp_path: Path) -> None:
    metrics = tmp_path / "coderctl_backup.prom"
    r, doc = create(lab, tmp_path / "b", "--metrics-file", str(metrics))
    assert r.code == 0
    samples = _samples(metrics.read_text())
    labels = '{namespace="coder",database="coder",destination="dir"}'
    assert samples[f"coderctl_backup_size_bytes{labels}"] == doc["result"]["size"]
    assert samples[f"coderctl_backup_verified{labels}"] == 1
    assert samples[f"coderctl_backup_last_run_success{labels}"] == 1
    success = samples[f"coderctl_backup_last_success_timestamp_seconds{labels}"]
    assert samples[f"coderctl_backup_duration_seconds{labels}"] > 0
    assert "# TYPE coderctl_backup_size_bytes gauge" in metrics.read_text()
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644

    lab.kube.exec_fault = {"drop_after_bytes": 100}
    r, _ = create(lab, tmp_path / "b", "--metrics-file", str(metrics))
    assert r.code == 1
    after = _samples(metrics.read_text())
    assert after[f"coderctl_backup_last_run_success{labels}"] == 0
    assert after[f"coderctl_backup_last_success_timestamp_seconds{labels}"] == success
    assert after[f"coderctl_backup_size_bytes{labels}"] == doc["result"]["size"]


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_text_output_when_piped_has_no_progress(lab: Lab, tmp_path: Path) -> None:
    r = run_cli(*lab.args(), "backup", "create", "--output-dir", str(tmp_path / "b"))
    assert r.code == 0, r.output
    assert r.stderr == "" and "\x1b[" not in r.stdout
    assert "[ok]" in r.stdout and "verified" in r.stdout
    listing = run_cli(*lab.args(), "backup", "list", str(tmp_path / "b"))
    assert listing.code == 0
    header, row = listing.stdout.splitlines()
    assert header.split() == ["NAME", "AGE", "SIZE", "VIA", "VERIFIED", "CHECKSUM"]
    assert row.split()[-3:] == ["exec", "yes", "ok"]


def test_direct_needs_a_reachable_database(lab: Lab, tmp_path: Path) -> None:
    url = lab.postgres.url().replace(f":{lab.postgres.port}/", ":1/")
    r, _ = create(lab, tmp_path / "b", "--via", "direct", "--database-url", url)
    assert r.code == 1 and "cannot connect to 127.0.0.1:1" in r.stderr
    assert files(tmp_path / "b") == []


def test_database_url_without_password_takes_pgpassword(lab, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import quote

    from clirun import run_cli

    url = lab.postgres.url().replace(f":{quote(lab.postgres.user_password, safe='')}@", "@")
    assert lab.postgres.user_password not in url
    r = run_cli(*lab.args("-o", "json"), "backup", "create", "--via", "direct", "--database-url", url,
                "--output-dir", str(tmp_path / "b"), env={"PGPASSWORD": lab.postgres.user_password})
    assert r.code == 0, r.output
    assert "warning" not in r.stderr
    lab.assert_no_secrets(r.stdout, r.stderr)
    r = run_cli(*lab.args("-o", "json"), "backup", "create", "--via", "direct", "--database-url", lab.postgres.url(),
                "--output-dir", str(tmp_path / "c"))
    assert r.code == 0 and "visible to other users in the process list" in r.stderr


def test_compression_level_reaches_pg_dump_and_the_manifest(lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json as _json

    from clirun import run_cli

    sizes = {}
    for level in ("0", "6"):
        out = tmp_path / level
        r = run_cli(*lab.args("-o", "json"), "backup", "create", "--compress", level, "--output-dir", str(out))
        assert r.code == 0, r.output
        manifest = _json.loads(next(out.glob("*.json")).read_text())
        assert manifest["compression"] == int(level)
        sizes[level] = manifest["size"]
    assert sizes["0"] > sizes["6"] * 2
    assert run_cli(*lab.args(), "backup", "create", "--compress", "10").code == 2
