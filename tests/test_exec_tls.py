"""exec with a large stdin (the threaded client) opens its stream over TLS 1.2 (tls12 in clients/kube_exec.py
says why), and still works with an API server that requires TLS 1.3; with a small stdin (read on the caller's
thread, clients/kube_exec_inline.py) it takes whatever the server offers, in one handshake."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from lab.kubeapi import FakeKubeAPI

from coderctl.clients import kube_exec
from coderctl.clients.kube import KubeClient

POD = "coder-coder-postgresql-0"


def _run_echo(api: FakeKubeAPI, tmp_path: Path, stdin_size: int) -> tuple[bytes, int]:
    """`echo hello` in a pod after reading `stdin_size` bytes of stdin; its output and how many TLS handshakes
    opening the stream took."""
    api.kubeconfig_path = api.write_kubeconfig(tmp_path / "kubeconfig")
    kube = KubeClient(str(api.kubeconfig_path), None, 5)
    attempts = 0
    real_context = kube.ssl_context

    def context() -> ssl.SSLContext | None:
        nonlocal attempts
        attempts += 1
        return real_context()

    kube.ssl_context = context  # type: ignore[method-assign]
    out = bytearray()
    result = kube_exec.exec_stream(kube, "coder", POD, ["sh", "-c", "cat >/dev/null; echo hello"],
                                   container="postgresql", stdout=out.extend, stdin=[b"x" * stdin_size])
    assert result.ok, result
    return bytes(out), attempts


@pytest.mark.parametrize("stdin_size", [10, kube_exec.SMALL_STDIN + 1], ids=["inline", "threaded"])
@pytest.mark.parametrize("minimum", [None, ssl.TLSVersion.TLSv1_3], ids=["any", "tls13-only"])
def test_exec_opens_whatever_the_servers_minimum(minimum: ssl.TLSVersion | None, stdin_size: int,
                                                 tmp_path: Path) -> None:
    api = FakeKubeAPI.reference(tls=trustme.CA())
    api.tls_minimum_version = minimum
    with api:
        out, attempts = _run_echo(api, tmp_path, stdin_size)
    assert out == b"hello\n"
    threaded = stdin_size > kube_exec.SMALL_STDIN
    assert attempts == (2 if threaded and minimum is not None else 1)  # threaded: refused at 1.2, then 1.3
