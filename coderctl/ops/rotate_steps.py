"""The steps of a rotation, as durable Actions (coderctl/ops/operation.py).

Order, strategy `restart`:

- without auto-reload: write Infisical, wait for the operator's sync, ALTER ROLE, restart Coder, verify;
- with `secrets.infisical.com/auto-reload: "true"` on the Deployment the operator restarts Coder as soon as
  the Secret changes, so the app role's password is changed first (no new pod may start with a password
  the role does not have yet); the admin password is still written to Infisical before its ALTER ROLE,
  since losing it would lock coderctl out of the database.

A password generated for an ALTER ROLE that comes before its Infisical write lives only in this process
until written; a resumed rotation that finds the role changed but Infisical not yet simply sets another
one (coderctl is the admin). Every other value is read back from Infisical by the versions the record
holds, never kept in the record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coderctl.clients.infisical import InfisicalApprovalRequired
from coderctl.ops.operation import Action, Run
from coderctl.ops.rotate_world import (
    ADMIN_PASSWORD,
    ADMIN_ROLE,
    DATABASE_URL,
    SECRET_KEYS,
    USER_PASSWORD,
    RotateError,
    World,
    keys_for,
    new_password,
    quote_ident,
    quote_literal,
    replace_user,
)

_PENDING: dict[tuple[str, str], str] = {}
"""(operation id, Infisical name) -> a password set on a role but not yet written to Infisical."""

RESTART_STEP = "restart coder"
SYNC_STEP = "wait for sync"


def _world(run: Run) -> World:
    return World(run.app, run.state)


def _versions(run: Run, name: str) -> dict[str, Any]:
    return dict(run.state["versions"][name])


def _set_version(run: Run, name: str, key: str, value: int) -> None:
    run.state["versions"][name] = {**run.state["versions"][name], key: value}


def admin_candidates(w: World, run: Run) -> list[str]:
    """Passwords the admin role may have at this point: Infisical's current, the pending one, the old."""
    out = [w.read(ADMIN_PASSWORD).value]
    pending = _PENDING.get((run.record.id, ADMIN_PASSWORD))
    if pending:
        out.append(pending)
    out.append(w.old_value(ADMIN_PASSWORD))
    return list(dict.fromkeys(out))


def app_role(run: Run) -> str:
    """The role that gets the new app password: the URL's user, or under alternate the idle login role."""
    return str(run.state.get("login_new") or run.state["user_role"])


def _pending_password(run: Run, name: str) -> str:
    """A new password for Infisical's `name`, registered with the redactor and held until Infisical has it."""
    password = new_password()
    run.app.redact.add(password)
    _PENDING[(run.record.id, name)] = password
    return password


def _set_role_password(w: World, run: Run, role: str, password: str) -> None:
    """ALTER ROLE, then a login with the password proves it took."""
    w.set_role_password(role, password, admin_candidates(w, run))
    if not w.can_login(role, password):
        raise RotateError(f"ALTER ROLE {role} ran, but the new password does not log in")


def _where(run: Run) -> str:
    s = run.state["infisical"]
    return f"Infisical {s['environment']}:{s['path']}"


# -- writing Infisical -----------------------------------------------------------------------------------

def _held(exc: InfisicalApprovalRequired, name: str, run: Run) -> str:
    policy = f"{exc.policy_name} ({exc.policy_id})" if exc.policy_name else exc.policy_id
    return (f"a change policy in {_where(run)} requires approval for {name} and changed nothing (policy {policy}); "
            f"Infisical opened approval request {exc.slug or exc.request_id} (id {exc.request_id}): reject it, or "
            "it would apply a value nothing else matches")


