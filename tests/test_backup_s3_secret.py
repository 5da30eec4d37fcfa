"""The backup destination setting and S3 credentials from a Kubernetes Secret (issue 13, the CronJob's way):
create, list and verify with no path and no AWS variable in the environment, the bucket in the metrics, and
no credential of the Secret in any output, metrics file or argv."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from backup_support import direct, exec_argv_text
from clirun import run_cli
from lab.deployment import Lab
from s3_support import Bucket, lab_s3, s3  # noqa: F401

SECRET = "coderctl-backup-s3"
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


def put_secret(lab: Lab, data: dict[str, str], name: str = SECRET) -> None:
    lab.kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "coder"},
                  "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def only_the_secret(s3: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Secret holds the credentials, endpoint and region; the environment names it and the destination."""
    put_secret(s3.lab, s3.server.env())
    for var in AWS_ENV:
        monkeypatch.delenv(var)
    monkeypatch.setenv("CODERCTL_S3_CREDENTIALS_SECRET", f"coder/{SECRET}")
    monkeypatch.setenv("CODERCTL_BACKUP_DESTINATION", s3.url)


def labels(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(name + "{")).split(" ")[0][len(name):]


def test_create_list_verify_with_credentials_only_from_the_secret(s3: Bucket, lab: Lab, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    only_the_secret(s3, monkeypatch)
    metrics = tmp_path / "coderctl_backup.prom"
    texts: list[str] = []

    r, doc = s3.run("backup", "create", *direct(lab), "--metrics-file", str(metrics))
    texts += [r.stdout, r.stderr]
    assert r.code == 0, r.output
    made = doc["result"]["file"]
    assert made.startswith(f"s3://{s3.name}/backups/")
    prepare = next(step for step in doc["steps"] if step["name"] == "prepare")
    assert f"credentials: Secret coder/{SECRET}" in prepare["detail"]
    assert s3.server.endpoint in prepare["detail"]  # configuration from the Secret stays readable
    text = metrics.read_text()
    texts.append(text)
    assert labels(text, "coderctl_backup_last_run_success") == (
        f'{{namespace="coder",database="coder",destination="s3",bucket="{s3.name}",prefix="backups/"}}')

    r, doc = s3.run("backup", "list")
    texts += [r.stdout, r.stderr]
    assert r.code == 0, r.output
    assert doc["directory"] == s3.url
    assert [b["checksum"] for b in doc["backups"]] == ["ok"]

    r, doc = s3.run("backup", "verify")
    texts += [r.stdout, r.stderr]
    assert r.code == 0, r.output
    assert Path(made).name in json.dumps(doc["result"]) and doc["result"]["rows"] > 0

    r, doc = s3.run("backup", "cleanup", "--dry-run")
    texts += [r.stdout, r.stderr]
    assert r.code == 0 and doc["result"]["uploads"] == [], r.output

    texts.append(exec_argv_text(lab))
    for text in texts:
        assert s3.server.secret_key not in text and s3.server.access_key not in text


def test_environment_credentials_win_over_the_secret(s3: Bucket, lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Secret is then not read at all (neither its keys nor its endpoint)."""
    only_the_secret(s3, monkeypatch)
    wrong = "not-the-secret-" + "y" * 20
    r, _doc = s3.run("backup", "list", env={**s3.server.env(), "AWS_SECRET_ACCESS_KEY": wrong})
    assert r.code == 2 and "refused the credentials" in r.stderr and "AWS_PROFILE" in r.stderr, r.output
    assert wrong not in r.output


@pytest.mark.parametrize("case", ["missing secret", "missing key", "wrong key"])
def test_a_bad_secret_is_one_line_exit_2(s3: Bucket, lab: Lab, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    only_the_secret(s3, monkeypatch)
    wrong = "not-the-secret-" + "z" * 20
    if case == "missing secret":
        lab.kube.delete("Secret", "coder", SECRET)
        needle = f"Secret coder/{SECRET} (the s3_credentials_secret setting) does not exist"
    elif case == "missing key":
        put_secret(lab, {"AWS_ACCESS_KEY_ID": s3.server.access_key})
        needle = "has no AWS_SECRET_ACCESS_KEY (it holds AWS_ACCESS_KEY_ID)"
    else:
        put_secret(lab, {**s3.server.env(), "AWS_SECRET_ACCESS_KEY": wrong})
        needle = f"in the Secret coder/{SECRET}"
    r, _doc = s3.run("backup", "list")
    lines = r.stderr.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and needle in lines[0], r.output
    assert wrong not in r.output and s3.server.access_key not in r.output


def test_destination_wins_over_backup_dir_and_config_show_lists_it(lab: Lab, tmp_path: Path) -> None:
    env = {"CODERCTL_BACKUP_DIR": str(tmp_path / "dir"), "CODERCTL_BACKUP_DESTINATION": str(tmp_path / "dest")}
    r = run_cli(*lab.args("-o", "json"), "backup", "create", *direct(lab), env=env)
    assert r.code == 0, r.output
    assert Path(json.loads(r.stdout)["result"]["file"]).parent == tmp_path / "dest"
    assert not (tmp_path / "dir").exists()
    r = run_cli(*lab.args("-o", "json"), "backup", "list", env=env)
    assert json.loads(r.stdout)["directory"] == str(tmp_path / "dest")
    r = run_cli(*lab.args("-o", "json"), "backup", "create", *direct(lab), "--to", str(tmp_path / "flag"), env=env)
    assert r.code == 0 and Path(json.loads(r.stdout)["result"]["file"]).parent == tmp_path / "flag"

    r = run_cli("-o", "json", "config", "show", env={**env, "CODERCTL_S3_CREDENTIALS_SECRET": "coder/x"})
    values = json.loads(r.stdout)["values"]
    assert values["backup_destination"] == {"value": str(tmp_path / "dest"),
                                            "source": "env CODERCTL_BACKUP_DESTINATION"}
    assert values["s3_credentials_secret"]["value"] == "coder/x"
