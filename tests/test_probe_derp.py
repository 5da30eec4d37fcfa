"""`coderctl probe derp` and `probe websocket` against the real nginx in front of the fake Coder relay."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from clirun import run_cli
from lab.coder import DEFAULT_SESSION_TOKEN, FakeCoder
from lab.nginx import LabNginx
from lab.tcpproxy import pipe
from lab.tls import LabCA
from probeargs import assert_coded, by_id, codes, network_args, run_json, statuses

MakeNginx = Callable[..., LabNginx]
DERP_CHECKS = ["derp.relay", "derp.upgrade", "derp.websocket", "derp.login", "derp.keys",
               "derp.latency-check", "derp.hold", "derp.verdict"]


def test_healthy_relay_passes_every_derp_check(
    lab_nginx: LabNginx, lab_ca: LabCA, fake_coder: FakeCoder
) -> None:
    r, doc = run_json("probe", "derp", "--hold", "1", "--count", "3", *network_args(lab_nginx, lab_ca))
    assert r.code == 0, r.output
    assert doc["command"] == "probe derp"
    assert list(statuses(doc)) == DERP_CHECKS
    assert set(statuses(doc).values()) == {"ok"}, r.stdout
    assert all(c["problems"] == [] for c in doc["checks"])
    checks = by_id(doc)
    assert checks["derp.upgrade"]["data"]["server_key"] == fake_coder.public_key_hex
    assert checks["derp.websocket"]["data"]["server_key"] == fake_coder.public_key_hex
    assert checks["derp.keys"]["data"] == {"transport": "derp", "connections": 3,
                                           "keys": [fake_coder.public_key_hex], "failed": 0}
    assert checks["derp.login"]["data"]["server_info"] == {"version": 2}
    assert len(checks["derp.latency-check"]["data"]["samples_ms"]) == 3
    assert checks["derp.verdict"]["detail"].startswith("both transports work")
    assert fake_coder.counters.derp_logins >= 2 and fake_coder.counters.pings >= 2
    assert fake_coder.client_infos[0]["isProber"] is True


def test_nginx_not_passing_upgrade(make_nginx: MakeNginx, lab_ca: LabCA, fake_coder: FakeCoder) -> None:
    nginx = make_nginx(fake_coder.port, variant="no-upgrade")
    r, doc = run_json("probe", "derp", *network_args(nginx, lab_ca))
    assert r.code == 1
    status = statuses(doc)
    assert status["derp.relay"] == "ok"  # the relay is there: GET /derp reaches it
    assert status["derp.upgrade"] == status["derp.websocket"] == status["derp.verdict"] == "fail"
    checks = by_id(doc)
    assert "426 Upgrade Required (Coder v2.25.0+abcdef1, Server nginx" in checks["derp.upgrade"]["detail"]
    assert "drops `Upgrade: DERP`" in checks["derp.upgrade"]["detail"]
    assert "drops the Upgrade header" in checks["derp.verdict"]["remediation"]
    verdict = checks["derp.verdict"]["data"]["steps"]
    assert set(verdict) == {"GET /derp", "Upgrade: DERP", "DERP over WebSocket"}
    assert_coded(doc)
    assert codes(checks["derp.upgrade"]) == ["DERP-UPGRADE-BLOCKED"]
    assert codes(checks["derp.websocket"]) == ["DERP-WEBSOCKET-BLOCKED"]
    assert codes(checks["derp.verdict"]) == ["DERP-UPGRADE-DROPPED"]
    upgrade = checks["derp.upgrade"]["problems"][0]
    assert "GET (Upgrade: DERP) https://coder.xuperson.org" in upgrade["evidence"][0]
    assert "server: nginx" in upgrade["evidence"] and "x-coder-build-version: v2.25.0+abcdef1" in upgrade["evidence"]
    assert any("CODER_DERP_FORCE_WEBSOCKETS" in f for f in upgrade["fix"])
    r, doc = run_json("probe", "websocket", *network_args(nginx, lab_ca))
    assert r.code == 1 and statuses(doc) == {"ws.upgrade": "fail"}
    assert "EWS01" in doc["checks"][0]["detail"]
    assert codes(doc["checks"][0]) == ["WS-UPGRADE-REFUSED"]
    assert doc["checks"][0]["problems"][0]["coder_code"] == "EWS01"
    assert fake_coder.derp_connections == fake_coder.derp_websocket_connections == 0


def test_websocket_only_proxy_warns_with_the_force_websockets_fix(
    make_nginx: MakeNginx, lab_ca: LabCA, fake_coder: FakeCoder
) -> None:
    nginx = make_nginx(fake_coder.port, variant="websocket-only")
    r, doc = run_json("probe", "derp", *network_args(nginx, lab_ca))
    status = statuses(doc)
    assert status["derp.upgrade"] == "fail" and status["derp.websocket"] == "ok"
    assert status["derp.login"] == status["derp.keys"] == "ok"
    assert status["derp.verdict"] == "warn"
    verdict = by_id(doc)["derp.verdict"]
    assert "EDERP01" in verdict["detail"] and "CODER_DERP_FORCE_WEBSOCKETS=true" in verdict["remediation"]
    assert_coded(doc)
    assert codes(by_id(doc)["derp.upgrade"]) == ["DERP-UPGRADE-BLOCKED"]
    [problem] = verdict["problems"]
    assert problem["code"] == "DERP-WEBSOCKET-ONLY" and problem["severity"] == "warn"
    assert problem["coder_code"] == "EDERP01"
    get, raw, ws = problem["evidence"]
    assert get.startswith("GET /derp: 426") and raw.startswith("Upgrade: DERP: ")
    assert ws.startswith("DERP over WebSocket: 101, ServerKey")
    assert any('CODER_DERP_FORCE_WEBSOCKETS: "true"' in f for f in problem["fix"])
    assert by_id(doc)["derp.login"]["data"]["transport"] == "websocket"
    r, doc = run_json("probe", "websocket", *network_args(nginx, lab_ca))
    assert r.code == 0 and statuses(doc) == {"ws.upgrade": "ok"}


def test_proxy_read_timeout_cuts_the_hold(
    make_nginx: MakeNginx, lab_ca: LabCA, fake_coder: FakeCoder
) -> None:
    nginx = make_nginx(fake_coder.port, read_timeout=3)
    start = time.monotonic()
    r, doc = run_json("probe", "derp", "--hold", "5", *network_args(nginx, lab_ca))
    assert time.monotonic() - start < 5 + 2
    hold = by_id(doc)["derp.hold"]
    assert hold["status"] == "fail", hold
    assert 2.5 <= hold["data"]["closed_after_s"] <= 4
    seconds = float(re.search(r"closed after ([\d.]+) s idle", hold["detail"]).group(1))  # type: ignore[union-attr]
    assert 2.5 <= seconds <= 4
    assert "proxy-read-timeout" in hold["remediation"]
    assert statuses(doc)["derp.verdict"] == "ok"
    assert_coded(doc)
    [problem] = hold["problems"]
    assert problem["code"] == "DERP-IDLE-CLOSED"
    assert any(e.startswith("idle: closed after") for e in problem["evidence"])
    assert any("Ingress coder/coder" in f and 'proxy-send-timeout: "3600"' in f for f in problem["fix"])


def test_authenticated_websocket_echo(lab_nginx: LabNginx, lab_ca: LabCA, fake_coder: FakeCoder) -> None:
    r, doc = run_json("probe", "websocket", *network_args(lab_nginx, lab_ca),
                      env={"CODER_SESSION_TOKEN": DEFAULT_SESSION_TOKEN})
    assert r.code == 0, r.output
    check = doc["checks"][0]
    assert check["detail"].startswith("authenticated echo") and check["data"]["authenticated"] is True
    assert fake_coder.counters.echo_messages == 1
    assert DEFAULT_SESSION_TOKEN not in r.output


def test_rejected_session_token_is_named_not_shown(lab_nginx: LabNginx, lab_ca: LabCA) -> None:
    token = "AbCdEf0123-WrongWrongWrongWrong99"
    r = run_cli("probe", "websocket", *network_args(lab_nginx, lab_ca), env={"CODER_SESSION_TOKEN": token})
    assert r.code == 1
    assert "401" in r.stdout and "CODER_SESSION_TOKEN was not accepted" in r.stdout
    assert token not in r.output
    r, doc = run_json("probe", "websocket", *network_args(lab_nginx, lab_ca), env={"CODER_SESSION_TOKEN": token})
    assert codes(doc["checks"][0]) == ["WS-TOKEN-REJECTED"] and token not in r.output


class RoundRobin:
    """A TCP proxy handing each new connection to the next upstream: two relays behind one name."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.turn = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.ports[self.turn % len(self.ports)]))
            self.turn += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()


