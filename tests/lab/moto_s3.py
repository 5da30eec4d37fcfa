"""An S3 server with object lock on loopback: moto's server mode (`moto[s3,server]`) in its own process, on
127.0.0.1 and a random port. Unlike `rclone serve s3` it keeps a bucket's object lock configuration
(ObjectLockEnabledForBucket), applies ObjectLockMode / ObjectLockRetainUntilDate given on PutObject and by
PutObjectRetention, reports them on HeadObject, versions the bucket and refuses to delete a locked version.

Two gaps of moto 5.2 that coderctl meets here as it would on other servers: the lock given on
CreateMultipartUpload is ignored (coderctl sets it on the completed object), and GetObjectRetention is not
routed (coderctl reads the lock from HeadObject)."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab.procguard import announced_port, die_with_parent, terminate


class LabMotoS3:
    """`python -m moto.server` on 127.0.0.1; it accepts any access key, so these are made up per run."""

    def __init__(self) -> None:
        self.access_key = "AKMOTO" + secrets.token_hex(5).upper()
        self.secret_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> LabMotoS3:
        self.proc = subprocess.Popen(
            die_with_parent([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = announced_port(self.proc, r"Running on http://127\.0\.0\.1:(\d+)", 60,
                                   "moto server (is moto[s3,server] installed?)")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bucket(self, *, locked: bool) -> str:
        name = f"lock-{secrets.token_hex(4)}" if locked else f"plain-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=locked)
        return name

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session(aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                                     region_name="us-east-1").client(
            "s3", endpoint_url=self.endpoint, config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                request_checksum_calculation="when_required", response_checksum_validation="when_required"))

    def keys(self, bucket: str) -> list[str]:
        page = self.client().list_objects_v2(Bucket=bucket)
        return sorted(o["Key"] for o in page.get("Contents") or [])

    def uploads(self, bucket: str) -> list[str]:
        return sorted(u["Key"] for u in self.client().list_multipart_uploads(Bucket=bucket).get("Uploads") or [])


@contextmanager
def lab_moto_server() -> Iterator[LabMotoS3]:
    server = LabMotoS3().start()
    try:
        yield server
    finally:
        server.stop()
