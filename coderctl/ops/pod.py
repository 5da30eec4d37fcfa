"""Running PostgreSQL programs inside the PostgreSQL pod over exec, with the pod's own credentials.

The scripts take the password from the container (a Bitnami password file, `*_PASSWORD_FILE`, or the
`POSTGRES_PASSWORD`-style variables) and put it in PGPASSWORD, which only the program sees. Only when the
pod holds no credential for the user does coderctl send the URL's password, as the first line of stdin.
Nothing secret is ever on a command line: the pod's process list and the API server's audit log show argv.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from coderctl.clients.kube import PODS
from coderctl.clients.kube_exec import ExecResult, exec_stream
from coderctl.clients.postgres import DatabaseURL
from coderctl.context import App

BITNAMI_BIN = "/opt/bitnami/postgresql/bin"
BITNAMI_SECRETS = "/opt/bitnami/postgresql/secrets"
_USER_VARS = ("POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "POSTGRESQL_PASSWORD", "POSTGRESQL_PASSWORD_FILE")
_ADMIN_VARS = ("POSTGRES_POSTGRES_PASSWORD", "POSTGRES_POSTGRES_PASSWORD_FILE", "POSTGRESQL_POSTGRES_PASSWORD",
               "POSTGRESQL_POSTGRES_PASSWORD_FILE")

# $1 user, $2 database, $3 "pod" or "stdin" (may the password come as the first line of stdin).
CREDENTIALS = r"""
U=$1 D=$2 M=$3
F= V= B=
if [ "$U" = "${POSTGRES_USER:-${POSTGRESQL_USERNAME:-}}" ]; then
  F=${POSTGRES_PASSWORD_FILE:-${POSTGRESQL_PASSWORD_FILE:-}} V=${POSTGRES_PASSWORD:-${POSTGRESQL_PASSWORD:-}}
  B=/opt/bitnami/postgresql/secrets/password
elif [ "$U" = postgres ]; then
  F=${POSTGRES_POSTGRES_PASSWORD_FILE:-${POSTGRESQL_POSTGRES_PASSWORD_FILE:-}}
  V=${POSTGRES_POSTGRES_PASSWORD:-${POSTGRESQL_POSTGRES_PASSWORD:-}}
  B=/opt/bitnami/postgresql/secrets/postgres-password
fi
if [ -z "$F" ] && [ -n "$B" ] && [ -r "$B" ]; then F=$B; fi
if [ -n "$F" ] && [ -r "$F" ]; then PGPASSWORD=$(cat "$F")
elif [ -n "$V" ]; then PGPASSWORD=$V
elif [ "$M" = stdin ]; then IFS= read -r PGPASSWORD
else echo "coderctl: the pod holds no password for user $U" >&2; exit 2
fi
unset V POSTGRES_PASSWORD POSTGRES_POSTGRES_PASSWORD POSTGRESQL_PASSWORD POSTGRESQL_POSTGRES_PASSWORD
export PGPASSWORD
tool() {
  if [ -x "/opt/bitnami/postgresql/bin/$1" ]; then echo "/opt/bitnami/postgresql/bin/$1"
  else command -v "$1" || { echo "coderctl: $1 not found in the pod" >&2; exit 127; }; fi
}
"""

# $4 format, $5 compression level (custom format). pg_dump runs in the background while a watcher reads the
# exec's stdin, which coderctl keeps open: when the stream goes away (coderctl interrupted, connection lost)
# stdin ends and the watcher stops pg_dump, so no dump keeps running in the pod.
DUMP = CREDENTIALS + r"""
P=$(tool pg_dump) || exit 127
case "$4" in custom) set -- -Fc -Z "${5:-1}" ;; *) set -- -Fp --clean --if-exists ;; esac
exec 3<&0 </dev/null
"$P" -w -U "$U" -d "$D" "$@" 3<&- &
DUMP=$!
( while IFS= read -r _; do :; done <&3; kill -TERM "$DUMP" ) >/dev/null 2>&1 &
WATCH=$!
exec 3<&-
wait "$DUMP"; RC=$?
kill "$WATCH" 2>/dev/null
exit "$RC"
"""

# $4 format, $5 size in bytes: `head -c` ends the input even where exec cannot half-close stdin (v4).
# One transaction: a failed restore leaves the database as it was.
RESTORE = CREDENTIALS + r"""
N=$5
case "$4" in
custom) R=$(tool pg_restore) || exit 127
  head -c "$N" | "$R" -w -U "$U" -d "$D" --clean --if-exists --single-transaction --exit-on-error ;;
