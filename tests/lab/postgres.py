"""A real PostgreSQL server for the lab, built from the installed binaries in a temporary directory.

The server is set up like the Bitnami chart deploys it for Coder: superuser `postgres` and login role
`coder` with passwords, `scram-sha-256` over TCP, `ssl = off`, and a database `coder` owned by `coder`
holding a Coder-like schema with seed data. It listens on 127.0.0.1 only, on a random free port.

initdb and postgres refuse to run as root: when the tests run as root (CI, containers) the server runs as
the unprivileged `postgres` user, in a temp dir created under /tmp and chowned to it.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
import pytest
from psycopg import sql

from lab.procguard import die_with_parent

__all__ = ["LabPostgres", "find_bindir", "lab_postgres", "random_password"]

SCHEMA_FILE = Path(__file__).with_name("coder_schema.sql")
SERVICE_USER = "postgres"
URL_SPECIALS = "/?#@+="


def find_bindir() -> Path:
    """The PostgreSQL bin directory: `pg_config --bindir`, else the highest /usr/lib/postgresql/*/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if out.returncode == 0 and (candidate / "initdb").exists():
            return candidate
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()]
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found (pg_config --bindir, /usr/lib/postgresql/*/bin)"
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def random_password(length: int = 24) -> str:
    """A random password that holds every character that must be percent-encoded in a URL."""
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    chars = [secrets.choice(alphabet) for _ in range(max(length - len(URL_SPECIALS), 4))] + list(URL_SPECIALS)
    secrets.SystemRandom().shuffle(chars)
    # A leading letter keeps the password readable in logs and safe for tools that eat a leading '#'.
    return secrets.choice(alphabet) + "".join(chars)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabPostgres:
    """One PostgreSQL server in its own temp dir; `start()`/`stop()` or use it as a context manager."""

    host = "127.0.0.1"

    def __init__(self, admin_password: str | None = None, user_password: str | None = None,
                 bindir: Path | None = None) -> None:
        self.admin_password = admin_password or random_password()
        self.user_password = user_password or random_password()
        self.bindir = bindir or find_bindir()
        """The server's programs: the installed ones, or another version's (lab/pgclient.py: 17)."""
        self.port = 0
        self.version = ""
        self.root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as = self._service_account()

    @staticmethod
    def _service_account() -> pwd.struct_passwd | None:
        """The account the server runs as, or None to run as the current user."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise RuntimeError(f"running as root needs an unprivileged user {SERVICE_USER!r}") from None

    # -- paths ------------------------------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        return self._root() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._root() / "sock"

    @property
    def logfile(self) -> Path:
        return self._root() / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("LabPostgres is not started")
        return self.root

    # -- process control --------------------------------------------------------------------------

    @property
    def _uid(self) -> int | None:
        return self._run_as.pw_uid if self._run_as else None

    @property
    def _gid(self) -> int | None:
        return self._run_as.pw_gid if self._run_as else None

    @property
    def _groups(self) -> list[int] | None:
        """No supplementary groups: otherwise root's would leak into the server process."""
        return [] if self._run_as else None

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _run(self, *args: str | os.PathLike[str]) -> None:
        result = subprocess.run(
            [str(a) for a in args],
            cwd=self._root(),
            capture_output=True,
            text=True,
            check=False,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(str(args[0])).name} failed ({result.returncode}):\n{result.stderr}")

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError("already started")
        self.root = Path(tempfile.mkdtemp(prefix="coderctl-lab-pg-", dir="/tmp"))
        try:
            self.root.chmod(0o755)
            self._chown(self.root)
            self._initdb()
            self._launch()
            self._provision()
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        pwfile = self._root() / "pwfile"
        pwfile.write_text(self.admin_password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            self._run(
                self.bindir / "initdb",
                "-D",
                self.datadir,
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            )
        finally:
            pwfile.unlink()
        self.socket_dir.mkdir(mode=0o700)
        self._chown(self.socket_dir)
        # The socket dir is private to the server's account (and root), so `trust` on it gives the lab a
        # way in that survives password drift scenarios; TCP always needs the password.
        (self.datadir / "pg_hba.conf").write_text(
            "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
            "local   all       all                 trust\n"
            "host    all       all   127.0.0.1/32  scram-sha-256\n"
            "host    all       all   ::1/128       scram-sha-256\n"
        )

    def _settings(self) -> str:
        return (
            "\n# coderctl lab\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.socket_dir}'\n"
            "ssl = off\n"
            "password_encryption = 'scram-sha-256'\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
            "shared_buffers = '32MB'\n"
            "max_connections = 100\n"
            "timezone = 'UTC'\n"
            "log_timezone = 'UTC'\n"
            "logging_collector = off\n"
        )

    def _launch(self, attempts: int = 3) -> None:
        base_conf = (self.datadir / "postgresql.conf").read_text()
        for attempt in range(attempts):
            self.port = _free_port()
            # Rewriting in place keeps the file's owner.
            (self.datadir / "postgresql.conf").write_text(base_conf + self._settings())
            with open(self.logfile, "ab") as log:
                self._proc = subprocess.Popen(
                    die_with_parent([str(self.bindir / "postgres"), "-D", str(self.datadir)], "INT"),
                    cwd=self._root(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    user=self._uid,
                    group=self._gid,
                    extra_groups=self._groups,
                )
            if self._wait_ready():
                return
            log_text = self.logfile.read_text(errors="replace")
            self._proc = None
            if "could not bind" not in log_text or attempt == attempts - 1:
                raise RuntimeError(f"postgres did not start:\n{log_text[-3000:]}")

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with self._admin_connect(connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        self._kill()
        return False

    def _provision(self) -> None:
        with self._admin_connect() as conn:
            row = conn.execute("SHOW server_version").fetchone()
            self.version = str(row[0]) if row else ""
            conn.execute(
                sql.SQL("CREATE ROLE coder LOGIN PASSWORD {}").format(sql.Literal(self.user_password))
            )
            conn.execute("CREATE DATABASE coder OWNER coder")
        with psycopg.connect(host=str(self.socket_dir), port=self.port, user="coder", dbname="coder") as conn:
            conn.execute(SCHEMA_FILE.read_text().encode())
            conn.execute("ANALYZE")

    def stop(self) -> None:
        """Fast shutdown (SIGINT), waiting until the postmaster and all its children are gone."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGINT)
                try:
                    self._proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._kill()
            self._proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _kill(self) -> None:
        """Immediate shutdown (SIGQUIT), then SIGKILL of the postmaster and any orphaned backend."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGQUIT)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- clients ----------------------------------------------------------------------------------

    def _password_for(self, user: str) -> str:
        return self.admin_password if user == "postgres" else self.user_password

    def url(self, user: str = "coder", database: str = "coder", sslmode: str = "disable") -> str:
        """A `postgresql://` URL as the Coder Secret holds it, with the password percent-encoded."""
        password = urllib.parse.quote(self._password_for(user), safe="")
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}?sslmode={sslmode}"

    def env(self, user: str = "coder", database: str = "coder") -> dict[str, str]:
        """libpq environment for `pg_dump`, `psql`, ... over TCP."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": user,
            "PGPASSWORD": self._password_for(user),
            "PGDATABASE": database,
        }

    def connect(
        self, user: str = "coder", database: str = "coder", *, autocommit: bool = False
    ) -> psycopg.Connection:
        """A psycopg connection over TCP with scram authentication, exactly as Coder connects."""
        return psycopg.connect(self.url(user, database), autocommit=autocommit, connect_timeout=5)

    def _admin_connect(self, database: str = "postgres", *, connect_timeout: int = 5) -> psycopg.Connection:
        """Superuser over the private unix socket: works whatever the passwords currently are."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname=database,
            autocommit=True,
            connect_timeout=connect_timeout,
        )

    # -- administration ---------------------------------------------------------------------------

    def create_database(self, name: str, owner: str = "coder") -> None:
        with self._admin_connect() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner))
            )

    def drop_database(self, name: str) -> None:
        with self._admin_connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def set_password(self, user: str, password: str) -> None:
        """ALTER ROLE, as an operator would; `url()`/`env()`/`connect()` follow the new password.

        Open sessions stay open (PostgreSQL does not end them). On the shared session server, put the
        old password back when the test is done.
        """
        with self._admin_connect() as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user), sql.Literal(password))
            )
        if user == "postgres":
            self.admin_password = password
        elif user == "coder":
            self.user_password = password

    def table_fingerprint(self, database: str = "coder") -> dict[str, tuple[int, str]]:
        """Per table of schema public: row count and md5 over all rows in a stable order."""
        result: dict[str, tuple[int, str]] = {}
        with self._admin_connect(database) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
                ).fetchall()
            ]
            for table in tables:
                query = sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
                    "FROM public.{} AS t"
                ).format(sql.Identifier(table))
                row = conn.execute(query).fetchone()
                assert row is not None
                result[table] = (int(row[0]), str(row[1]))
        return result

    def data_size(self, database: str = "coder") -> int:
        """Bytes on disk of the tables of schema public, with their indexes and TOAST."""
        with self._admin_connect(database) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
            ).fetchone()
        return int(row[0]) if row else 0

    def generate(self, target_bytes: int, *, database: str = "coder") -> int:
        """Grow agent logs and audit logs until `data_size()` reaches about `target_bytes`.

        The rows are random but realistic text, generated server-side with generate_series. The
        database needs the seed schema. Returns the resulting `data_size()`.
        """
        size = self.data_size(database)
        with self._admin_connect(database) as conn:
            conn.execute("SET ROLE coder")
            while size < target_bytes:
                # About 330 bytes per log row and 900 per audit row, with indexes; aim a bit short.
                missing = target_bytes - size
                logs = max(min(missing // 500, 400_000), 200)
                conn.execute(_GENERATE_LOGS.replace("@N@", str(logs)).encode())
                conn.execute(_GENERATE_AUDIT.replace("@N@", str(max(logs // 20, 10))).encode())
                size = self.data_size(database)
        return size


_GENERATE_LOGS = """
INSERT INTO workspace_agent_logs (agent_id, created_at, output, level, log_source_id)
SELECT a.id,
       now() - make_interval(secs => g),
       to_char(now() - make_interval(secs => g), 'HH24:MI:SS.MS')
       || ' [' || (ARRAY['startup', 'dotfiles', 'code-server', 'apt', 'git'])[1 + mod(g, 5)] || '] '
       || (ARRAY['Downloading', 'Installing', 'Unpacking', 'Setting up', 'Fetched', 'Resolving'])[1 + mod(g, 6)]
       || ' ' || (ARRAY['libssl3', 'python3.11', 'nodejs', 'golang-1.23', 'terraform', 'kubectl'])[1 + mod(g / 7, 6)]
       || ': ' || substr(repeat(md5(random()::text), 4), 1, 40 + (random() * 120)::int),
       (CASE WHEN random() < 0.05 THEN 'warn' WHEN random() < 0.01 THEN 'error' ELSE 'info' END)::log_level,
       md5('log-source/' || (1 + mod(g, 3)))::uuid
FROM generate_series(1, @N@) AS g
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM workspace_agents) AS a
  ON a.k = mod(g, (SELECT greatest(count(*), 1) FROM workspace_agents))
"""

_GENERATE_AUDIT = """
INSERT INTO audit_logs ("time", user_id, organization_id, ip, user_agent, resource_type, resource_id,
                        resource_target, action, diff, status_code, additional_fields, request_id)
SELECT now() - make_interval(mins => g),
       gen_random_uuid(), gen_random_uuid(),
       ('10.42.' || (mod(g, 250)) || '.' || (random() * 250)::int)::inet,
       'Mozilla/5.0 (X11; Linux x86_64) coder/v2.25.0',
       (ARRAY['workspace', 'workspace_build', 'user', 'template', 'api_key'])[1 + mod(g, 5)]::resource_type,
       gen_random_uuid(),
       'ws-' || substr(md5(random()::text), 1, 8),
       (ARRAY['start', 'stop', 'write', 'login', 'create'])[1 + mod(g, 5)]::audit_action,
       jsonb_build_object('name', jsonb_build_object('old', md5(random()::text), 'new', md5(random()::text),
                                                     'secret', false),
                          'ttl', jsonb_build_object('old', 0, 'new', (random() * 86400)::int, 'secret', false)),
       CASE WHEN random() < 0.05 THEN 403 ELSE 200 END,
       jsonb_build_object('build_number', g::text, 'build_reason', 'initiator',
                          'workspace_owner', 'user' || (1 + mod(g, 12))),
       gen_random_uuid()
FROM generate_series(1, @N@) AS g
"""


@pytest.fixture(scope="session")
def lab_postgres() -> Iterator[LabPostgres]:
    """One real PostgreSQL server for the whole test session, with the Coder-like database."""
    with LabPostgres() as server:
        yield server
