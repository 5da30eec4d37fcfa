"""The one way coderctl runs PostgreSQL programs inside the PostgreSQL pod: over exec, secrets on stdin.

argv holds only the script, the user, the database, where passwords may come from and byte counts: the
pod's process list and the API server's audit log show argv. Passwords and SQL travel on the exec stream's
stdin, which starts with a header: the passwords coderctl offers (base64, one a line), then an empty line.

Which password: the pod's Bitnami password file first (`*_PASSWORD_FILE`, or the chart's
/opt/bitnami/postgresql/secrets mount; Kubernetes updates those files after a Secret changes), then the
managed Secret's current value and the database URL's (sent by coderctl), then the container's environment
(fixed when the container started, so stale after a rotation until the pod restarts). When there is more
than one distinct candidate, the script tries them in that order with a `select 1` and keeps the first
that logs in; only an authentication failure moves on to the next.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from coderctl import discovery
from coderctl.clients.kube import PODS
from coderctl.clients.kube_exec import ExecResult, exec_stream
from coderctl.clients.postgres import DatabaseURL
from coderctl.context import App
from coderctl.database.messages import first_error
from coderctl.errors import CoderctlError

BITNAMI_BIN = "/opt/bitnami/postgresql/bin"
BITNAMI_SECRETS = "/opt/bitnami/postgresql/secrets"
ADMIN_KEY = "postgres-admin-password"
USER_KEY = "coder-user-password"
_USER_VARS = ("POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "POSTGRESQL_PASSWORD", "POSTGRESQL_PASSWORD_FILE")
_ADMIN_VARS = ("POSTGRES_POSTGRES_PASSWORD", "POSTGRES_POSTGRES_PASSWORD_FILE", "POSTGRESQL_POSTGRES_PASSWORD",
               "POSTGRESQL_POSTGRES_PASSWORD_FILE")

Sources = Literal["pod", "given"]
"""`pod`: the pod's files and environment too; `given`: only the passwords coderctl sends (a login test)."""

# $1 user, $2 database, $3 sources, $4 to $6 the script's own arguments (saved in A1, A2, A3).
PREAMBLE = r"""
U=$1 D=$2 M=$3 A1=${4-} A2=${5-} A3=${6-}
tool() {
  if [ -x "/opt/bitnami/postgresql/bin/$1" ]; then echo "/opt/bitnami/postgresql/bin/$1"
  else command -v "$1" || { echo "coderctl: $1 not found in the pod" >&2; return 127; }; fi
}
"""

CREDENTIALS = PREAMBLE + r"""
S1= S2= N=0
while IFS= read -r L && [ -n "$L" ]; do
  N=$((N+1)) V=$(printf '%s' "$L" | base64 -d; echo x)
  case $N in 1) S1=${V%x} ;; 2) S2=${V%x} ;; esac
done
F= E= P1=
if [ "$M" = pod ]; then
  if [ "$U" = "${POSTGRES_USER:-${POSTGRESQL_USERNAME:-}}" ]; then
    F=${POSTGRES_PASSWORD_FILE:-${POSTGRESQL_PASSWORD_FILE:-/opt/bitnami/postgresql/secrets/password}}
    E=${POSTGRES_PASSWORD:-${POSTGRESQL_PASSWORD:-}}
  elif [ "$U" = postgres ]; then
    F=${POSTGRES_POSTGRES_PASSWORD_FILE:-${POSTGRESQL_POSTGRES_PASSWORD_FILE:-/opt/bitnami/postgresql/secrets/postgres-password}}
    E=${POSTGRES_POSTGRES_PASSWORD:-${POSTGRESQL_POSTGRES_PASSWORD:-}}
  fi
  if [ -n "$F" ] && [ -r "$F" ]; then P1=$(cat "$F"); fi
fi
unset L V POSTGRES_PASSWORD POSTGRES_POSTGRES_PASSWORD POSTGRESQL_PASSWORD POSTGRESQL_POSTGRES_PASSWORD
K=0 C1= C2= C3= C4=
seen() { [ "$1" = "$C1" ] || [ "$1" = "$C2" ] || [ "$1" = "$C3" ]; }
for C in "$P1" "$S1" "$S2" "$E"; do
  [ -n "$C" ] && ! seen "$C" || continue
  K=$((K+1)); eval "C$K=\$C"
done
if [ "$K" = 0 ] && [ "$M" = pod ]; then
  echo "coderctl: no password for user $U: none in the pod, none sent" >&2; exit 2
fi
PGPASSWORD=$C1
if [ "$K" -gt 1 ]; then
  PSQL=$(tool psql) || exit 127
  I=1
  while :; do
    eval "PGPASSWORD=\$C$I"; export PGPASSWORD
    R=$("$PSQL" -X -w -q -A -t -U "$U" -d "$D" -c 'select 1' 2>&1 >/dev/null) && break
    case $R in *"authentication failed"*|*"no password supplied"*) ;; *) printf '%s\n' "$R" >&2; exit 2 ;; esac
    I=$((I+1))
    if [ "$I" -gt "$K" ]; then printf '%s\n' "$R" >&2; exit 2; fi
  done
fi
unset P1 S1 S2 E C C1 C2 C3 C4 R
export PGPASSWORD
"""

