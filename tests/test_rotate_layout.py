"""The role layout of `rotate-secrets --strategy alternate` (the URL's user a login role acting as `coder`):
verify's database.roles check on the layout, healthy and broken on purpose in SQL, and `backup restore` after an
alternate rotation leaving every object owned by `coder`, with the login role still acting as it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backup_support import copy_of_coder
from clirun import run_cli
from coderctl.checks.roles import assess
from coderctl.clients.postgres import DatabaseURL
from coderctl.database.roles import Layout, Owned, Role
from lab.deployment import Lab
from rotate_support import RotLab, rotlab, settle  # noqa: F401

pytestmark = [pytest.mark.fake_only, pytest.mark.flaky(reruns=2)]  # exec handshakes can time out under load


def admin(lab: Lab, sql: str, database: str = "coder") -> list[tuple[Any, ...]]:
    """SQL as postgres over the lab server's private socket; the rows of the last statement, if any."""
    pg = lab.postgres
    with psycopg.connect(host=str(pg.socket_dir), port=pg.port, user="postgres", dbname=database,
                         autocommit=True) as conn:
        cur = conn.execute(sql.encode())
        return cur.fetchall() if cur.description else []


def owners(lab: Lab, database: str) -> set[str]:
    """Who owns the database's tables, sequences, views, functions, types and schemas (pg_catalog aside)."""
    rows = admin(lab, """
        SELECT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        UNION SELECT pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public'
        UNION SELECT pg_get_userbyid(t.typowner) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = 'public'
        UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'""", database)
    return {str(r[0]) for r in rows} - {"pg_database_owner"}


@contextmanager
def login_role(lab: Lab, *setup: str) -> Iterator[None]:
    """coder_a with coder's password (the managed Secret's coder-user-password), the URL pointing at it
    (scenario db-url-login-role), set up by `setup`; everything it owns and the role itself gone afterwards."""
    password = lab.postgres.user_password.replace("'", "''")
    admin(lab, f"CREATE ROLE coder_a LOGIN PASSWORD '{password}'")
    try:
        for sql in setup:
            admin(lab, sql)
        lab.scenario("db-url-login-role")
        yield
    finally:
        admin(lab, "DROP OWNED BY coder_a")
        admin(lab, "DROP ROLE coder_a")


ACTING = ("GRANT coder TO coder_a", "ALTER ROLE coder_a SET role = 'coder'")


