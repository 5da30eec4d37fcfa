"""`coderctl rotate-secrets`: discover, plan, preflight, then the durable steps (rotate_steps), and the way
back, resume and listing of rotations.

The record of a rotation holds names, versions and step states only; see docs/rotate-secrets.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coderctl.errors import CoderctlError, UsageError
from coderctl.ops.journal import Outcome
from coderctl.ops.operation import Action, Executor
from coderctl.ops.rotate_steps import HealthProbe, actions
from coderctl.ops.rotate_world import (
    ADMIN_PASSWORD,
    ADMIN_ROLE,
    AUTO_RELOAD,
    DATABASE_URL,
    SECRET_KEYS,
    USER_PASSWORD,
    World,
    login_roles,
    quote_literal,
)

if TYPE_CHECKING:
    from coderctl.context import App
    from coderctl.ops.record import Record

KIND = "rotate-secrets"
STATES = ("running", "interrupted", "failed", "done", "rolled-back")


class PreflightFailed(CoderctlError):
    """The deployment is not in a state a rotation can start from; nothing was changed."""


@dataclass(frozen=True)
class RotateOptions:
    target: str = "user"
    strategy: str = "restart"
    via: str = "exec"
    sync_timeout: float = 180.0
    rollout_timeout: float = 300.0
    health: HealthProbe | None = field(default=None, compare=False)
    """Asked by the verify step (docs/rotate-secrets.md: a failing /healthz is a warning)."""


@dataclass
class Prepared:
    state: dict[str, Any]
    steps: list[Action]
    problems: list[str]

    def plan(self) -> list[dict[str, str]]:
        return [{"step": a.name, "does": a.plan} for a in self.steps]


def prepare(app: App, opts: RotateOptions) -> Prepared:
    """Discover what the rotation touches, build its steps, and run every preflight check (read only)."""
    state = discover(app, opts)
    steps = actions(state, opts.health)
    return Prepared(state, steps, preflight(app, state))


def discover(app: App, opts: RotateOptions) -> dict[str, Any]:
    from coderctl import discovery
    from coderctl.clients.kube import INFISICALSECRETS
    from coderctl.clients.postgres import DatabaseURL

    target = discovery.infisical_target(app)
    _, project = app.cached("rotate:infisical", lambda: discovery.infisical_client(app))
    spec = app.kube().get(INFISICALSECRETS, app.settings.infisical_secret, app.namespace).get("spec") or {}
    managed = (spec.get("managedSecretReference") or {}).get("secretName") or app.settings.database_secret
    dep = discovery.coder_deployment(app)
    auto = ((dep.get("metadata") or {}).get("annotations") or {}).get(AUTO_RELOAD) == "true"
    state: dict[str, Any] = {
        "target": opts.target, "strategy": opts.strategy, "via": opts.via,
        "sync_timeout": opts.sync_timeout, "rollout_timeout": opts.rollout_timeout,
        "infisical": {"project": project, "environment": target.environment, "path": target.path},
        "secret": str(managed), "deployment": str(app.settings.coder_deployment), "auto_reload": auto,
        "postgres_pod": str(app.settings.postgres_pod), "versions": {}, "user_role": "", "database": "",
    }
    w = World(app, state)
    for name in SECRET_KEYS:
        try:
            state["versions"][name] = {"old": w.read(name).version}
        except CoderctlError as exc:
            raise PreflightFailed(f"preflight: cannot read {name} in Infisical: {exc}") from None
    try:
        url = DatabaseURL.parse(w.read(DATABASE_URL).value)
    except UsageError as exc:
        raise PreflightFailed(f"preflight: {DATABASE_URL} in Infisical does not parse as Coder reads it ({exc}); "
                              "fix it in Infisical first") from None
    state["user_role"], state["database"] = url.user, url.database
    if opts.strategy == "alternate" and opts.target != "admin":
        if "user" in url.params:
            raise PreflightFailed("preflight: the database URL names its user in a query parameter; strategy "
                                  "alternate needs it in the userinfo")
        owner = url.user
        for suffix in ("_a", "_b"):
            if url.user.endswith(suffix):
                owner = url.user[: -len(suffix)]
        logins = login_roles(owner)
        state.update(owner=owner, login_roles=list(logins), setup=url.user == owner,
                     login_new=logins[1] if url.user == logins[0] else logins[0])
    return state


def preflight(app: App, state: dict[str, Any]) -> list[str]:
    """Every reason the rotation must not start (empty: it may)."""
    import hmac

    from coderctl import discovery
    from coderctl.clients.postgres import DatabaseURL

    problems: list[str] = []
    w = World(app, state)
    ns = app.namespace
    ref = (discovery.coder_env(app).get("CODER_PG_CONNECTION_URL") or {}).get("valueFrom", {}).get("secretKeyRef")
    if not ref or ref.get("name") != state["secret"] or ref.get("key") != SECRET_KEYS[DATABASE_URL]:
        problems.append(f"Coder's CODER_PG_CONNECTION_URL does not come from Secret {ns}/{state['secret']} key "
                        f"{SECRET_KEYS[DATABASE_URL]}: a rotation would not reach Coder")
    values = {name: w.read(name).value for name in SECRET_KEYS}
    try:
        in_secret = w.secret_values()
    except CoderctlError as exc:
        return [*problems, f"cannot read Secret {ns}/{state['secret']}: {exc}"]
    for name, key in SECRET_KEYS.items():
        if not hmac.compare_digest(in_secret.get(name, "").encode(), values[name].encode()):
            problems.append(f"Secret {ns}/{state['secret']} key {key} differs from {name} in Infisical: the "
                            "operator has not synced (kubectl describe infisicalsecret)")
    url = DatabaseURL.parse(values[DATABASE_URL])
    if url.password != values[USER_PASSWORD]:
        problems.append(f"the password in {DATABASE_URL} differs from {USER_PASSWORD} in Infisical")
    if not problems:
        problems += _logins(w, url.user, values)
    if not problems and state.get("setup"):
        problems += _absent_roles(w, values[ADMIN_PASSWORD])
    problems += _rollout(w)
    problems += _lock(app)
    return problems


def _logins(w: World, user: str, values: dict[str, str]) -> list[str]:
    out = []
    try:
        if not w.can_login(ADMIN_ROLE, values[ADMIN_PASSWORD]):
            out.append(f"{ADMIN_ROLE} does not log in with {ADMIN_PASSWORD}: the role's password is not the one in "
                       "Infisical (Bitnami never applies a changed Secret to an existing database)")
        if not w.can_login(user, values[USER_PASSWORD]):
            out.append(f"{user} does not log in with {USER_PASSWORD}: the role's password is not the one in Infisical")
    except CoderctlError as exc:
        out.append(f"cannot test the logins: {exc}")
    return out


def _absent_roles(w: World, admin_password: str) -> list[str]:
    """Record in the state which login roles do not exist yet: the ones the setup step creates, and the only
    ones its undo may drop (the record is written with this state before any step runs)."""
    logins = list(w.state["login_roles"])
    try:
        listed = ", ".join(map(quote_literal, logins))
        rows = w.admin_sql(f"SELECT rolname FROM pg_roles WHERE rolname IN ({listed});\n", [admin_password])
    except CoderctlError as exc:
        return [f"cannot list the login roles {', '.join(logins)}: {exc}"]
    existing = {row[0] for row in rows if row}
    w.state["roles_absent"] = [r for r in logins if r not in existing]
    return []


def _rollout(w: World) -> list[str]:
    try:
        w.wait_rollout(0)
    except CoderctlError as exc:
        return [f"deployment {w.state['deployment']} is not healthy: {exc}"]
    return []


def _lock(app: App) -> list[str]:
    from coderctl.clients.kube import LEASES
    from coderctl.clients.kube_lease import LeaseInfo
    from coderctl.ops.lock import LEASE_NAME, OperationLock
    from coderctl.ops.operation import OperationBlocked, refuse_if_unfinished
    from coderctl.ops.recordstore import RecordStore

    try:
        refuse_if_unfinished(RecordStore(app.kube(), app.namespace))
    except OperationBlocked as exc:
        return [str(exc)]
    lease = app.kube().get_or_none(LEASES, LEASE_NAME, app.namespace)
    if lease is not None and LeaseInfo.of(lease).held():
        lock = OperationLock(app.kube(), app.namespace, holder="", operation="")
        return [lock.held_message(LeaseInfo.of(lease))]
    return []


def start(app: App, prepared: Prepared) -> tuple[Record, Outcome]:
    state = prepared.state
    params = {k: state[k] for k in ("target", "strategy", "via", "sync_timeout", "rollout_timeout")}
    record, outcome = Executor(app, KIND, prepared.steps).start(params, state)
    return record, _finish(record, outcome)


def resume(app: App, op_id: str, health: HealthProbe | None = None) -> tuple[Record, Outcome]:
    record, outcome = Executor(app, KIND, _steps_of(app, op_id, health)).resume(op_id)
    return record, _finish(record, outcome)


def rollback(app: App, op_id: str) -> tuple[Record, Outcome]:
    record, outcome = Executor(app, KIND, _steps_of(app, op_id)).rollback(op_id)
    return record, _finish(record, outcome)


def _steps_of(app: App, op_id: str, health: HealthProbe | None = None) -> list[Action]:
    from coderctl.ops.recordstore import RecordStore

    record = RecordStore(app.kube(), app.namespace).load(op_id)
    if record.kind != KIND:
        raise UsageError(f"operation {op_id} is a {record.kind}, not a rotation")
    return actions(record.state, health)


def _finish(record: Record, outcome: Outcome) -> Outcome:
    outcome.result = {**outcome.result, "target": record.state.get("target"),
                      "strategy": record.state.get("strategy"), "versions": record.state.get("versions")}
    if record.state.get("healthz"):
        outcome.result["healthz"] = record.state["healthz"]
    return outcome


def rotations(app: App) -> list[dict[str, Any]]:
    """Every rotation's record, newest first, with its state as `--list` shows it."""
    from coderctl.clients.kube import LEASES
    from coderctl.clients.kube_lease import LeaseInfo
    from coderctl.ops.lock import LEASE_NAME, OPERATION_ANNOTATION
    from coderctl.ops.recordstore import RecordStore

    lease = app.kube().get_or_none(LEASES, LEASE_NAME, app.namespace)
    info = LeaseInfo.of(lease) if lease is not None else None
    running = info.annotations.get(OPERATION_ANNOTATION) if info is not None and info.held() else None
    out = []
    for rec in RecordStore(app.kube(), app.namespace).all(KIND):
        alive = rec.id == running and _holder_alive(info.holder if info is not None else "")
        state = {"running": "running" if alive else "interrupted",
                 "needs-person": "failed"}.get(rec.status, rec.status)
        out.append({"id": rec.id, "state": state, "status": rec.status, "started_at": rec.created_at,
                    "updated_at": rec.updated_at, "holder": rec.holder, "step": rec.current,
                    "target": rec.state.get("target"), "strategy": rec.state.get("strategy"),
                    "message": rec.message})
    return out


def _holder_alive(holder: str) -> bool:
    """False when the Lease's holder (`user@host:pid`) is a process of this machine that no longer exists:
    its Lease has not expired yet, but nobody will renew it."""
    import os
    import socket

    host, _, pid = holder.rpartition("@")[2].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
