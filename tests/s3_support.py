"""Fixtures of the bucket tests: one `rclone serve s3` per session (and one moto server, for object lock), a
fresh bucket per test, and an environment that points coderctl (and only coderctl) at it, with no network
credential lookup possible."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clirun import Result, run_cli
from lab.deployment import Lab
from lab.moto_s3 import LabMotoS3, lab_moto_server
from lab.s3 import LabS3, lab_s3_server

SMALL_PARTS = str(8 * 1024)
"""rclone accepts parts below S3's 5 MiB minimum: the lab's dump (about 70 kB) then spans several parts."""


@pytest.fixture(scope="session")
def lab_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabS3]:
    with lab_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def lab_moto() -> Iterator[LabMotoS3]:
    with lab_moto_server() as server:
        yield server


@dataclass
class Bucket:
    server: LabS3 | LabMotoS3
    name: str
    lab: Lab

    @property
    def url(self) -> str:
        return f"s3://{self.name}/backups/"

    def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
        """coderctl -o json ARGS; outputs checked for every secret of the lab and of the bucket."""
        r = run_cli(*self.lab.args("-o", "json"), *args, env=env)
        self.assert_no_secrets(r.stdout, r.stderr)
        assert "Traceback" not in r.output, r.output
        try:
            doc = json.loads(r.stdout) if r.stdout.strip() else {}
        except ValueError:
            doc = {}
        return r, doc

    def assert_no_secrets(self, *outputs: str) -> None:
        self.lab.assert_no_secrets(*outputs)
        for text in outputs:
            assert self.server.secret_key not in text

    def objects(self) -> list[str]:
        return self.server.keys(self.name)

    def uploads(self) -> list[str]:
        from botocore.exceptions import ClientError

        try:
            return self.server.uploads(self.name)
        except ClientError as exc:
            if (exc.response.get("Error") or {}).get("Code") == "NoSuchUpload":  # rclone, when there never was one
                return []
            raise


def point_at(server: LabS3 | LabMotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only `server`'s credentials, endpoint and region: no AWS setting of the machine, no network lookup."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3",
                "AWS_DEFAULT_REGION", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "CODERCTL_S3_OBJECT_LOCK_MODE", "CODERCTL_S3_OBJECT_LOCK_DAYS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def s3(lab: Lab, lab_s3: LabS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Bucket:
    point_at(lab_s3, monkeypatch, tmp_path)
    monkeypatch.setenv("CODERCTL_S3_PART_SIZE", SMALL_PARTS)
    return Bucket(lab_s3, lab_s3.bucket(), lab)


@pytest.fixture
def locked(lab: Lab, lab_moto: LabMotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Bucket:
    """A bucket created with object lock enabled (moto): the dump fits one part of the default size."""
    point_at(lab_moto, monkeypatch, tmp_path)
    return Bucket(lab_moto, lab_moto.bucket(locked=True), lab)


@pytest.fixture
def unlocked(lab: Lab, lab_moto: LabMotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Bucket:
    """A bucket of the same server created without object lock."""
    point_at(lab_moto, monkeypatch, tmp_path)
    return Bucket(lab_moto, lab_moto.bucket(locked=False), lab)
