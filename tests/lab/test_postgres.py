from __future__ import annotations

import os
import subprocess
import urllib.parse
from pathlib import Path

import psutil
import psycopg
import pytest

from lab.postgres import URL_SPECIALS, LabPostgres, lab_postgres  # noqa: F401


def test_coder_url_connects_over_tcp_with_scram(lab_postgres: LabPostgres) -> None:
    url = lab_postgres.url()
    userinfo = urllib.parse.urlsplit(url).netloc.rpartition("@")[0]
    assert all(c in lab_postgres.user_password for c in URL_SPECIALS)
    assert not set("/?#@+=") & set(userinfo.partition(":")[2])
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_user, host(inet_server_addr()), current_setting('ssl')").fetchone()
        assert row == ("coder", "127.0.0.1", "off")
    with lab_postgres.connect("postgres") as conn:
        secret = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'coder'").fetchone()
        assert secret is not None and secret[0].startswith("SCRAM-SHA-256$")
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'").fetchone() == (True,)
    assert lab_postgres.version.startswith("15.")


def test_wrong_password_and_sslmode_fail(lab_postgres: LabPostgres) -> None:
    wrong = lab_postgres.url().replace(urllib.parse.quote(lab_postgres.user_password, safe=""), "nope")
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "coder"'):
        psycopg.connect(wrong, connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
        psycopg.connect(lab_postgres.url(sslmode="require"), connect_timeout=5)


def test_coder_like_schema_and_seed(lab_postgres: LabPostgres) -> None:
    fingerprint = lab_postgres.table_fingerprint()
    for table in (
        "users",
        "organizations",
        "organization_members",
        "templates",
        "template_versions",
        "workspaces",
        "workspace_builds",
        "provisioner_jobs",
        "workspace_agents",
        "workspace_agent_logs",
        "api_keys",
        "audit_logs",
        "licenses",
        "schema_migrations",
    ):
        assert table in fingerprint
    assert fingerprint["licenses"][0] == 0
    assert 300 <= sum(count for count, _ in fingerprint.values()) <= 1000
    with lab_postgres.connect() as conn:
        assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(330, False)]
        assert conn.execute(
            "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'coder'"
        ).fetchone() == ("coder",)
        labels = conn.execute("SELECT enum_range(NULL::workspace_transition)::text").fetchone()
        assert labels == ("{start,stop,delete}",)


def test_password_drift(lab_postgres: LabPostgres) -> None:
    old_url, old_password = lab_postgres.url(), lab_postgres.user_password
    lab_postgres.set_password("coder", "rotated/p?ss#word@1+=")
    try:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(old_url, connect_timeout=5)
        with lab_postgres.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        lab_postgres.set_password("coder", old_password)
    psycopg.connect(old_url, connect_timeout=5).close()


def test_pg_dump_restores_identically(lab_postgres: LabPostgres, tmp_path: Path) -> None:
    archive = tmp_path / "coder.dump"
    env = {**os.environ, **lab_postgres.env()}
    subprocess.run(
        [str(lab_postgres.bindir / "pg_dump"), "-Fc", "-f", str(archive), "--dbname", lab_postgres.url()],
        check=True,
        env=env,
        timeout=60,
    )
    assert archive.read_bytes()[:5] == b"PGDMP"
    lab_postgres.create_database("coder_restore")
    try:
        subprocess.run(
            [
                str(lab_postgres.bindir / "pg_restore"),
                "--exit-on-error",
                "--no-owner",
                "-d",
                "coder_restore",
                str(archive),
            ],
            check=True,
            env=env,
            timeout=60,
        )
        restored = lab_postgres.table_fingerprint("coder_restore")
        assert restored == lab_postgres.table_fingerprint("coder")
    finally:
        lab_postgres.drop_database("coder_restore")
    assert lab_postgres.table_fingerprint("coder")["users"][0] == 12


def test_own_instance_generate_and_stop_leaves_no_process() -> None:
    server = LabPostgres(admin_password="adm/in?#@+=1", user_password="us/er?#@+=2")
    with server:
        assert server.admin_password == "adm/in?#@+=1"
        assert "us%2Fer%3F%23%40%2B%3D2" in server.url()
        with server.connect("postgres") as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        before = server.data_size()
        after = server.generate(5_000_000)
        assert 5_000_000 <= after < 8_000_000
        assert before < 1_000_000
        pid, root = server.pid, server.root
        assert pid is not None and root is not None
        children = [p.pid for p in psutil.Process(pid).children(recursive=True)]
        assert children
    assert not psutil.pid_exists(pid)
    assert not any(psutil.pid_exists(c) for c in children)
    assert not root.exists()
    for proc in psutil.process_iter(["cmdline"]):
        assert str(root) not in " ".join(proc.info["cmdline"] or [])
