"""Test configuration: the lab's fixtures, and isolation from the operator's own environment."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may read the operator's kubeconfig or coderctl configuration, or reach the built-in defaults."""
    home = tmp_path_factory.mktemp("home")
    for var in list(os.environ):
        if var.startswith(("CODERCTL_", "INFISICAL_")) or var in ("KUBECONFIG", "NO_COLOR", "CODER_SESSION_TOKEN"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.chdir(home)