def _write(name: str, role_first: bool) -> Action:
    def value_for(run: Run, w: World, current: str) -> str:
        from coderctl.clients.postgres import DatabaseURL

        if name == USER_PASSWORD:  # the password of the URL this rotation wrote just before
            return DatabaseURL.parse(w.new_value(DATABASE_URL)).password
        secret = USER_PASSWORD if name == DATABASE_URL else name
        password = _PENDING.get((run.record.id, secret))
        if password is None:
            password = new_password()
            run.app.redact.add(password)
            if role_first:
                # resumed in another process: the role was set to a password nobody holds; set a known one
                w.set_role_password(app_role(run), password, admin_candidates(w, run))
        _PENDING[(run.record.id, secret)] = password
        if name != DATABASE_URL:
            return password
        url = DatabaseURL.parse(current)
        new = url.with_password(password)
        return new if app_role(run) == url.user else replace_user(new, url.user, app_role(run))

    def do(run: Run) -> str:
        w = _world(run)
        v = _versions(run, name)
        current = w.read(name)
        if current.version != int(v["old"]):
            raise RotateError(f"{name} changed in {_where(run)} since the preflight (version {v['old']} then, "
                              f"{current.version} now): another writer; nothing of this step was done")
        value = value_for(run, w, current.value)
        try:
            written = w.write(name, value)
        except InfisicalApprovalRequired as exc:
            raise RotateError(_held(exc, name, run)) from None
        _set_version(run, name, "new", written.version)
        if name != DATABASE_URL:
            _PENDING.pop((run.record.id, name), None)
        return f"version {v['old']} -> {written.version} of {name} (read back)"

    def is_done(run: Run) -> bool:
        current = _world(run).read(name)
        if current.version > int(_versions(run, name)["old"]):
            _set_version(run, name, "new", current.version)
            return True
        return False

    def undo(run: Run) -> str:
        from coderctl.clients.infisical import same_value

        w = _world(run)
        v = _versions(run, name)
        old = w.old_value(name)
        current = w.read(name)
        if current.version == int(v["old"]) or same_value(current.value, old):
            return f"{name} is at version {current.version}, the value of version {v['old']}"
        try:
            back = w.write(name, old)
        except InfisicalApprovalRequired as exc:
            raise RotateError(_held(exc, name, run)) from None
        _set_version(run, name, "restored", back.version)
        return f"version {back.version} of {name} holds the value of version {v['old']} again"

    def by_hand(run: Run) -> str:
        v = _versions(run, name)
        return (f"in {_where(run)}, set {name} back to the value of its version {v['old']} (Infisical: the "
                f"secret's version history, restore version {v['old']}); reject any open approval request for it")

    return Action(f"write {name}", f"write {name} in {{where}} (a new version), read it back",
                  do, is_done, undo, by_hand)


# -- the operator's sync ------------------------------------------------------------------------------------

def _sync(keys: list[str]) -> Action:
    def expected(run: Run) -> dict[str, str]:
        w = _world(run)
        return {k: w.new_value(k) for k in keys}

    def do(run: Run) -> str:
        waited = _world(run).wait_secret(expected(run), float(run.state["sync_timeout"]), "the new values")
        return f"Secret {run.state['secret']} holds the new values ({', '.join(SECRET_KEYS[k] for k in keys)}) " \
               f"after {waited:.1f} s"

    def is_done(run: Run) -> bool:
        want = expected(run)
        now = _world(run).secret_values()
        return all(now.get(k) == v for k, v in want.items())

    return Action(SYNC_STEP, "wait until the Infisical operator has synced them into Secret {secret} "
                  "(--sync-timeout)", do, is_done)


# -- the roles ----------------------------------------------------------------------------------------------

def _alter(name: str, role_first: bool) -> Action:
    def role(run: Run) -> str:
        return app_role(run) if name == USER_PASSWORD else ADMIN_ROLE

    def do(run: Run) -> str:
        w = _world(run)
        password = _pending_password(run, name) if role_first else w.new_value(name)
        _set_role_password(w, run, role(run), password)
        return f"role {role(run)}: new password set (SCRAM verifier built here, SQL on stdin)"

    def is_done(run: Run) -> bool:
        w = _world(run)
        if role_first:
            return not w.can_login(role(run), w.old_value(name))
        return w.can_login(role(run), w.new_value(name))

    def undo(run: Run) -> str:
        w = _world(run)
        old = w.old_value(name)
        if w.can_login(role(run), old):
            return f"role {role(run)}: the old password logs in"
        w.set_role_password(role(run), old, admin_candidates(w, run))
        _PENDING.pop((run.record.id, name), None)
        return f"role {role(run)}: old password set again"

    def by_hand(run: Run) -> str:
        v = _versions(run, name)
        return (f"set the password of role {role(run)} back to the value of {name} version {v['old']} in "
                f"{_where(run)}: kubectl -n {run.app.namespace} exec -it {run.app.settings.postgres_pod} -- psql "
                f"-U postgres, then \\password {role(run)} (the value typed, never on a command line)")

    who = "{role}" if name == USER_PASSWORD else ADMIN_ROLE
    plan = (f"ALTER ROLE {who} PASSWORD with a SCRAM-SHA-256 verifier built locally (SQL on stdin of psql in "
            "pod {pod})")
    return Action(f"alter role {'user' if name == USER_PASSWORD else 'admin'}", plan, do, is_done, undo, by_hand)


