"""Servers that accept and never answer (an API server behind a dead proxy, a nameserver behind a firewall
that drops): a read-only run ends in about one --timeout, because what a check needs first is asked at
once, not one timeout after another."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from clirun import run_cli
from probeargs import by_id

ACCESS = "https://coder.example.test"
TIMEOUT = 2.0
ALONE = ("dns.access-host", "dns.wildcard", "dns.ownership")
"""Left out so that dns.consistency runs alone: with them, their lookups would warm its cache."""


@contextmanager
def _api_server(tmp_path: Path, scheme: str, on_connection: Callable[[socket.socket, threading.Event], None]
                ) -> Iterator[Path]:
    """A loopback server that hands every connection to `on_connection` (with the stop event); yields a
    kubeconfig naming it. Connections are closed at the end."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn = server.accept()[0]
            except OSError:
                continue
            held.append(conn)
            on_connection(conn, stop)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: s, cluster: {{server: "{scheme}://127.0.0.1:{server.getsockname()[1]}"}}}}]
users: [{{name: u, user: {{token: not-a-real-token}}}}]
contexts: [{{name: s, context: {{cluster: s, user: u, namespace: coder}}}}]
current-context: s
""")
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


@pytest.fixture
def silent_api(tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig whose API server accepts connections and never says a word."""
    with _api_server(tmp_path, "https", lambda conn, stop: None) as path:
        yield path


def test_dns_consistency_costs_one_timeout_not_three(silent_api: Path) -> None:
    """It needs the wildcard (from the silent API), the zone's authoritative servers (from the silent
    nameserver) and the nameserver's answer: one after the other that is three timeouts."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent_dns:
        silent_dns.bind(("127.0.0.1", 0))
        nameserver = f"127.0.0.1:{silent_dns.getsockname()[1]}"
        r = run_cli("--kubeconfig", str(silent_api), "--timeout", str(TIMEOUT), "-o", "json", "verify", "--only", "dns",
                    *(a for c in ALONE for a in ("--skip", c)), "--access-url", ACCESS, "--nameserver", nameserver)
    doc = json.loads(r.stdout)
    check = by_id(doc)["dns.consistency"]
    assert check["status"] == "error" and r.code == 1, check
    assert check["duration_s"] < 2 * TIMEOUT, check["detail"]  # one after the other: 3 x TIMEOUT


@pytest.fixture
def trickling_api(tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig whose API server answers every request one byte at a time, a byte every 0.2 s, forever:
    each socket read succeeds, so only a bound on the whole answer ends the wait."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"z" * 100_000

    def drip(conn: socket.socket, stop: threading.Event) -> None:
        for byte in head:
            if stop.wait(0.2):
                return
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                return

    with _api_server(tmp_path, "http",
                     lambda conn, stop: threading.Thread(target=drip, args=(conn, stop), daemon=True).start()
                     ) as path:
        yield path


def test_a_trickling_api_cannot_hold_a_command_that_has_no_check_deadline(trickling_api: Path) -> None:
    """config show --discover reads the cluster outside the check runner; every read is bounded as a whole."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "coderctl", "--kubeconfig", str(trickling_api), "--timeout", "1",
                           "-o", "json", "config", "show", "--discover"],
                          capture_output=True, text=True, timeout=60, check=False)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert doc["values"]["access_url"]["value"] is None
    assert any("no complete answer in 2s" in p for p in doc["problems"]), doc["problems"]
