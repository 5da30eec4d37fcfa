"""The database's role layout: the URL's user owns the database or acts as its owner, nothing is owned by a
login role that a rotation retires, and the alternate strategy's other login role is ready to take over."""

from __future__ import annotations

from typing import Any

from coderctl.checks.base import Outcome, SkipCheck, check, error, found
from coderctl.checks.database import EXEC_MODULES
from coderctl.checks.secrets import restart_coder
from coderctl.context import App
from coderctl.database import login
from coderctl.database.roles import Layout, LayoutUnreadable, Owned, Role, ident, literal, read
from coderctl.errors import UsageError
from coderctl.problems import Problem, code

DB_ROLE_NOT_OWNER = code(
    "DB-ROLE-NOT-OWNER", "fail", "The database URL's user neither owns the database nor acts as its owner",
    meaning="Coder's migrations create objects as the session's user: unless the URL's user is the database's owner, "
            "or a login role that is a member of it with `ALTER ROLE ... SET role = '<owner>'` (the layout of "
            "coderctl rotate-secrets --strategy alternate), new objects are owned by that user, Coder acting as "
            "the owner cannot alter them, and they break when the role is retired; without membership Coder cannot "
            "even use the owner's tables.",
    evidence="the database's owner; the URL's user, whether it is a member of the owner and its `role` setting",
    fix="GRANT <owner> TO <user>; ALTER ROLE <user> SET role = '<owner>'; then restart Coder",
    check="database.roles")
DB_OBJECTS_OWNED_ELSEWHERE = code(
    "DB-OBJECTS-OWNED-ELSEWHERE", "warn", "Objects of the Coder database are owned by a login role, not its owner",
    meaning="tables, sequences, functions, types or schemas owned by a login role other than the database's owner "
            "(made while a session did not act as the owner): Coder's migrations, acting as the owner, cannot "
            "alter them, a backup acting as the owner cannot read them, and they break when that role is retired "
            "or dropped.",
    evidence="each such role with the number of objects it owns and a few of them by name",
    fix="REASSIGN OWNED BY <role> TO <owner> in the Coder database (for objects of the superuser postgres: "
        "ALTER ... OWNER TO <owner> for each)", check="database.roles")
DB_LOGIN_ROLE_NO_SET_ROLE = code(
    "DB-LOGIN-ROLE-NO-SET-ROLE", "warn", "A login role of the alternate layout does not act as the owner",
    meaning="the URL's user is one of the alternate strategy's login roles (<owner>_a, <owner>_b), but the other one "
            "is not a member of the owner or has no `SET role = '<owner>'`: the next rotation points Coder at it, "
            "and Coder's objects would then be owned by it.",
    evidence="the role, its membership in the owner and its `role` setting",
    fix="GRANT <owner> TO <role>; ALTER ROLE <role> SET role = '<owner>'", check="database.roles")


def _psql(app: App, database: str) -> str:
    s = app.settings
    return (f"as postgres in the PostgreSQL pod: kubectl -n {app.namespace} exec -it {s.postgres_pod} -c "
            f"{s.postgres_container} -- psql -U postgres -d {database}")


def _setting(role: Role) -> str:
    return f"role = {role.acts_as}" if role.acts_as else "no role setting"


def _role_fix(layout: Layout, role: Role) -> list[str]:
    owner, name = ident(layout.owner), ident(role.name)
    grant = [] if role.member else [f"GRANT {owner} TO {name};"]
    return [*grant, f"ALTER ROLE {name} SET role = {literal(layout.owner)};"]


def _standing(layout: Layout, role: Role) -> str:
    member = "a member of" if role.member else "not a member of"
    return f"role {role.name}: {member} {layout.owner}, {_setting(role)}"


def _user_problem(layout: Layout, user: Role, app: App) -> Problem:
    owner = layout.owner
    why = (f"objects Coder's migrations create would be owned by {user.name}, which Coder acting as {owner} cannot "
           f"alter")
    if not user.member:
        why = f"it is not a member of {owner}, so Coder cannot use {owner}'s tables, and " + why
    elif user.acts_as and user.acts_as != owner:
        why = f"its sessions act as {user.acts_as}: " + why
    return DB_ROLE_NOT_OWNER(
        f"the URL's user {user.name} is not {owner} (owner of database {layout.database}) and does not act as it: "
        f"{why}",
        evidence=[f"database {layout.database}: owner {owner}", _standing(layout, user)],
        fix=[_psql(app, layout.database), *_role_fix(layout, user),
             f"then restart Coder, so that its new sessions act as {owner}: {restart_coder(app)}"])