# -- strategy alternate: two login roles acting as the app role ----------------------------------------------

def _setup_roles() -> Action:
    """Creates the login roles the preflight found absent (`roles_absent` in the record), each marked with a
    comment naming this rotation, so that the undo drops exactly those: never a role that existed before, nor
    one somebody made meanwhile. The roles own nothing (their sessions act as the owner), so DROP ROLE needs
    nothing reassigned."""

    def marker(run: Run) -> str:
        return f"created by coderctl rotate-secrets {run.record.id}"

    def absent(run: Run) -> list[str]:
        return [str(r) for r in run.state.get("roles_absent") or ()]

    def do(run: Run) -> str:
        owner = str(run.state["owner"])
        sql = []
        for login in run.state["login_roles"]:
            if login in absent(run):
                sql.append(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {quote_literal(login)}) "
                           f"THEN CREATE ROLE {quote_ident(login)} LOGIN; COMMENT ON ROLE {quote_ident(login)} IS "
                           f"{quote_literal(marker(run))}; END IF; END $$;\n")
            sql.append(f"GRANT {quote_ident(owner)} TO {quote_ident(login)};\n"
                       f"ALTER ROLE {quote_ident(login)} SET role = {quote_literal(owner)};\n")
        w = _world(run)
        w.admin_sql("".join(sql), admin_candidates(w, run))
        made = f"created {', '.join(absent(run))}" if absent(run) else "none created (they existed)"
        return f"login roles {', '.join(run.state['login_roles'])} act as {owner} (no password yet; {made})"

    def undo(run: Run) -> str:
        if not absent(run):
            return "no login role was created by this rotation: nothing to drop"
        sql = [f"DO $$ BEGIN IF shobj_description((SELECT oid FROM pg_roles WHERE rolname = {quote_literal(r)}), "
               f"'pg_authid') = {quote_literal(marker(run))} THEN DROP ROLE {quote_ident(r)}; END IF; END $$;\n"
               for r in absent(run)]
        listed = ", ".join(quote_literal(r) for r in absent(run))
        sql.append(f"SELECT rolname FROM pg_roles WHERE rolname IN ({listed});\n")
        w = _world(run)
        left = {row[0] for row in w.admin_sql("".join(sql), admin_candidates(w, run)) if row}
        dropped = [r for r in absent(run) if r not in left]
        said = f"dropped login roles {', '.join(dropped)}" if dropped else "no login role of this rotation was left"
        kept = [r for r in absent(run) if r in left]
        return said + (f"; kept {', '.join(kept)} (not created by this rotation)" if kept else "")

    def by_hand(run: Run) -> str:
        roles = ", ".join(quote_ident(r) for r in absent(run))
        return (f"once no Coder pod logs in as them, drop the login roles this rotation created: kubectl -n "
                f"{run.app.namespace} exec -it {run.app.settings.postgres_pod} -- psql -U postgres -c "
                f"'DROP ROLE IF EXISTS {roles}'")

    return Action("set up login roles", "create login roles {logins}, members of {owner}, each with "
                  "`SET role = {owner}` so that every object stays owned by {owner} (first alternate run only)", do,
                  None, undo, by_hand)


def _alter_next() -> Action:
    def do(run: Run) -> str:
        _set_role_password(_world(run), run, app_role(run), _pending_password(run, USER_PASSWORD))
        return f"role {app_role(run)} (not in use): new password set"

    def undo(run: Run) -> str:
        w = _world(run)
        w.set_role_password(app_role(run), new_password(), admin_candidates(w, run))
        _PENDING.pop((run.record.id, USER_PASSWORD), None)
        return f"role {app_role(run)}: a password nobody holds"

    return Action("alter role next", "ALTER ROLE {login_new} (not in use) PASSWORD with a SCRAM-SHA-256 verifier "
                  "built locally", do, None, undo)