def roles_check(lab: Lab, *more: str) -> dict[str, Any]:
    r = run_cli(*lab.verify("--only", "database", *more))
    lab.assert_no_secrets(r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return next(c for c in json.loads(r.stdout)["checks"] if c["id"] == "database.roles")


def problems(check: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["code"]: p for p in check["problems"]}


def test_the_chart_layout_is_ok(lab: Lab) -> None:
    check = roles_check(lab)
    assert check["status"] == "ok", check
    assert check["detail"] == "coder owns database coder; read as postgres"


def test_a_login_role_acting_as_the_owner_is_ok(lab: Lab) -> None:
    with login_role(lab, *ACTING):
        check = roles_check(lab)
        assert check["status"] == "ok", check
        assert check["detail"].startswith("coder_a acts as coder (owner of database coder)")
        assert check["data"]["acts_as_owner"] is True


def test_read_directly_when_asked(lab: Lab) -> None:
    with login_role(lab, *ACTING):
        pg = lab.postgres
        check = roles_check(lab, "--via", "direct", "--db-address", f"{pg.host}:{pg.port}")
        assert check["status"] == "ok", check
        assert check["data"]["read_as"] == "postgres"


def test_a_login_role_without_set_role_fails_with_the_exact_fix(lab: Lab) -> None:
    with login_role(lab, "GRANT coder TO coder_a", "SET ROLE coder_a; CREATE TABLE public.stray (id serial)"):
        check = roles_check(lab)
        assert check["status"] == "fail", check
        found = problems(check)
        assert set(found) == {"DB-ROLE-NOT-OWNER", "DB-OBJECTS-OWNED-ELSEWHERE"}
        assert "ALTER ROLE coder_a SET role = 'coder';" in found["DB-ROLE-NOT-OWNER"]["fix"]
        assert not any(f.startswith("GRANT") for f in found["DB-ROLE-NOT-OWNER"]["fix"]), "it is a member already"
        assert "owned by coder_a" in found["DB-ROLE-NOT-OWNER"]["message"]
        owned = found["DB-OBJECTS-OWNED-ELSEWHERE"]
        assert owned["severity"] == "warn"
        assert "TABLE public.stray" in owned["message"] and "SEQUENCE public.stray_id_seq" in owned["message"]
        assert owned["fix"][-1] == "REASSIGN OWNED BY coder_a TO coder;"
        assert "psql -U postgres -d coder" in owned["fix"][0]


def test_a_login_role_that_is_no_member_gets_the_grant_too(lab: Lab) -> None:
    with login_role(lab, "ALTER ROLE coder_a SET role = 'coder'"):
        check = roles_check(lab)
        found = problems(check)
        assert list(found) == ["DB-ROLE-NOT-OWNER"], check
        assert found["DB-ROLE-NOT-OWNER"]["fix"][1:3] == ["GRANT coder TO coder_a;",
                                                          "ALTER ROLE coder_a SET role = 'coder';"]
        assert "not a member of coder" in found["DB-ROLE-NOT-OWNER"]["message"]


def test_the_other_login_role_without_set_role_warns(lab: Lab) -> None:
    with login_role(lab, *ACTING, "CREATE ROLE coder_b LOGIN", "GRANT coder TO coder_b"):
        try:
            check = roles_check(lab)
        finally:
            admin(lab, "DROP ROLE coder_b")
    assert check["status"] == "warn", check
    found = problems(check)["DB-LOGIN-ROLE-NO-SET-ROLE"]
    assert "coder_b" in found["message"] and found["fix"][1:] == ["ALTER ROLE coder_b SET role = 'coder';"]


def layout(*owned: Owned, user: Role | None = None) -> Layout:
    user = user or Role("coder", True, False, True, None)
    return Layout("coder", "coder", user.name, "postgres", (user,), owned)


def test_objects_of_the_superuser_get_alter_owner_statements() -> None:
    """REASSIGN OWNED cannot move the bootstrap superuser's objects: each named one gets its ALTER."""
    from coderctl.context import App
    from coderctl.profile import load_settings

    objects = tuple(("TABLE", f"public.t{i}") for i in range(5))
    user = Role("coder", True, False, True, None)
    found, _, data = assess(Layout("coder", "coder", "coder", "postgres", (user,),
                                   (Owned("postgres", True, 7, objects),)), App(settings=load_settings(environ={})))
    assert [p.code for p in found] == ["DB-OBJECTS-OWNED-ELSEWHERE"]
    assert found[0].fix[1:6] == tuple(f"ALTER TABLE public.t{i} OWNER TO coder;" for i in range(5))
    assert "and the same for the other 2 objects owned by postgres" in found[0].fix[-1]
    assert "and 2 more" in found[0].message and data["owned_elsewhere"] == {"postgres": 7}


# -- backup restore on the alternate layout ---------------------------------------------------------------------


@pytest.fixture
def altlab(rotlab: RotLab) -> Iterator[tuple[RotLab, str]]:  # noqa: F811
    """The rotation lab pointed (through Infisical, the source of truth) at a copy of the coder database, which
    the restore may replace; dropped before the rotation lab drops the login roles."""
    with copy_of_coder(rotlab.lab) as db:
        url = rotlab.infisical.get_secret("CODER_DATABASE_URL").replace("/coder?", f"/{db}?")
        rotlab.infisical.set_secret("CODER_DATABASE_URL", url)
        settle(rotlab.lab, rotlab.operator)
        yield rotlab, db


def acts_as(rot: RotLab) -> tuple[str, str]:
    url = DatabaseURL.parse(rot.url_now())
    pg = rot.lab.postgres
    with psycopg.connect(host=pg.host, port=pg.port, user=url.user, password=url.password, dbname=url.database,
                         connect_timeout=5) as conn:
        row = conn.execute("SELECT session_user, current_user").fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def restore(rot: RotLab, file: str, out: Path) -> dict[str, Any]:
    r = rot.cli("backup", "restore", file, "--yes", "--output-dir", str(out))
    assert r.code == 0, r.output
    return dict(json.loads(r.stdout))


@pytest.mark.timeout(240)  # a rotation, a backup, a restore and a verify, each its own process
def test_restore_after_an_alternate_rotation(altlab: tuple[RotLab, str], tmp_path: Path) -> None:
    rot, db = altlab
    rotated = rot.rotate("--strategy", "alternate")
    assert rotated.code == 0, rotated.output
    assert acts_as(rot) == ("coder_a", "coder")
    made = rot.cli("backup", "create", "--via", "exec", "--output-dir", str(tmp_path / "b"))
    assert made.code == 0, made.output
    doc = restore(rot, json.loads(made.stdout)["result"]["file"], tmp_path / "s")
    assert {s["name"]: s for s in doc["steps"]}["restore"]["detail"].endswith("acting as coder")
    assert owners(rot.lab, db) == {"coder"}
    assert acts_as(rot) == ("coder_a", "coder")
    verify = rot.cli("verify", "--access-url", rot.lab.access_url, *rot.lab.net_args())
    assert verify.code == 0, verify.output
    roles = next(c for c in json.loads(verify.stdout)["checks"] if c["id"] == "database.roles")
    assert roles["status"] == "ok" and roles["detail"].startswith("coder_a acts as coder"), roles
    rot.assert_no_leaks()


@pytest.mark.timeout(240)  # a rotation, a backup, a restore and a verify, each its own process
def test_restore_leaves_out_owners_from_a_broken_layout(altlab: tuple[RotLab, str], tmp_path: Path) -> None:
    """While coder_a did not act as coder, a table it made is owned by it, and so is it in a backup taken then.
    Once the layout is mended (the check's fixes), that backup restores, as coder, with every object owned by
    coder: the archive's `ALTER ... OWNER TO coder_a` would fail there (coder is no member of coder_a)."""
    rot, db = altlab
    rotated = rot.rotate("--strategy", "alternate")
    assert rotated.code == 0, rotated.output
    admin(rot.lab, "ALTER ROLE coder_a RESET role", db)
    admin(rot.lab, "SET ROLE coder_a; CREATE TABLE public.stray (id int); INSERT INTO public.stray VALUES (1)", db)
    verify = rot.cli("verify", "--only", "database")
    roles = next(c for c in json.loads(verify.stdout)["checks"] if c["id"] == "database.roles")
    assert roles["status"] == "fail" and "TABLE public.stray" in roles["detail"], roles
    assert {p["code"] for p in roles["problems"]} == {"DB-ROLE-NOT-OWNER", "DB-OBJECTS-OWNED-ELSEWHERE"}
    made = rot.cli("backup", "create", "--via", "exec", "--output-dir", str(tmp_path / "b"))
    assert made.code == 0, made.output
    fixes = roles["remediation"].splitlines()
    for statement in ("ALTER ROLE coder_a SET role = 'coder';", "REASSIGN OWNED BY coder_a TO coder;"):
        assert statement in fixes
        admin(rot.lab, statement, db)
    restore(rot, json.loads(made.stdout)["result"]["file"], tmp_path / "s")
    assert owners(rot.lab, db) == {"coder"}
    assert admin(rot.lab, "SELECT count(*) FROM public.stray", db) == [(1,)]
    assert acts_as(rot) == ("coder_a", "coder")
    rot.assert_no_leaks()
