"""The pure parts of rotate-secrets: generated passwords, the URL with only its password replaced, the
restart patch, the operator's annotation key, and the order of the steps."""

from __future__ import annotations

import math
from urllib.parse import quote

from coderctl.clients.postgres import DatabaseURL
from coderctl.clients.scram import saslprep
from coderctl.ops.rotate_steps import actions
from coderctl.ops.rotate_world import (
    PASSWORD_ALPHABET,
    managed_annotation_key,
    new_password,
    restart_patch,
)


def test_passwords_have_256_bits_and_need_no_saslprep_or_encoding() -> None:
    seen = {new_password() for _ in range(200)}
    assert len(seen) == 200
    for password in seen:
        assert len(password) * math.log2(len(PASSWORD_ALPHABET)) >= 256
        assert set(password) <= set(PASSWORD_ALPHABET)
        assert saslprep(password) == password.encode()
        assert quote(password, safe="") == password


def test_the_new_url_is_the_old_one_with_only_the_password_replaced() -> None:
    old = "postgresql://coder:a%2Fb%40c@coder-coder-postgresql:5432/coder?sslmode=disable&application_name=x"
    password = new_password()
    new = DatabaseURL.parse(old).with_password(password)
    assert new == f"postgresql://coder:{password}@coder-coder-postgresql:5432/coder?sslmode=disable&application_name=x"
    assert DatabaseURL.parse(new).password == password


def test_the_restart_patch_is_kubectls() -> None:
    patch = restart_patch()
    stamp = patch["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    assert len(stamp) == 20 and stamp.endswith("Z") and stamp[10] == "T"


def test_the_operators_annotation_key() -> None:
    assert managed_annotation_key("coder-database-secrets") == \
        "secrets.infisical.com/managed-secret.coder-database-secrets"
    long = managed_annotation_key("x" * 80)
    assert len(long.split("/", 1)[1]) <= 63


def _state(target: str, auto: bool) -> dict[str, object]:
    return {"target": target, "auto_reload": auto, "infisical": {"environment": "prod", "path": "/"},
            "secret": "s", "deployment": "coder", "user_role": "coder", "postgres_pod": "pg-0"}


def test_step_order() -> None:
    names = [a.name for a in actions(_state("user", False))]
    assert names == ["preflight", "write CODER_DATABASE_URL", "write CODER_USER_PASSWORD", "wait for sync",
                     "alter role user", "restart coder", "verify"]
    names = [a.name for a in actions(_state("user", True))]
    assert names.index("alter role user") < names.index("write CODER_DATABASE_URL"), \
        "with auto-reload no pod may start before the role has its new password"
    admin = [a.name for a in actions(_state("admin", False))]
    assert admin == ["preflight", "write CODER_POSTGRES_ADMIN_PASSWORD", "wait for sync", "alter role admin",
                     "verify"]
    admin_auto = [a.name for a in actions(_state("admin", True))]
    assert admin_auto.index("write CODER_POSTGRES_ADMIN_PASSWORD") < admin_auto.index("alter role admin")
