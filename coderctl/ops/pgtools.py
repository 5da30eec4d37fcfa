"""The local PostgreSQL client programs (pg_dump, pg_restore, psql) and their connection environment.

Credentials go to them through the environment (PGPASSWORD), never on the command line.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from coderctl.clients.postgres import DatabaseURL
from coderctl.errors import CoderctlError

SEARCH_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql@*/bin",
               "/usr/local/opt/postgresql@*/bin")
PIPE_SIZE = 1 << 20
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_URL_PARAMS = {"sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
               "sslkey": "PGSSLKEY", "options": "PGOPTIONS", "target_session_attrs": "PGTARGETSESSIONATTRS"}


class ToolMissing(CoderctlError):
    pass


@dataclass(frozen=True)
class Tool:
    name: str
    path: str
    version: str
    major: int


def widen_pipe(fd: int) -> bool:
    """A 1 MiB buffer for a pipe to or from a client program (Linux; the default is 64 KiB); False where that
    is not possible."""
    try:
        import fcntl

        return int(fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)) >= PIPE_SIZE
    except (OSError, ImportError):
        return False


def first_error(text: str, default: str = "") -> str:
    """coderctl.database.messages.first_error, imported when an error is to be told: the coderctl.database
    package imports the cluster's modules, which a `--via direct` backup does without until pg_dump runs."""
    from coderctl.database.messages import first_error as first

    return first(text, default)


def parse_version(text: str) -> tuple[int, str] | None:
    """`pg_dump (PostgreSQL) 15.10 (Debian ...)` -> (15, "15.10")."""
    match = _VERSION.search(text)
    if not match:
        return None
    major, minor = match.group(1), match.group(2)
    return int(major), f"{major}.{minor}" if minor else major


def major_of(version: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", version or "")
    return int(match.group(1)) if match else None


def _candidates(name: str) -> list[str]:
    found: list[str] = []
    on_path = shutil.which(name)
    # Debian's pg_wrapper (a Perl script) only dispatches to /usr/lib/postgresql/*/bin, searched below
    if on_path and os.path.basename(os.path.realpath(on_path)) != "pg_wrapper":
        found.append(on_path)
    for pattern in SEARCH_DIRS:
        for path in glob.glob(os.path.join(pattern, name)):
            if os.access(path, os.X_OK) and path not in found:
                found.append(path)
    return found


def installed(name: str) -> list[Tool]:
    tools: list[Tool] = []
    for path in _candidates(name):
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        parsed = parse_version(out.stdout)
        if out.returncode == 0 and parsed:
            tools.append(Tool(name, path, parsed[1], parsed[0]))
    return tools


def choose(tools: list[Tool], *, at_least: int | None, prefer: str) -> Tool | None:
    """`prefer="oldest"` picks the lowest major that is new enough (a pg_dump whose archives the server's
    own pg_restore can read); `"newest"` the highest (a pg_restore that reads every archive)."""
    usable = [t for t in tools if at_least is None or t.major >= at_least]
    if not usable:
        return None
    key = (lambda t: t.major) if prefer == "oldest" else (lambda t: -t.major)
    return min(usable, key=key)


def find(name: str, *, at_least: int | None = None, prefer: str = "newest", why: str = "") -> Tool:
    return pick(installed(name), name, at_least=at_least, prefer=prefer, why=why)


def pick(tools: list[Tool], name: str, *, at_least: int | None = None, prefer: str = "newest",
         why: str = "") -> Tool:
    """`choose` among `installed(name)`, or ToolMissing saying what to install."""
    tool = choose(tools, at_least=at_least, prefer=prefer)
    if tool is not None:
        return tool
    hint = f" ({why})" if why else ""
    if not tools:
        raise ToolMissing(f"{name} is not installed here{hint}: install the PostgreSQL client "
                          f"(e.g. apt install postgresql-client-{at_least or 15})")
    newest = max(tools, key=lambda t: t.major)
    raise ToolMissing(f"the local {name} is version {newest.version}, older than PostgreSQL {at_least}"
                      f"{hint}: install postgresql-client-{at_least} or newer")


def libpq_env(url: DatabaseURL, *, host: str | None = None, port: int | None = None,
              connect_timeout: float = 10) -> dict[str, str]:
    """The process environment for a client program: inherited, minus any PG* variable, plus the URL.

    A URL without a password keeps the caller's PGPASSWORD and PGPASSFILE (the way to keep a password off
    the command line when the URL is given as an option)."""
    kept = {"PGPASSWORD", "PGPASSFILE"} if not url.password else set()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") or k in kept}
    env.update({
        "PGHOST": host or url.host, "PGPORT": str(port or url.port), "PGUSER": url.user,
        "PGDATABASE": url.database, "PGAPPNAME": "coderctl",
        "PGCONNECT_TIMEOUT": str(max(2, int(connect_timeout + 0.5))),
    })
    if url.password:
        env["PGPASSWORD"] = url.password
    for param, var in _URL_PARAMS.items():
        if param in url.params:
            env[var] = url.params[param]
    return env


def cannot_read(tool: Tool, path: str) -> str | None:
    """Why this pg_restore cannot restore the custom archive at `path`, or None: `pg_restore -l` reads only the
    header and the table of contents, and refuses an archive version newer than its own pg_dump wrote (15
    reads up to 1.14; 16, 1.15; 17, 1.16). An lz4 or zstd archive its build cannot decompress it lists with a
    warning and would restore with no data: that is refused too."""
    try:
        out = subprocess.run([tool.path, "-l", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")},
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    text = out.stderr.decode("utf-8", "replace")
    if out.returncode != 0:
        return first_error(text, f"exit {out.returncode}")
    if "does not support compression" in text or "not supported in this installation" in text:
        return first_error(text, "its build cannot decompress this archive")
    return None


def reader_for(path: str, made_by: str | None, *, why: str) -> Tool:
    """The local pg_restore (the newest), checked to read the custom archive at `path` (`cannot_read`);
    ToolMissing saying what is wrong and what to install."""
    tool = find("pg_restore", why=why)
    reason = cannot_read(tool, path)
    if reason is not None:
        made = f" (made by pg_dump {made_by})" if made_by else ""
        raise ToolMissing(f"the local pg_restore {tool.version} cannot read {os.path.basename(path)}{made}: "
                          f"{reason}; install the PostgreSQL client of that version")
    return tool


def restore_archive(path: str, fmt: str, *, database: str, env: dict[str, str], flags: tuple[str, ...],
                    why: str) -> str | None:
    """Restore a custom (pg_restore) or plain (psql) dump in one transaction with a local client.

    Returns None on success, else the most telling line of the client's error output.
    """
    import tempfile

    if fmt == "custom":
        tool = find("pg_restore", why=why)
        argv = [tool.path, "-w", "-d", database, *flags, "--exit-on-error", "--single-transaction", path]
    else:
        tool = find("psql", why=why)
        argv = [tool.path, "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", path]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, env=env,
                                start_new_session=True)
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code == 0:
            return None
        errors.seek(0)
        return first_error(errors.read(16384).decode("utf-8", "replace"), f"exit {code}")
