"""The in-pod SQL runner: SQL and passwords on stdin (never in the exec argv), credentials from the pod's
password files, the managed Secret's current value or the environment, in that order."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from backup_support import POD
from lab.deployment import Lab, bitnami_pod_env

from coderctl import database
from coderctl.clients import scram
from coderctl.clients.postgres import DatabaseURL
from coderctl.context import App
from coderctl.database import pod
from coderctl.profile import load_settings
from coderctl.redact import Redactor


def make_app(lab: Lab) -> App:
    return App(settings=load_settings(flags={"kubeconfig": str(lab.kubeconfig), "timeout": 3}, environ={}),
               redact=Redactor())


def argv_text(lab: Lab) -> str:
    return json.dumps([entry["command"] for entry in lab.kube.exec_log])


def url_of(lab: Lab) -> DatabaseURL:
    return DatabaseURL.parse(lab.values["DATABASE_URL"])


def set_secret(lab: Lab, key: str, value: str) -> None:
    lab.kube.patch("Secret", "coder", "coder-database-secrets",
                   {"data": {key: base64.b64encode(value.encode()).decode()}})


@pytest.fixture
def role(lab: Lab) -> Iterator[str]:
    name = f"runner_{secrets.token_hex(4)}"
    yield name
    with lab.postgres.connect("postgres", "postgres", autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_a_verifier_set_through_the_pod_never_reaches_argv(lab: Lab, role: str) -> None:
    """CREATE/ALTER ROLE as the admin in the pod: the SQL (with the verifier) and every password stay off
    the exec command line, and the role then logs in with the new password."""
    app = make_app(lab)
    t = pod.target(app, url_of(lab), user="postgres", database="postgres")
    password = f"N3w/{secrets.token_hex(6)}?#@ é'\""
    verifier = scram.verifier(password)
    sql = f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{verifier}'; SELECT 'created', current_user"
    assert pod.query(app, t, sql) == [["created", "postgres"]]
    with psycopg.connect(host=lab.postgres.host, port=lab.postgres.port, user=role, password=password,
                         dbname="postgres", connect_timeout=5) as conn:
        assert conn.execute("select current_user").fetchone() == (role,)
    argv = argv_text(lab)
    for secret in [verifier, "CREATE ROLE", password, *lab.secret_values()]:
        assert secret not in argv
    assert lab.kube.exec_log[-1]["exit_code"] == 0


def test_a_failed_query_names_the_error_without_secrets(lab: Lab) -> None:
    app = make_app(lab)
    t = pod.target(app, url_of(lab))
    with pytest.raises(pod.PodQueryFailed) as caught:
        pod.query(app, t, "SELECT * FROM no_such_table_here")
    assert 'relation "no_such_table_here" does not exist' in str(caught.value)
    assert str(caught.value).startswith("ERROR:")
    lab.assert_no_secrets(str(caught.value), argv_text(lab))


def test_the_login_check_sends_query_and_password_on_stdin(lab: Lab) -> None:
    app = make_app(lab)
    result = database.login(app, "exec")
    assert result.ok and result.max_connections == 100, result.error
    argv = argv_text(lab)
    assert "current_setting" not in argv and "pg_stat_activity" not in argv
    lab.assert_no_secrets(argv)


def test_the_login_check_tests_the_urls_password_only(lab: Lab) -> None:
    """The pod's own credentials must not make a wrong URL password look right."""
    wrong = url_of(lab).with_password("not-the-password")
    lab.kube.patch("Secret", "coder", "coder-database-secrets",
                   {"data": {"database-url": base64.b64encode(wrong.encode()).decode()}})
    result = database.login(make_app(lab), "exec")
    assert not result.ok
    assert "password authentication failed" in result.error
    lab.assert_no_secrets(result.error, argv_text(lab))


def _pod_env(lab: Lab, **changes: str) -> None:
    env = bitnami_pod_env(lab.postgres)
    env.update(changes)
    lab.kube.set_exec(*POD, env=env)


def _admin_user(app: App, lab: Lab) -> list[list[str]]:
    return pod.query(app, pod.target(app, url_of(lab), user="postgres", database="postgres"),
                     "SELECT current_user")


def test_a_stale_environment_falls_back_to_the_managed_secret(lab: Lab) -> None:
    """After a rotation the container's env keeps the old password until the pod restarts."""
    _pod_env(lab, POSTGRES_POSTGRES_PASSWORD="the-old-password")
    assert _admin_user(make_app(lab), lab) == [["postgres"]]
    lab.assert_no_secrets(argv_text(lab))


def test_the_password_file_comes_first_and_a_stale_one_is_passed_over(lab: Lab, tmp_path: Path) -> None:
    good, stale = tmp_path / "good", tmp_path / "stale"
    good.write_text(lab.postgres.admin_password + "\n")
    stale.write_text("an-old-password\n")
    set_secret(lab, "postgres-admin-password", "a-secret-not-yet-applied")
    _pod_env(lab, POSTGRES_POSTGRES_PASSWORD="the-old-password", POSTGRES_POSTGRES_PASSWORD_FILE=str(good))
    assert _admin_user(make_app(lab), lab) == [["postgres"]]
    set_secret(lab, "postgres-admin-password", lab.postgres.admin_password)
    _pod_env(lab, POSTGRES_POSTGRES_PASSWORD="the-old-password", POSTGRES_POSTGRES_PASSWORD_FILE=str(stale))
    assert _admin_user(make_app(lab), lab) == [["postgres"]]
    lab.assert_no_secrets(argv_text(lab))


def test_no_working_password_is_an_authentication_error(lab: Lab) -> None:
    set_secret(lab, "postgres-admin-password", "wrong-one")
    _pod_env(lab, POSTGRES_POSTGRES_PASSWORD="wrong-two")
    with pytest.raises(pod.PodQueryFailed) as caught:
        _admin_user(make_app(lab), lab)
    assert "password authentication failed" in str(caught.value)
    assert "wrong-one" not in str(caught.value) and "wrong-two" not in str(caught.value)
