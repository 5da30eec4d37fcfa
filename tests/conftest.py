"""Test configuration: the lab's fixtures, and isolation from the operator's own environment."""

from __future__ import annotations

import os

import pytest

from lab.coder import fake_coder  # noqa: F401
from lab.dns import lab_dns, make_dns  # noqa: F401
from lab.nginx import lab_ingress_cert, lab_nginx, make_nginx  # noqa: F401
from lab.postgres import lab_postgres  # noqa: F401
from lab.tls import lab_ca  # noqa: F401

try:  # TEMPORARY while the fake API is being written
    from lab.deployment import lab, lab_ingress  # noqa: F401
except ImportError:
    pass


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may read the operator's kubeconfig or coderctl configuration, or reach the built-in defaults."""
    home = tmp_path_factory.mktemp("home")
    for var in list(os.environ):
        if var.startswith(("CODERCTL_", "INFISICAL_")) or var in ("KUBECONFIG", "NO_COLOR", "CODER_SESSION_TOKEN"):
            if var != "CODERCTL_LAB_KUBECONFIG":
                monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.chdir(home)