def _retire() -> Action:
    def do(run: Run) -> str:
        w = _world(run)
        old = str(run.state["user_role"])
        w.set_role_password(old, new_password(), admin_candidates(w, run))
        if w.can_login(old, w.old_value(USER_PASSWORD)):
            raise RotateError(f"role {old} still logs in with its previous password")
        return f"role {old}: a password nobody holds (its pods are gone)"

    def is_done(run: Run) -> bool:
        w = _world(run)
        return not w.can_login(str(run.state["user_role"]), w.old_value(USER_PASSWORD))

    def undo(run: Run) -> str:
        w = _world(run)
        old_role, old = str(run.state["user_role"]), w.old_value(USER_PASSWORD)
        if w.can_login(old_role, old):
            return f"role {old_role}: the previous password logs in"
        w.set_role_password(old_role, old, admin_candidates(w, run))
        return f"role {old_role}: previous password set again"

    def by_hand(run: Run) -> str:
        return (f"set the password of role {run.state['user_role']} back to the value of {USER_PASSWORD} version "
                f"{run.state['versions'][USER_PASSWORD]['old']} in {_where(run)} (psql as postgres, \\password)")

    return Action("retire previous role", "once the old pods are gone, give {role} a password nobody holds", do,
                  is_done, undo, by_hand)


# -- Coder ------------------------------------------------------------------------------------------------

def _restart() -> Action:
    def do(run: Run) -> str:
        w = _world(run)
        if run.state["auto_reload"]:
            w.wait_operator_restart(float(run.state["sync_timeout"]))
            how = "restarted by the Infisical operator (auto-reload)"
        else:
            run.state["restarted_at"] = w.restart()
            how = f"restarted (kubectl.kubernetes.io/restartedAt={run.state['restarted_at']})"
        return f"deployment {run.state['deployment']} {how}; {w.wait_rollout(float(run.state['rollout_timeout']))}"

    return Action(RESTART_STEP, "restart deployment {deployment} ({how}) and wait for the rollout "
                  "(--rollout-timeout; fails early when new pods crash)", do)


HealthProbe = Callable[[], tuple[str, str]]
"""Coder's /healthz through the access URL, judged as verify's http.healthz judges it: (status, detail) with
status ok, warn, fail, skip or error. Handed in by the CLI (ops may not import the checks)."""


def _healthz(run: Run, health: HealthProbe) -> str:
    """The probe's answer, reported and kept in the record; anything but ok (or skip: nothing to ask) makes the
    step a warning, never a failure: the rollout already saw the new pods pass their readiness probe, so a
    failing answer through the access URL points at the path (ingress, tunnel, DNS), which a rollback (another
    restart of Coder) cannot mend."""
    status, detail = health()
    run.state["healthz"] = {"status": status, "detail": detail}
    if status not in ("ok", "skip"):
        run.row.status = "warn"
    head = "Coder /healthz through the access URL"
    return f"{head}: {detail}" if status == "ok" else f"{head} ({status}): {detail}"


def _verify(keys: list[str], health: HealthProbe | None = None) -> Action:
    def do(run: Run) -> str:
        w = _world(run)
        said = []
        for name in (USER_PASSWORD, ADMIN_PASSWORD):
            if name not in keys:
                continue
            who = app_role(run) if name == USER_PASSWORD else ADMIN_ROLE
            before = run.state["user_role"] if name == USER_PASSWORD else ADMIN_ROLE
            if not w.can_login(who, w.new_value(name)):
                raise RotateError(f"the new password of {who} does not log in")
            if w.can_login(before, w.old_value(name)):
                raise RotateError(f"the old password of {before} still logs in")
            said.append(f"{who}: new password logs in; {before}: old one does not")
            if name == USER_PASSWORD and run.state.get("owner") and who != run.state["owner"]:
                acting = w.acts_as(who, w.new_value(name))
                if acting != run.state["owner"]:
                    raise RotateError(f"a session of {who} acts as {acting or 'nobody'}, not {run.state['owner']}")
                said.append(f"{who} acts as {acting}")
        if USER_PASSWORD in keys:
            from coderctl.clients.postgres import DatabaseURL

            url = DatabaseURL.parse(w.secret_values()[DATABASE_URL])
            if url.password != w.new_value(USER_PASSWORD) or not w.can_login(url.user, url.password):
                raise RotateError("the database URL in the Secret does not log in")
            said.append("the Secret's database URL logs in")
        if health is not None:
            said.append(_healthz(run, health))
        return "; ".join(said)

    return Action("verify", "log in with the new credentials; the old ones must fail; Coder's /healthz through "
                  "the access URL (a warning when it fails)", do)


# -- the way back ----------------------------------------------------------------------------------------

