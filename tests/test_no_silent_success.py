"""Never a success that checked nothing: a run in which a category's checks all skipped or errored exits 1
and says why; a check whose every source failed is an error; numeric options refuse nan, inf, negatives
and absurd values (exit 2)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from clirun import run_cli
from lab.dns import LabDNS
from probeargs import WILDCARD, by_id, codes, run_json

from coderctl.checks.base import CheckResult, Status
from coderctl.checks.runner import unchecked

ACCESS = "https://coder.xuperson.org"


@pytest.fixture
def dead_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose API server is a closed loopback port: every request is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "dead.yaml"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: dead, cluster: {{server: "https://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: not-a-real-token}}}}]
contexts: [{{name: dead, context: {{cluster: dead, user: u, namespace: coder}}}}]
current-context: dead
""")
    return path


COMMANDS = [("probe", "derp"), ("probe", "dns"), ("probe", "http"), ("probe", "websocket"),
            ("verify", "--only", "network"), ("verify", "--only", "dns")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("strict", [False, True], ids=["plain", "strict"])
def test_unreachable_api_without_access_url_is_not_healthy(dead_kubeconfig: Path, command: tuple[str, ...],
                                                           strict: bool) -> None:
    args = ["--kubeconfig", str(dead_kubeconfig), "--timeout", "2", *command, *(["--strict"] if strict else [])]
    r = run_cli(*args, env={"NO_COLOR": "1"})
    assert r.code == 1, r.output
    assert "0 ok" in r.stdout and "[skip]" in r.stdout
    [line] = [x for x in r.stderr.splitlines() if "nothing checked" in x]
    assert line.startswith("coderctl: nothing checked in ")
    assert "--access-url" in line and "cannot reach the Kubernetes API" in line and "connection refused" in line


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_json_names_what_was_not_checked(dead_kubeconfig: Path, command: tuple[str, ...]) -> None:
    r, doc = run_json("--kubeconfig", str(dead_kubeconfig), "--timeout", "2", *command)
    assert r.code == 1
    assert doc["summary"]["ok"] == 0 and doc["summary"]["skip"] == len(doc["checks"])
    [entry] = doc["unchecked"]
    assert entry["category"] == {c["category"] for c in doc["checks"]}.pop()
    assert sorted(entry["checks"]) == sorted(c["id"] for c in doc["checks"])
    assert entry["reason"].startswith("no --access-url given and it could not be discovered: cannot reach")


def test_a_healthy_run_has_no_unchecked_entry(lab_dns: LabDNS) -> None:
    r, doc = run_json("probe", "dns", "--wildcard-url", WILDCARD, "--access-url", ACCESS,
                      "--nameserver", lab_dns.nameserver)
    assert r.code == 0, r.output
    assert "unchecked" not in doc


def _result(cid: str, category: str, status: Status, detail: str = "") -> CheckResult:
    return CheckResult(id=cid, category=category, title=cid, status=status, detail=detail)


def test_the_rule_per_category() -> None:
    results = [
        _result("a.one", "network", Status.SKIP, "no --access-url given"),
        _result("a.two", "network", Status.SKIP, "no --access-url given"),
        _result("a.hold", "network", Status.SKIP, "off"),
        _result("d.one", "dns", Status.OK),
        _result("d.two", "dns", Status.SKIP, "off"),
        _result("c.one", "cluster", Status.ERROR, "timed out after 5s"),
        _result("s.one", "secrets", Status.FAIL, "missing"),
        _result("s.two", "secrets", Status.SKIP, "skipped: s.one fail"),
        _result("b.one", "database", Status.WARN, "near max_connections"),
    ]
    found = {u.category: u for u in unchecked(results)}
    assert set(found) == {"network", "cluster"}  # ok, warn and fail looked; skip and error did not
    assert found["network"].reason == "no --access-url given"  # the commonest reason
    assert found["network"].checks == ("a.one", "a.two", "a.hold")
    assert found["cluster"].reason == "timed out after 5s"  # no skip: the errors' reason
    assert unchecked([]) == []


def _silent_port(sock: socket.socket) -> str:
    sock.bind(("127.0.0.1", 0))
    return f"127.0.0.1:{sock.getsockname()[1]}"


def test_dns_consistency_with_only_silent_servers_is_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as one, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as two:  # bound, never answer
        servers = [_silent_port(one), _silent_port(two)]
        for chosen in (servers[:1], servers):
            args = [a for s in chosen for a in ("--nameserver", s)]
            r, doc = run_json("--timeout", "0.5", "probe", "dns", "--wildcard-url", WILDCARD,
                              "--access-url", ACCESS, *args)
            check = by_id(doc)["dns.consistency"]
            assert check["status"] == "error", check
            assert r.code == 1
            assert "DNS-NO-ANSWER" in codes(check) and "nothing to compare" in check["detail"]
            assert all("TIMEOUT" in e for e in check["problems"][0]["evidence"])


def test_dns_consistency_still_compares_when_one_server_answers(lab_dns: LabDNS) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        r, doc = run_json("--timeout", "0.5", "probe", "dns", "--wildcard-url", WILDCARD, "--access-url", ACCESS,
                          "--nameserver", lab_dns.nameserver, "--nameserver", _silent_port(silent))
    check = by_id(doc)["dns.consistency"]
    assert check["status"] == "warn" and set(codes(check)) == {"DNS-SERVERS-DISAGREE"}  # the silent one differs


BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e400", "-1", "1e308", "ten"]
NUMERIC_OPTIONS = [
    (lambda v: ["--timeout", v, "probe", "dns", "--access-url", ACCESS], "--timeout"),
    (lambda v: ["probe", "derp", "--access-url", ACCESS, "--hold", v], "--hold"),
    (lambda v: ["verify", "--deadline", v], "--deadline"),
    (lambda v: ["probe", "derp", "--access-url", ACCESS, "--count", v], "--count"),
]


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize(("build", "option"), NUMERIC_OPTIONS, ids=[o for _, o in NUMERIC_OPTIONS])
def test_numeric_options_refuse_nonsense(build, option: str, value: str) -> None:  # type: ignore[no-untyped-def]
    r = run_cli(*build(value))
    assert r.code == 2, (option, value, r.output)
    assert option in r.stderr and "Traceback" not in r.output
    assert "[ok]" not in r.stdout and "derp.hold" not in r.stdout


def test_zero_timeout_is_refused_and_a_small_one_accepted() -> None:
    assert run_cli("--timeout", "0", "probe", "dns", "--access-url", ACCESS).code == 2
    assert run_cli("--timeout", "0.5", "verify", "--list").code == 0
    assert run_cli("verify", "--deadline", "0.05", "--list").code == 2
