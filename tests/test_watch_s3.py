"""coderctl watch on a bucket prefix (a real `rclone serve s3` on loopback): a backup made by `backup create --to
s3://...` appears in /metrics with its age and verified=1; the credentials come from the Secret the setting
names and reach no output; an unreachable bucket is a metric and a log line while the watcher keeps serving,
and its recovery shows; a read lists once and fetches only what changed; a replaced object is no longer
verified; a refused credential is resolved afresh on the next read."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from backup_support import direct
from clirun import ROOT, run_cli
from envelope_schema import validate_envelope
from lab.deployment import Lab
from lab.procguard import die_with_parent
from s3_support import Bucket, lab_s3, s3  # noqa: F401
from test_backup_s3_secret import put_secret
from test_watch_prometheus import until

from coderctl.context import App
from coderctl.ops.storage import S3URL
from coderctl.profile import load_settings
from coderctl.watch import metrics
from coderctl.watch.bucket import BucketWatcher
from coderctl.watch.state import State

AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()  # type: ignore[no-any-return]


def sample(text: str, name: str) -> tuple[str, float] | None:
    """(labels, value) of the one sample of `name`, None when there is none."""
    line = next((x for x in text.splitlines() if x.startswith(name + "{")), None)
    if line is None:
        return None
    labels, _, value = line[len(name):].rpartition(" ")
    return labels, float(value)


def create(s3: Bucket, lab: Lab) -> dict[str, Any]:
    r, doc = s3.run("backup", "create", "--to", s3.url, *direct(lab))
    assert r.code == 0, r.output
    return doc["result"]  # type: ignore[no-any-return]


def created_at(s3: Bucket, result: dict[str, Any]) -> float:
    key = result["manifest"].removeprefix(f"s3://{s3.name}/")
    manifest = json.loads(s3.server.client().get_object(Bucket=s3.name, Key=key)["Body"].read())
    return datetime.strptime(manifest["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def shipped_roles_with_the_secret_rule() -> list[dict[str, Any]]:
    """deploy/watch/rbac.yaml's Roles with its commented rule for the bucket's Secret taken in, as documented."""
    lines = (ROOT / "deploy" / "watch" / "rbac.yaml").read_text().splitlines()
    start = next(n for n, x in enumerate(lines) if x.startswith("  # With backups in a bucket")) + 1
    end = start
    while lines[end].startswith("  # "):
        lines[end] = "  " + lines[end][4:]
        end += 1
    assert end - start == 4, lines[start - 1:end]
    return [d for d in yaml.safe_load_all("\n".join(lines)) if d and d["kind"] == "Role"]


@pytest.mark.slow
@pytest.mark.fake_only  # the shipped Roles are enforced by the fake API
def test_a_backup_in_the_bucket_shows_and_an_unreachable_bucket_is_a_metric(s3: Bucket, lab: Lab,
                                                                             tmp_path: Path) -> None:
    """The deployment's way: the destination and the Secret named in settings, no AWS key in the environment,
    the shipped Roles; the Secret's endpoint is the lab's cutting proxy."""
    result = create(s3, lab)
    assert s3.server.proxy is not None
    put_secret(lab, s3.server.env(via_proxy=True))
    lab.kube.grant_only(shipped_roles_with_the_secret_rule())
    env = {**{k: v for k, v in os.environ.items() if k not in AWS_ENV}, "NO_COLOR": "1",
           "CODERCTL_BACKUP_DESTINATION": s3.url, "CODERCTL_S3_CREDENTIALS_SECRET": "coder/coderctl-backup-s3"}
    err = tmp_path / "stderr"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            die_with_parent([sys.executable, "-m", "coderctl", *lab.args(timeout=2), "watch", "--only", "dns",
                             "--interval", "30", "--backup-interval", "0.5", "--listen", "127.0.0.1:0",
                             *lab.net_args(), "--access-url", lab.access_url]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=tmp_path)
    try:
        line = until(lambda: proc.poll() is None and next(
            (x for x in err.read_text().splitlines() if "serving http" in x), None) or proc.poll() is not None,
            30, "watch serving")
        assert proc.poll() is None, err.read_text()
        url = line.split("serving ")[1].split("/metrics")[0]
        where = f'{{destination="s3",directory="{s3.url}",bucket="{s3.name}",prefix="backups/"}}'

        text = until(lambda: (t := get(url + "/metrics")) and sample(t, "coderctl_backup_last_verified") and t,
                     20, "the bucket read")
        assert sample(text, "coderctl_backup_directory_readable") == (where, 1)
        assert sample(text, "coderctl_backup_last_verified") == (where, 1)
        assert sample(text, "coderctl_backups") == (where, 1)
        assert sample(text, "coderctl_backup_last_size_bytes") == (where, result["size"])
        taken = created_at(s3, result)
        assert sample(text, "coderctl_backup_last_timestamp_seconds") == (where, taken)
        assert sample(text, "coderctl_backup_last_verified_timestamp_seconds") == (where, taken)
        age = sample(text, "coderctl_backup_last_age_seconds")
        assert age is not None and 0 <= age[1] < 600
        status = json.loads(get(url + "/status"))
        validate_envelope(status)
        assert status["backup"] == {"directory": s3.url, "error": None, "count": 1, "last_time": taken,
                                    "last_size": result["size"], "last_verified": True, "last_verified_time": taken,
                                    "destination": "s3", "bucket": s3.name, "prefix": "backups/"}
        seen = [text, json.dumps(status)]

        s3.server.proxy.cut_after(0)  # every connection dropped, new ones refused
        text = until(lambda: (t := get(url + "/metrics")) and sample(t, "coderctl_backup_directory_readable")
                     == (where, 0) and t, 30, "the unreachable bucket reported")
        assert sample(text, "coderctl_backups") is None and sample(text, "coderctl_backup_last_verified") is None
        assert get(url + "/healthz") == "ok\n"
        status = json.loads(get(url + "/status"))
        assert "cannot reach S3 endpoint" in status["backup"]["error"], status["backup"]
        seen += [text, json.dumps(status)]

        s3.server.proxy.restore()
        text = until(lambda: (t := get(url + "/metrics")) and sample(t, "coderctl_backup_last_verified")
                     == (where, 1) and t, 30, "the bucket readable again")
        seen.append(text)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        s3.server.proxy.restore()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err.read_text()
    assert f"backups in {s3.url}: unreadable: cannot reach S3 endpoint" in log
    assert f"backups in {s3.url}: readable again" not in log  # an INFO line: shown with -v only
    assert "Traceback" not in log
    for text in [*seen, log]:
        s3.assert_no_secrets(text)
        assert s3.server.access_key not in text  # a value of the Secret: redacted like the key


def plain_app() -> App:
    return App(settings=load_settings(flags={"timeout": 2}, environ={}))


def test_a_read_lists_once_and_fetches_only_what_changed(s3: Bucket, lab: Lab) -> None:
    first = create(s3, lab)
    watcher = BucketWatcher(plain_app(), S3URL.parse(s3.url))
    calls: list[str] = []
    reading = watcher.read()
    assert reading.error is None and reading.count == 1 and reading.last_verified
    assert watcher._bucket is not None
    watcher._bucket.client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))

    again = watcher.read()
    assert again == reading
    assert calls == ["ListObjectsV2"]  # nothing changed: no manifest fetched, no data downloaded again

    second = create(s3, lab)
    calls.clear()
    reading = watcher.read()
    assert reading.count == 2 and reading.last_verified and reading.last_size == second["size"]
    assert calls == ["ListObjectsV2", "GetObject", "GetObject"]  # the new manifest, then the new data, once
    assert reading.last_verified_time == created_at(s3, second) > 0

    # the newest object replaced by other bytes of the same size: no longer what its manifest says
    key = second["file"].removeprefix(f"s3://{s3.name}/")
    client = s3.server.client()
    data = client.get_object(Bucket=s3.name, Key=key)["Body"].read()
    client.put_object(Bucket=s3.name, Key=key, Body=data[:-10] + b"x" * 10)
    reading = watcher.read()
    assert reading.count == 2 and reading.last_verified is False
    assert reading.last_verified_time == created_at(s3, first)

    state = State()
    state.record_backup(reading)
    text = metrics.render(state.snapshot(overlaps={}, running={}, rounds=0))
    where = f'{{destination="s3",directory="{s3.url}",bucket="{s3.name}",prefix="backups/"}}'
    assert f"coderctl_backup_last_verified{where} 0" in text
    assert f"coderctl_backups{where} 2" in text


def test_refused_credentials_are_an_error_then_resolved_afresh(s3: Bucket, lab: Lab,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    create(s3, lab)
    app = plain_app()
    watcher = BucketWatcher(app, S3URL.parse(s3.url))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key-" + "x" * 20)
    reading = watcher.read()
    assert reading.error is not None and "refused the credentials" in reading.error, reading
    assert reading.destination == "s3" and reading.count == 0
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.server.secret_key)
    reading = watcher.read()
    assert reading.error is None and reading.count == 1 and reading.last_verified


def test_an_endpoint_that_refuses_connections_is_an_error(s3: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    reading = BucketWatcher(plain_app(), S3URL.parse(s3.url)).read()
    assert reading.error is not None and reading.error.startswith(f"cannot reach S3 endpoint http://127.0.0.1:{port}")
    s3.assert_no_secrets(reading.error)


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--backup-dir", "s3://No_Such/"], {}, "is not a valid bucket name"),
    ([], {"CODERCTL_BACKUP_DESTINATION": "s3://ok-bucket/x/", "CODERCTL_S3_ADDRESSING_STYLE": "sideways"},
     "CODERCTL_S3_ADDRESSING_STYLE='sideways'"),
])
def test_a_bad_bucket_setting_is_a_usage_error(args: list[str], env: dict[str, str], message: str) -> None:
    result = run_cli("watch", "--access-url", "https://coder.example.org", "--only", "network", *args, env=env)
    assert result.code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr
