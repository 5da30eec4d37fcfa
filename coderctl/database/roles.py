"""The role layout of the Coder database: its owner, how the URL's user stands to it, and who owns its objects.

Coder's migrations create objects as the session's current user, so the URL's user must be the database's
owner or a login role that acts as it: a member of the owner with `ALTER ROLE ... SET role = '<owner>'`, the
layout `rotate-secrets --strategy alternate` makes (login roles `<owner>_a`, `<owner>_b`). Read as the admin
(`postgres`) when its password is known, else as the URL's user; one query, catalogs only.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from coderctl import discovery
from coderctl.clients.postgres import DatabaseURL, split_address
from coderctl.context import App
from coderctl.database import Via, pod
from coderctl.database.messages import first_error
from coderctl.errors import CoderctlError

ADMIN = "postgres"
SHOWN = 5
_BARE = re.compile(r"[a-z_][a-z0-9_]*")
"""How many objects of one owner are named."""

_SYSTEM = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
           "AND n.nspname NOT LIKE 'pg\\_temp%'")


def _not_extension(catalog: str, oid: str) -> str:
    return (f"NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = '{catalog}'::regclass AND d.objid = {oid} "
            "AND d.deptype = 'e')")


# The public schema owned by the bootstrap superuser is how PostgreSQL before 15 creates every database.
_OBJECTS = f"""
SELECT c.relowner AS owner, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
         WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS kind,
       format('%I.%I', n.nspname, c.relname) AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_SYSTEM} AND {_not_extension('pg_class', 'c.oid')}
UNION ALL
SELECT p.proowner, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
       format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE {_SYSTEM} AND {_not_extension('pg_proc', 'p.oid')}