def _preflight(keys: list[str]) -> Action:
    def do(run: Run) -> str:
        return "passed before the start"

    def undo(run: Run) -> str:
        """Last of the way back: the Secret synced to the previous values, Coder restarted on them."""
        w = _world(run)
        said = []
        waited = w.wait_secret({k: w.old_value(k) for k in keys}, float(run.state["sync_timeout"]),
                               "the previous values")
        said.append(f"Secret holds the previous values ({waited:.1f} s)")
        restart = run.record.step(RESTART_STEP) if any(s.name == RESTART_STEP for s in run.record.steps) else None
        sync = run.record.step(SYNC_STEP)
        touched = restart is not None and restart.status != "pending"
        if run.state["auto_reload"] and sync.status != "pending":
            w.wait_operator_restart(float(run.state["sync_timeout"]))
            said.append(f"{w.wait_rollout(float(run.state['rollout_timeout']))} (restarted by the operator)")
        elif touched:
            run.state["restarted_at"] = w.restart()
            said.append(f"Coder restarted: {w.wait_rollout(float(run.state['rollout_timeout']))}")
        for name in (USER_PASSWORD, ADMIN_PASSWORD):
            if name in keys:
                who = run.state["user_role"] if name == USER_PASSWORD else ADMIN_ROLE
                if not w.can_login(who, w.old_value(name)):
                    raise RotateError(f"after the way back, the previous password of {who} does not log in")
        said.append("the previous credentials log in")
        return "; ".join(said)

    def by_hand(run: Run) -> str:
        return (f"make sure Secret {run.app.namespace}/{run.state['secret']} holds the previous values (kubectl -n "
                f"{run.app.namespace} describe infisicalsecret), then: kubectl -n {run.app.namespace} rollout "
                f"restart deployment/{run.state['deployment']}")

    return Action("preflight", "read the InfisicalSecret, Infisical's values and versions, Secret {secret}; "
                  "log in as {role} and postgres; Deployment {deployment} healthy; Lease free", do, None, undo,
                  by_hand)


def actions(state: dict[str, Any], health: HealthProbe | None = None) -> list[Action]:
    """The steps of a rotation described by a record's state; `health` joins the verify step."""
    keys = keys_for(str(state["target"]))
    auto = bool(state["auto_reload"])
    user = USER_PASSWORD in keys
    admin = ADMIN_PASSWORD in keys
    steps: list[Action] = [_preflight(keys)]
    if state.get("strategy") == "alternate" and user:
        return [_describe(a, state) for a in _alternate(state, keys, steps, health)]
    if user and auto:
        steps.append(_alter(USER_PASSWORD, role_first=True))
    steps += [_write(k, role_first=auto and k == DATABASE_URL) for k in keys]
    steps.append(_sync(keys))
    if user and not auto:
        steps.append(_alter(USER_PASSWORD, role_first=False))
    if admin:
        steps.append(_alter(ADMIN_PASSWORD, role_first=False))
    if user or auto:
        steps.append(_restart())
    steps.append(_verify(keys, health))
    return [_describe(a, state) for a in steps]


def _alternate(state: dict[str, Any], keys: list[str], steps: list[Action],
               health: HealthProbe | None) -> list[Action]:
    """The new password goes to the login role not in use (safe at any time: nobody logs in with it), the URL
    follows it, Coder restarts, and the previous role keeps working until then."""
    if state.get("setup"):
        steps.append(_setup_roles())
    steps.append(_alter_next())
    steps += [_write(k, role_first=k == DATABASE_URL) for k in keys]
    steps.append(_sync(keys))
    if ADMIN_PASSWORD in keys:
        steps.append(_alter(ADMIN_PASSWORD, role_first=False))
    steps += [_restart(), _retire(), _verify(keys, health)]
    return steps


def _describe(action: Action, state: dict[str, Any]) -> Action:
    from dataclasses import replace

    s = state["infisical"]
    names = {"where": f"Infisical {s['environment']}:{s['path']}", "secret": state["secret"],
             "deployment": state["deployment"], "role": state["user_role"], "pod": state["postgres_pod"],
             "how": "by the Infisical operator, auto-reload" if state["auto_reload"] else "kubectl rollout restart",
             "logins": ", ".join(state.get("login_roles") or ()), "owner": state.get("owner", ""),
             "login_new": state.get("login_new", "")}
    return replace(action, plan=action.plan.format(**names))
