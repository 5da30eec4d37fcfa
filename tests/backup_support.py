"""Helpers of the backup tests: per-test databases, pointing the lab at them, wrapper programs."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clirun import Result, run_cli
from lab.deployment import Lab, bitnami_pod_env

POD = ("coder", "coder-coder-postgresql-0")


def create(lab: Lab, out: Path, *more: str) -> tuple[Result, dict[str, Any]]:
    """`backup create` with -o json; the parsed document (secrets checked in every output)."""
    r = run_cli(*lab.args("-o", "json"), "backup", "create", "--output-dir", str(out), *more)
    lab.assert_no_secrets(r.stdout, r.stderr)
    assert "Traceback" not in r.output
    return r, json.loads(r.stdout)


def direct(lab: Lab, database: str = "coder") -> list[str]:
    """--via direct against the lab's 127.0.0.1 port (never the URL's in-cluster host)."""
    return ["--via", "direct", "--database-url", lab.postgres.url(database=database)]


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@contextmanager
def scratch_database(lab: Lab, prefix: str = "scratch") -> Iterator[str]:
    """An empty database owned by coder, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    lab.postgres.create_database(name)
    try:
        yield name
    finally:
        lab.postgres.drop_database(name)


@contextmanager
def copy_of_coder(lab: Lab) -> Iterator[str]:
    """A database with the content of `coder` (for tests that change or restore it)."""
    with scratch_database(lab, "copy") as name:
        env = {**os.environ, **lab.postgres.env()}
        dump = subprocess.run([str(lab.postgres.bindir / "pg_dump"), "-Fc"], env=env, capture_output=True, check=True)
        subprocess.run([str(lab.postgres.bindir / "pg_restore"), "-d", name, "--exit-on-error"],
                       env={**env, "PGDATABASE": name}, input=dump.stdout, capture_output=True, check=True)
        yield name


def use_database(lab: Lab, database: str) -> None:
    """Point the managed Secret's database URL (what Coder, and so coderctl, uses) at another database."""
    url = lab.values["DATABASE_URL"].replace("/coder?", f"/{database}?")
    data = base64.b64encode(url.encode()).decode()
    lab.kube.patch("Secret", "coder", "coder-database-secrets", {"data": {"database-url": data}})


def wrapper(directory: Path, name: str, body: str) -> Path:
    """An executable shell script `directory/name`; $REAL is the lab's real program of that name."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def pod_path_first(lab: Lab, directory: Path) -> None:
    """Programs in `directory` shadow the real ones inside the PostgreSQL pod."""
    env = bitnami_pod_env(lab.postgres)
    env["PATH"] = f"{directory}:{env['PATH']}"
    env["REAL_BIN"] = str(lab.postgres.bindir)
    lab.kube.set_exec(*POD, env=env)


def exec_argv_text(lab: Lab) -> str:
    return json.dumps([entry["command"] for entry in lab.kube.exec_log])


def deployment_replicas(lab: Lab) -> int:
    dep = lab.kube.get("Deployment", "coder", "coder")
    assert dep is not None
    return int(dep["spec"].get("replicas", 1))