# A1 format, A2 pg_dump's -Z (custom format), or `auto`: zstd:1 when this pg_dump writes it (it refuses a
# compression it cannot write before it connects: the probe's socket does not exist), else zlib level 1
# (coderctl.ops.compression). pg_dump runs in the background while a watcher reads the
# exec's stdin, which coderctl keeps open: when the stream goes away (coderctl interrupted, connection lost)
# stdin ends and the watcher stops pg_dump, so no dump keeps running in the pod.
DUMP = CREDENTIALS + r"""
P=$(tool pg_dump) || exit 127
Z=${A2:-1}
if [ "$Z" = auto ]; then
  case "$(LC_ALL=C "$P" -w -Fc -Z zstd:1 -h /nonexistent/coderctl-probe -f /dev/null 2>&1 </dev/null)" in
  *ompress*) Z=1 ;; *) Z=zstd:1 ;;
  esac
fi
case "$A1" in custom) set -- -Fc -Z "$Z" ;; *) set -- -Fp --clean --if-exists ;; esac
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

# A1 format, A2 size in bytes: `head -c` ends the input even where exec cannot half-close stdin (v4).
# One transaction: a failed restore leaves the database as it was. A3, when given, is the role the sessions act
# as from their start (PGOPTIONS `-c role=`, escaped by restore_role_option): the database's owner, so that what
# is restored is owned by it whoever logs in (a login role of the alternate layout, or postgres); a custom
# archive's own owners are then left out (--no-owner).
RESTORE = CREDENTIALS + r"""
O=
if [ -n "$A3" ]; then PGOPTIONS="-c role=$A3"; export PGOPTIONS; O=--no-owner; fi
case "$A1" in
custom) R=$(tool pg_restore) || exit 127
  head -c "$A2" | "$R" -w -U "$U" -d "$D" --clean --if-exists --single-transaction --exit-on-error $O ;;
*) Q=$(tool psql) || exit 127
  head -c "$A2" | "$Q" -X -q -w -v ON_ERROR_STOP=1 --single-transaction -U "$U" -d "$D" -f - ;;
esac
"""

# A1 the length of a custom archive's header and table of contents, which follow the header on stdin: whether
# the pod's pg_restore reads the archive (its version, its compression), asked before a restore changes
# anything. No login: the passwords sent are read past, unused.
READABLE = PREAMBLE + r"""
while IFS= read -r L && [ -n "$L" ]; do :; done
R=$(tool pg_restore) || exit 127
W=$(head -c "$A1" | LC_ALL=C "$R" -l 2>&1 >/dev/null); RC=$?
[ -z "$W" ] || printf '%s\n' "$W" >&2
[ "$RC" = 0 ] || exit "$RC"
case $W in *"does not support compression"*|*"not supported in this installation"*) exit 3 ;; esac
"""

# A1 the SQL's length in bytes; the SQL follows the header on stdin.
QUERY = CREDENTIALS + r"""
Q=$(tool psql) || exit 127
head -c "$A1" | "$Q" -X -q -t -A -F "|" -w -v ON_ERROR_STOP=1 -U "$U" -d "$D" -f -
"""


class PodQueryFailed(CoderctlError):
    """psql in the PostgreSQL pod failed; the message is its first error line, redacted."""


@dataclass(frozen=True)
class Target:
    namespace: str
    pod: str
    container: str
    user: str
    database: str
    passwords: tuple[str, ...] = field(default=(), repr=False)
    """Offered by coderctl, in order: the managed Secret's current value, the URL's."""
    sources: Sources = "pod"
    credentials: str = "pod"
    """Recorded in backup manifests: `pod` when the pod spec gives the user a password, else `stdin`."""

    def describe(self) -> str:
        return f"database {self.database} as {self.user} in pod {self.namespace}/{self.pod}"


def credentials_in_pod(pod: dict[str, Any], container: str, user: str) -> bool:
    """Does the container spec give `user` a password (variables or the Bitnami secrets mount)?"""
    c = _container(pod, container)
    env = {e.get("name"): e for e in c.get("env") or []}
    names = _USER_VARS if user == _owner(c) else _ADMIN_VARS if user == "postgres" else ()
    if any(name in env for name in names):
        return True
    mounts = [m.get("mountPath", "").rstrip("/") for m in c.get("volumeMounts") or []]
    return bool(names) and BITNAMI_SECRETS in mounts


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or []
    found = next((c for c in containers if c.get("name") == name), containers[0] if len(containers) == 1 else {})
    return dict(found)


def _owner(container: dict[str, Any]) -> str | None:
    """The role the Bitnami chart creates (auth.username), from POSTGRES_USER / POSTGRESQL_USERNAME."""
    env = {e.get("name"): e for e in container.get("env") or []}
    value = (env.get("POSTGRES_USER") or env.get("POSTGRESQL_USERNAME") or {}).get("value")
    return str(value) if value else None


def managed_password(app: App, user: str, owner: str | None) -> str | None:
    """The managed Secret's current password for `user` (the admin's, or the chart user's), if readable."""
    key = ADMIN_KEY if user == "postgres" else USER_KEY if user == owner else None
    if key is None:
        return None
    try:
        value = discovery.secret_data(app, app.settings.database_secret).get(key)
    except CoderctlError:
        return None
    return value or None


