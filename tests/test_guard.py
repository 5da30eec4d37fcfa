"""The suite's loopback guard holds in the Python subprocesses it starts (coderctl runs as `sys.executable -m
coderctl`): a test that forgot an option pointing at the lab fails instead of reaching the real deployment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ATTEMPTS = {
    "tcp": "socket.create_connection(('192.0.2.1', 443), timeout=2)",
    "udp": "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 53))",
    "name": "socket.getaddrinfo('coder.example.com', 443)",
}


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", f"import socket\n{code}"], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ))


@pytest.mark.parametrize("attempt", sorted(ATTEMPTS))
def test_a_subprocess_cannot_leave_the_machine(attempt: str) -> None:
    proc = _python(ATTEMPTS[attempt])
    assert proc.returncode != 0 and "test guard" in proc.stderr, proc.stderr


def test_a_subprocess_reaches_loopback() -> None:
    proc = _python("s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
                   "socket.create_connection(s.getsockname(), timeout=2).close()\n"
                   "socket.getaddrinfo('localhost', 80)")
    assert proc.returncode == 0, proc.stderr