def _owned_problem(layout: Layout, owned: Owned, app: App) -> Problem:
    names = [f"{kind} {name}" for kind, name in owned.objects]
    more = owned.count - len(names)
    listed = ", ".join(names) + (f" and {more} more" if more > 0 else "")
    if owned.superuser:
        fix = [f"ALTER {kind} {name} OWNER TO {ident(layout.owner)};" for kind, name in owned.objects]
        if more > 0:
            fix.append(f"and the same for the other {more} objects owned by {owned.owner} "
                       f"(REASSIGN OWNED cannot move a superuser's objects)")
    else:
        fix = [f"REASSIGN OWNED BY {ident(owned.owner)} TO {ident(layout.owner)};"]
    return DB_OBJECTS_OWNED_ELSEWHERE(
        f"{owned.count} object(s) in database {layout.database} are owned by {owned.owner}, not {layout.owner}: "
        f"{listed}; Coder acting as {layout.owner} cannot alter them, a backup acting as {layout.owner} cannot read "
        f"them, and they break when {owned.owner} is retired",
        evidence=[f"database {layout.database}: owner {layout.owner}",
                  f"owned by {owned.owner}: {owned.count} object(s), e.g. {listed}"],
        fix=[_psql(app, layout.database), *fix])


def _idle_problem(layout: Layout, role: Role, app: App) -> Problem:
    return DB_LOGIN_ROLE_NO_SET_ROLE(
        f"{role.name}, the alternate strategy's other login role, does not act as {layout.owner}: the next rotation "
        f"points Coder at it, and objects Coder creates would then be owned by {role.name}",
        evidence=[f"the URL's user: {layout.user}", _standing(layout, role)],
        fix=[_psql(app, layout.database), *_role_fix(layout, role)])


def assess(layout: Layout, app: App) -> tuple[list[Problem], str, dict[str, Any]]:
    """The problems of a layout, the detail when there is none, and the check's data."""
    user = layout.role(layout.user)
    if user is None:
        raise SkipCheck(f"the URL's user {layout.user} does not exist (database.connect)")
    problems: list[Problem] = []
    acting = layout.acts_as_owner(user)
    if not acting:
        problems.append(_user_problem(layout, user, app))
    problems += [_owned_problem(layout, o, app) for o in layout.owned]
    if user.name in layout.login_roles:
        for role in layout.roles:
            if role.name in layout.login_roles and role.name != user.name and not layout.acts_as_owner(role):
                problems.append(_idle_problem(layout, role, app))
    if user.name == layout.owner:
        detail = f"{user.name} owns database {layout.database}"
    else:
        detail = f"{user.name} acts as {layout.owner} (owner of database {layout.database})"
    data: dict[str, Any] = {
        "database": layout.database, "owner": layout.owner, "user": user.name, "user_acts_as": user.acts_as,
        "acts_as_owner": acting, "read_as": layout.read_as,
        "login_roles": {r.name: {"member": r.member, "acts_as": r.acts_as} for r in layout.roles
                        if r.name in layout.login_roles},
        "owned_elsewhere": {o.owner: o.count for o in layout.owned}}
    return problems, f"{detail}; read as {layout.read_as}", data


@check("database.roles", "database", "Coder's database user owns the database or acts as its owner",
       needs=("database.connect",), modules=EXEC_MODULES)
def database_roles(app: App) -> Outcome:
    """As postgres (else as the URL's user): the database's owner, the URL's user's membership in it and its `role`
    setting (pg_db_role_setting), objects owned by other login roles, and the alternate strategy's login roles."""
    try:
        layout = read(app, app.settings.db_via, app.settings.db_address)
    except UsageError:
        raise SkipCheck("the database URL does not parse (secret.consistency)") from None
    except LayoutUnreadable as exc:
        if not login(app, app.settings.db_via, app.settings.db_address).ok:
            raise SkipCheck("the URL's credentials do not log in (database.connect)") from None
        return error(f"the role layout could not be read: {exc}")
    problems, detail, data = assess(layout, app)
    return found(problems, detail, **data)