def target(app: App, url: DatabaseURL, *, user: str | None = None, database: str | None = None) -> Target:
    """`user` (the URL's by default) on `database` in the PostgreSQL pod, with the pod's own credentials
    and those coderctl knows."""
    s = app.settings
    user = user or url.user
    pod = app.kube().get(PODS, s.postgres_pod, app.namespace)
    in_pod = credentials_in_pod(pod, s.postgres_container, user)
    offered = [managed_password(app, user, _owner(_container(pod, s.postgres_container)))]
    if user == url.user:
        offered.append(url.password)
    passwords = tuple(dict.fromkeys(p for p in offered if p))
    for password in passwords:
        app.redact.add(password)
    return Target(app.namespace, s.postgres_pod, s.postgres_container, user, database or url.database, passwords,
                  credentials="pod" if in_pod else "stdin")


def login_target(app: App, url: DatabaseURL) -> Target:
    """The URL's user with the URL's password alone: whether those credentials work is the question."""
    s = app.settings
    return Target(app.namespace, s.postgres_pod, s.postgres_container, url.user, url.database,
                  (url.password,) if url.password else (), sources="given")


def restore_role_option(role: str) -> str:
    """`role` as the value of `-c role=` in PGOPTIONS, where a space or a backslash must be escaped."""
    return role.replace("\\", "\\\\").replace(" ", "\\ ")


def _stdin(t: Target, chunks: Iterable[bytes]) -> Iterator[bytes]:
    yield b"".join(base64.b64encode(p.encode("utf-8")) + b"\n" for p in t.passwords[:2]) + b"\n"
    yield from chunks


def run(app: App, t: Target, script: str, *args: str, stdout: Callable[[bytes], object],
        stdin: Iterable[bytes] = (), close_stdin: bool = True, idle_timeout: float | None = None) -> ExecResult:
    """Run one of this module's scripts (at most three arguments of its own, never secret)."""
    if len(args) > 3:
        raise ValueError("a pod script takes at most three arguments")
    command = ["sh", "-c", script, "coderctl", t.user, t.database, t.sources, *args]
    return exec_stream(app.kube(), t.namespace, t.pod, command, container=t.container, stdout=stdout,
                       stdin=_stdin(t, stdin), close_stdin=close_stdin, idle_timeout=idle_timeout)


def query(app: App, t: Target, sql: str, *, idle_timeout: float | None = None,
          limit: int = 16 * 1024 * 1024) -> list[list[str]]:
    """Rows of `sql` run by psql in the pod (`|`-separated, unaligned); PodQueryFailed when psql fails.

    The SQL goes on stdin, so it may hold values that must not appear in argv (a password verifier)."""
    data = sql.encode("utf-8")
    out = bytearray()

    def take(chunk: bytes) -> None:
        if len(out) < limit:
            out.extend(chunk)

    result = run(app, t, QUERY, str(len(data)), stdout=take, stdin=[data],
                 idle_timeout=idle_timeout if idle_timeout is not None else max(app.timeout * 6, 30))
    if not result.ok:
        raise PodQueryFailed(app.redact(error_line(result)))
    return [line.split("|") for line in out.decode("utf-8", "replace").splitlines() if line]


def error_line(result: ExecResult) -> str:
    """The telling line of a failed pod command's stderr, else the API's message, else the exit code."""
    return first_error(result.stderr.decode("utf-8", "replace")) or result.message or f"exit code {result.exit_code}"