*) Q=$(tool psql) || exit 127
  head -c "$N" | "$Q" -X -q -w -v ON_ERROR_STOP=1 --single-transaction -U "$U" -d "$D" -f - ;;
esac
"""

# $4 SQL
QUERY = CREDENTIALS + r"""
Q=$(tool psql) || exit 127
exec "$Q" -X -q -t -A -F "|" -w -v ON_ERROR_STOP=1 -U "$U" -d "$D" -c "$4"
"""


@dataclass(frozen=True)
class Target:
    namespace: str
    pod: str
    container: str
    user: str
    database: str
    password: str
    credentials: str  # "pod" or "stdin"

    def describe(self) -> str:
        return f"database {self.database} as {self.user} in pod {self.namespace}/{self.pod}"


def credentials_in_pod(pod: dict[str, Any], container: str, user: str) -> bool:
    """Does the container spec give `user` a password (variables or the Bitnami secrets mount)?"""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    c = next((c for c in containers if c.get("name") == container), containers[0] if len(containers) == 1 else {})
    env = {e.get("name"): e for e in c.get("env") or []}
    owner = (env.get("POSTGRES_USER") or env.get("POSTGRESQL_USERNAME") or {}).get("value")
    names = _USER_VARS if user == owner else _ADMIN_VARS if user == "postgres" else ()
    if any(name in env for name in names):
        return True
    mounts = [m.get("mountPath", "").rstrip("/") for m in c.get("volumeMounts") or []]
    return bool(names) and BITNAMI_SECRETS in mounts


def target(app: App, url: DatabaseURL) -> Target:
    s = app.settings
    pod = app.kube().get(PODS, s.postgres_pod, app.namespace)
    mode = "pod" if credentials_in_pod(pod, s.postgres_container, url.user) else "stdin"
    return Target(app.namespace, s.postgres_pod, s.postgres_container, url.user, url.database, url.password, mode)


def _stdin(t: Target, chunks: Iterable[bytes] = ()) -> Iterator[bytes]:
    if t.credentials == "stdin":
        yield t.password.encode() + b"\n"
    yield from chunks


def run(app: App, t: Target, script: str, *args: str, stdout: Callable[[bytes], object],
        stdin: Iterable[bytes] = (), close_stdin: bool = True, idle_timeout: float | None = None) -> ExecResult:
    command = ["sh", "-c", script, "coderctl", t.user, t.database, t.credentials, *args]
    return exec_stream(app.kube(), t.namespace, t.pod, command, container=t.container, stdout=stdout,
                       stdin=_stdin(t, stdin), close_stdin=close_stdin, idle_timeout=idle_timeout)


def query(app: App, t: Target, sql: str) -> list[list[str]]:
    """Rows of a psql query in the pod (`|`-separated, unaligned)."""
    from coderctl.ops.journal import StepFailed

    out = bytearray()
    result = run(app, t, QUERY, sql, stdout=out.extend, idle_timeout=max(app.timeout * 6, 30))
    if not result.ok:
        raise StepFailed(app.redact(error_line(result)))
    return [line.split("|") for line in out.decode("utf-8", "replace").splitlines() if line]


def error_line(result: ExecResult) -> str:
    text = result.stderr.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    best = next((line for line in lines if any(w in line for w in ("error", "FATAL", "ERROR", "coderctl:"))),
                lines[-1] if lines else "")
    return best or result.message or f"exit code {result.exit_code}"