@pytest.fixture
def two_relays() -> Iterator[tuple[FakeCoder, FakeCoder, RoundRobin]]:
    with FakeCoder() as one, FakeCoder() as two:
        proxy = RoundRobin([one.port, two.port])
        yield one, two, proxy
        proxy.server.close()


def test_different_keys_behind_one_name_warn(two_relays: tuple[FakeCoder, FakeCoder, RoundRobin]) -> None:
    one, two, proxy = two_relays
    args = ["--access-url", f"http://coder.xuperson.org:{proxy.port}", "--resolve",
            f"coder.xuperson.org:{proxy.port}:127.0.0.1"]
    r, doc = run_json("probe", "derp", "--count", "4", *args)
    keys = by_id(doc)["derp.keys"]
    assert keys["status"] == "warn", keys
    assert sorted(keys["data"]["keys"]) == sorted([one.public_key_hex, two.public_key_hex])
    assert "several relays behind one name" in keys["detail"]
    assert codes(keys) == ["DERP-KEYS-DIFFER"]
    evidence = keys["problems"][0]["evidence"]
    for relay in (one, two):
        assert any(e.startswith(f"key {relay.public_key_hex}: ") for e in evidence), evidence


def test_hanging_server_ends_within_the_timeout(
    lab_nginx: LabNginx, lab_ca: LabCA, fake_coder: FakeCoder, lab_dns: object
) -> None:
    fake_coder.mode = "hang"
    start = time.monotonic()
    r, doc = run_json("--timeout", "2", "verify", "--only", "network", "--only", "dns",
                      *network_args(lab_nginx, lab_ca, lab_dns))  # type: ignore[arg-type]
    elapsed = time.monotonic() - start
    assert r.code == 1
    assert elapsed < 2 + 2, elapsed
    status = statuses(doc)
    assert status["http.healthz"] == status["derp.upgrade"] == status["derp.verdict"] == "fail"
    assert "timed out" in by_id(doc)["http.healthz"]["detail"]
    assert_coded(doc)
    checks = by_id(doc)
    assert codes(checks["http.healthz"]) == ["HTTP-HEALTHZ-UNREACHABLE"]
    assert checks["http.healthz"]["problems"][0]["coder_code"] == "EACS03"
    assert codes(checks["derp.upgrade"]) == ["DERP-UPGRADE-FAILED"]
    assert codes(checks["derp.verdict"]) == ["DERP-UNREACHABLE"]
    assert status["dns.access-host"] == "ok" and status["tls.access-url"] == "ok"
    assert "error" not in status.values(), status
    print(f"hang: run {doc['duration_s']:.2f}s wall {elapsed:.2f}s with --timeout 2")
