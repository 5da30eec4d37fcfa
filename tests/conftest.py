"""Test configuration: the lab's fixtures, and isolation from the operator's own environment."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from guard.loopback_guard import lab_only_getaddrinfo
from lab.coder import fake_coder  # noqa: F401
from lab.dns import lab_dns, make_dns  # noqa: F401
from lab.nginx import lab_ingress_cert, lab_nginx, make_nginx  # noqa: F401
from lab.postgres import lab_postgres  # noqa: F401
from lab.tls import lab_ca  # noqa: F401

from lab.deployment import lab, lab_ingress  # noqa: F401

GUARD = Path(__file__).parent / "guard"


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may read the operator's kubeconfig or coderctl configuration, or reach the built-in defaults."""
    home = tmp_path_factory.mktemp("home")
    for var in list(os.environ):
        ours = var.startswith(("CODERCTL_", "INFISICAL_")) or var in ("KUBECONFIG", "NO_COLOR", "CODER_SESSION_TOKEN")
        if ours and var != "CODERCTL_LAB_KUBECONFIG":
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.chdir(home)


@pytest.fixture(autouse=True)
def _no_system_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process name lookups are refused (pytest-socket guards connections); Python subprocesses get
    both guards from tests/guard/sitecustomize.py."""
    monkeypatch.setattr(socket, "getaddrinfo", lab_only_getaddrinfo)
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(GUARD), *([path] if path else [])]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("CODERCTL_LAB_KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="needs the fake Kubernetes API's tricks (exec faults, scripted logs, RBAC)")
    for item in items:
        if "fake_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _stacks_when_an_exec_cannot_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exec whose stream does not open in time, when coderctl runs in this process beside the lab's
    servers, prints every thread's stack (to the test's captured stderr): where the fake API server was."""
    import faulthandler
    import sys

    from coderctl.clients import kube_exec
    from coderctl.clients.kube import KubeUnreachable
    from coderctl.database import pod

    real = kube_exec.exec_stream

    def exec_stream(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return real(*args, **kwargs)
        except KubeUnreachable as exc:
            # only a stream that does not open in time: refused or closed is a stopped API server, on purpose or
            # after its test (a check thread the run's deadline left behind)
            if "cannot open the stream" in str(exc) and "timed out" in str(exc):
                out = sys.__stderr__  # a real descriptor: run_cli swaps sys.stderr for a StringIO
                print(f"exec could not open: {exc}; every thread's stack follows", file=out, flush=True)
                faulthandler.dump_traceback(file=out, all_threads=True)
            raise

    monkeypatch.setattr(kube_exec, "exec_stream", exec_stream)
    monkeypatch.setattr(pod, "exec_stream", exec_stream)
