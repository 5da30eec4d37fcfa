"""Text from servers cannot drive the operator's terminal: every text renderer escapes control characters
and bidi overrides, whatever field they arrive in, and a hostile HTTPS server's reason phrase, `Server`
header and version string reach `probe http`'s text output escaped, never raw."""

from __future__ import annotations

import io
import json
import re
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lab.nginx import ACCESS_HOST
from lab.tls import LabCA
from probeargs import WILDCARD

from clirun import run_cli
from coderctl import render
from coderctl.checks.base import CheckResult, Status
from coderctl.doctor.model import Finding
from coderctl.facts.text import terminal_safe
from coderctl.problems import Problem, Severity

HOSTILE = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x1b]0;owned\x07\u202etxt.exe\x9b31m\x7f\x00"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _raw(text: str) -> list[str]:
    return sorted(set(RAW.findall(text)))


@given(st.text())
def test_nothing_unsafe_survives(text: str) -> None:
    assert not RAW.search(terminal_safe(text))


def test_newlines_and_tabs_stay_and_the_rest_is_shown_escaped() -> None:
    assert terminal_safe("a\tb\nc") == "a\tb\nc"
    assert terminal_safe("\x1b[2J\u202e") == "\\x1b[2J\\u202e"
    assert terminal_safe("bad \udcff byte") == "bad \\udcff byte"


def _result() -> CheckResult:
    problem = Problem("HOSTILE01", Severity.FAIL, f"message {HOSTILE}", evidence=(f"evidence {HOSTILE}",),
                      fix=(f"fix {HOSTILE}",))
    return CheckResult("http.healthz", "network", "t", Status.FAIL, f"detail {HOSTILE}\nsecond {HOSTILE}",
                       problems=[problem])


@pytest.mark.parametrize("color", [False, True])
def test_every_renderer_escapes(color: bool) -> None:
    out = io.StringIO()
    plain = CheckResult("http.buildinfo", "network", "t", Status.WARN, f"detail {HOSTILE}",
                        remediation=f"remedy {HOSTILE}")
    render.print_results("verify", [_result(), plain], 1.0, color=color, verbose=1, stream=out)
    render.print_steps([{"name": "restore", "status": "failed", "detail": f"step {HOSTILE}"}], color=color,
                       summary=[f"summary {HOSTILE}"], stream=out)
    render.print_table(["A"], [[f"cell {HOSTILE}"]], color=color, stream=out)
    finding = Finding("HOSTILE01", f"title {HOSTILE}", "fail", evidence=[f"ev {HOSTILE}"], fix=[f"fix {HOSTILE}"],
                      chain=f"chain {HOSTILE}")
    render.print_findings([finding], [_result()], 1.0, color=color, verbose=1, stream=out)
    text = out.getvalue()
    assert _raw(text) == []
    assert text.count("\\x1b]52;c;") >= 10  # every field was printed, escaped


def test_say_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    render.say(f"out {HOSTILE}")
    render.say(f"err {HOSTILE}", err=True)
    captured = capsys.readouterr()
    assert _raw(captured.out + captured.err) == []
    assert "\\x1b]0;owned" in captured.out and "\\x1b]0;owned" in captured.err


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        path = self.path.partition("?")[0]
        body = json.dumps({"version": f"v2.25.0{HOSTILE}"}).encode() if path == "/api/v2/buildinfo" else b"no"
        self.send_response(200 if path == "/api/v2/buildinfo" else 503, f"Unavailable {HOSTILE[:24]}")
        self.send_header("Server", f"nginx {HOSTILE[:24]}")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def hostile_server(lab_ca: LabCA) -> Iterator[int]:
    cert, key = lab_ca.issue([ACCESS_HOST, WILDCARD], name="hostile")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_probe_http_shows_a_hostile_servers_text_escaped(hostile_server: int, lab_ca: LabCA) -> None:
    port = hostile_server
    r = run_cli("-v", "probe", "http", "--access-url", f"https://{ACCESS_HOST}:{port}",
                "--resolve", f"{ACCESS_HOST}:{port}:127.0.0.1", "--resolve", f"{WILDCARD}:{port}:127.0.0.1",
                "--ca-file", str(lab_ca.ca_file), "--wildcard-url", WILDCARD,
                env={"NO_COLOR": "1", "CODERCTL_EXPECTED_CODER_VERSION": "v2.25.0"})
    assert r.code == 1, r.output
    assert _raw(r.stdout + r.stderr) == [], r.output
    assert "\\x1b]52;c;" in r.stdout, r.output  # the server's text did reach the output, escaped