UNION ALL
SELECT t.typowner, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%I.%I', n.nspname, t.typname)
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE (t.typtype IN ('e', 'd', 'r')
        OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
   AND {_SYSTEM} AND {_not_extension('pg_type', 't.oid')}
UNION ALL
SELECT n.nspowner, 'SCHEMA', format('%I', n.nspname)
  FROM pg_namespace n
 WHERE {_SYSTEM} AND NOT (n.nspname = 'public' AND n.nspowner = 10) AND {_not_extension('pg_namespace', 'n.oid')}
"""

_MEMBER = ("pg_has_role(r.oid, db.datdba, CASE WHEN current_setting('server_version_num')::int >= 160000 "
           "THEN 'SET' ELSE 'MEMBER' END)")

# One JSON document (one column: psql's `|` separator cannot split it). The `role` setting in effect is the
# database-specific one before the one for every database, as PostgreSQL applies them.
_QUERY = """
WITH db AS (SELECT oid, datdba, pg_get_userbyid(datdba) AS owner FROM pg_database
             WHERE datname = current_database()),
settings AS (
  SELECT s.setrole, (array_agg(substr(c, 6) ORDER BY s.setdatabase DESC))[1] AS acts_as
    FROM pg_db_role_setting s CROSS JOIN db CROSS JOIN LATERAL unnest(s.setconfig) AS c
   WHERE s.setdatabase IN (0, db.oid) AND c LIKE 'role=%'
   GROUP BY s.setrole),
objects AS (@OBJECTS@),
owned AS (
  SELECT r.rolname AS owner, r.rolsuper AS superuser, count(*) AS count,
         (array_agg(json_build_array(o.kind, o.name) ORDER BY o.kind, o.name))[1:@SHOWN@] AS objects
    FROM objects o JOIN pg_roles r ON r.oid = o.owner CROSS JOIN db
   WHERE o.owner <> db.datdba AND r.rolcanlogin
   GROUP BY r.rolname, r.rolsuper)
SELECT json_build_object(
  'database', current_database(), 'owner', (SELECT owner FROM db), 'session_user', session_user,
  'roles', coalesce((SELECT json_agg(json_build_object(
      'name', r.rolname, 'login', r.rolcanlogin, 'superuser', r.rolsuper, 'member', @MEMBER@,
      'acts_as', s.acts_as) ORDER BY r.rolname)
    FROM pg_roles r CROSS JOIN db LEFT JOIN settings s ON s.setrole = r.oid
   WHERE r.rolname IN (@USER@, db.owner || '_a', db.owner || '_b')), '[]'),
  'owned', coalesce((SELECT json_agg(json_build_object('owner', owner, 'superuser', superuser, 'count', count,
      'objects', objects) ORDER BY owner) FROM owned), '[]'));
"""


@dataclass(frozen=True)
class Role:
    name: str
    login: bool
    superuser: bool
    member: bool
    """May SET ROLE to the database's owner (a superuser may to any role)."""
    acts_as: str | None
    """The `role` setting its sessions in this database start with (ALTER ROLE ... [IN DATABASE] SET role)."""


@dataclass(frozen=True)
class Owned:
    """Objects of the database owned by one login role other than the database's owner."""

    owner: str
    superuser: bool
    count: int
    objects: tuple[tuple[str, str], ...]
    """Up to SHOWN (kind, qualified name): ("TABLE", "public.stray")."""


@dataclass(frozen=True)
class Layout:
    database: str
    owner: str
    user: str
    """The database URL's user."""
    read_as: str
    roles: tuple[Role, ...]
    """The URL's user and the alternate strategy's login roles (`<owner>_a`, `<owner>_b`) that exist."""
    owned: tuple[Owned, ...]

    def role(self, name: str) -> Role | None:
        return next((r for r in self.roles if r.name == name), None)

    def acts_as_owner(self, role: Role) -> bool:
        """Its sessions create objects owned by the database's owner."""
        return role.name == self.owner or (role.member and role.acts_as == self.owner)

    @property
    def login_roles(self) -> tuple[str, str]:
        return f"{self.owner}_a", f"{self.owner}_b"


class LayoutUnreadable(CoderctlError):
    """Neither the admin nor the URL's user could read the catalogs; the message says why, redacted."""


def read(app: App, via: Via, address: str | None = None) -> Layout:
    """The layout, read once per run (verify and doctor share it)."""
    return app.cached(f"roles:{via}:{address}", lambda: _read(app, via, address))  # type: ignore[no-any-return]


def query_text(user: str) -> str:
    return (_QUERY.replace("@OBJECTS@", _OBJECTS).replace("@MEMBER@", _MEMBER).replace("@SHOWN@", str(SHOWN))
            .replace("@USER@", literal(user)))


def _read(app: App, via: Via, address: str | None) -> Layout:
    url = DatabaseURL.parse(discovery.database_url(app))
    app.redact.add(url.password)
    sql = query_text(url.user)
    errors: list[str] = []
    for reader in (ADMIN, url.user):
        try:
            text = _exec(app, url, reader, sql) if via == "exec" else _direct(app, url, reader, sql, address)
        except (pod.PodQueryFailed, _DirectFailed) as exc:
            errors.append(f"as {reader}: {exc}")
            continue
        except CoderctlError as exc:
            errors.append(f"as {reader}: {app.redact(str(exc))}")
            continue
        return parse(text, url.user, reader)
    raise LayoutUnreadable("; ".join(errors))


def _exec(app: App, url: DatabaseURL, reader: str, sql: str) -> str:
    target = pod.target(app, url, user=reader)
    if reader == ADMIN and not target.passwords and target.credentials != "pod":
        raise pod.PodQueryFailed("no password known for it (the managed Secret's postgres-admin-password)")
    rows = pod.query(app, target, sql, idle_timeout=app.timeout * 2)
    return "|".join(rows[0]) if rows else ""


class _DirectFailed(CoderctlError):
    pass


def _direct(app: App, url: DatabaseURL, reader: str, sql: str, address: str | None) -> str:
    import psycopg

    from coderctl.clients.postgres import connect

    password = pod.managed_password(app, ADMIN, None) if reader == ADMIN else url.password
    if not password:
        raise _DirectFailed("no password known for it (the managed Secret's postgres-admin-password)")
    app.redact.add(password)
    as_reader = dataclasses.replace(url, user=reader, password=password)
    host, port = split_address(address, url)
    try:
        with connect(as_reader, timeout=app.timeout, host=host, port=port) as conn:
            row = conn.execute(sql.encode()).fetchone()
    except psycopg.Error as exc:
        raise _DirectFailed(app.redact(first_error(str(exc), type(exc).__name__))) from None
    return json.dumps(row[0]) if row else ""


def parse(text: str, user: str, read_as: str) -> Layout:
    try:
        doc: dict[str, Any] = json.loads(text)
    except ValueError:
        raise LayoutUnreadable(f"unexpected answer from the catalogs: {text[:80]!r}") from None
    roles = tuple(Role(str(r["name"]), bool(r["login"]), bool(r["superuser"]), bool(r["member"]),
                       None if r.get("acts_as") is None else str(r["acts_as"])) for r in doc.get("roles") or [])
    owned = tuple(Owned(str(o["owner"]), bool(o["superuser"]), int(o["count"]),
                        tuple((str(kind), str(name)) for kind, name in o.get("objects") or []))
                  for o in doc.get("owned") or [])
    return Layout(str(doc["database"]), str(doc["owner"]), user, read_as, roles, owned)


_OWNER = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database();\n"


def database_owner(app: App, target: pod.Target) -> str:
    """The owner of `target`'s database, asked in the pod as `target`'s user; PodQueryFailed when it cannot."""
    rows = pod.query(app, target, _OWNER)
    return "|".join(rows[0]) if rows else ""


def database_owner_direct(app: App, url: DatabaseURL, host: str, port: int) -> str:
    """The same over a direct connection with the URL's credentials; psycopg.Error when it cannot."""
    from coderctl.clients.postgres import connect

    with connect(url, timeout=app.timeout, host=host, port=port) as conn:
        row = conn.execute(_OWNER.encode()).fetchone()
    return str(row[0]) if row else ""


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """`name` as SQL writes it: bare when it can be, else double-quoted."""
    return name if _BARE.fullmatch(name) else '"' + name.replace('"', '""') + '"'
