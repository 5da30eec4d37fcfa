"""`coderctl probe dns` against real Knot DNS servers on loopback (never the system resolver)."""

from __future__ import annotations

from collections.abc import Callable

from lab.dns import DEFAULT_TUNNEL_ID, LabDNS, reference_zones, tunnel_zone
from probeargs import WILDCARD, by_id, run_json, statuses

MakeDNS = Callable[[dict[str, str]], LabDNS]
TUNNEL = f"{DEFAULT_TUNNEL_ID}.cfargotunnel.com"
ACCESS = "https://coder.xuperson.org"


def dns_args(*servers: LabDNS, access_url: str = ACCESS) -> list[str]:
    args = ["probe", "dns", "--wildcard-url", WILDCARD, "--access-url", access_url]
    for server in servers:
        args += ["--nameserver", server.nameserver]
    return args


def test_healthy_zone(lab_dns: LabDNS) -> None:
    r, doc = run_json(*dns_args(lab_dns))
    assert r.code == 0, r.output
    assert doc["command"] == "probe dns"
    assert statuses(doc) == {"dns.access-host": "ok", "dns.wildcard": "ok", "dns.consistency": "ok",
                             "dns.ownership": "ok"}
    checks = by_id(doc)
    access = checks["dns.access-host"]
    assert access["data"]["a"]["chain"] == ["coder.xuperson.org", TUNNEL]
    assert access["data"]["a"]["records"] == ["127.0.0.1"] and access["data"]["aaaa"]["records"] == ["::1"]
    assert access["data"]["tunnel"] == DEFAULT_TUNNEL_ID and "Cloudflare tunnel" in access["detail"]
    samples = checks["dns.wildcard"]["data"]["samples"]
    assert len({s["name"] for s in samples}) == 2 and all(s["chain"][-1] == TUNNEL for s in samples)
    # the authoritative server (ns1.xuperson.org = 127.0.0.1, on the nameserver's port) is the same server
    assert list(checks["dns.consistency"]["data"]["servers"]) == [f"{lab_dns.nameserver} / authoritative"]
    assert "ingress/coder/coder-workspaces-wildcard" in checks["dns.ownership"]["detail"]


def test_zone_without_wildcard_fails_dns_wildcard(make_dns: MakeDNS) -> None:
    server = make_dns(reference_zones(wildcard=False))
    r, doc = run_json(*dns_args(server))
    assert r.code == 1
    check = by_id(doc)["dns.wildcard"]
    assert check["status"] == "fail"
    assert "NXDOMAIN" in check["detail"] and f"the zone has no {WILDCARD} record" in check["detail"]
    assert statuses(doc)["dns.access-host"] == "ok"


def test_stale_second_server_warns_with_both_answers(lab_dns: LabDNS, make_dns: MakeDNS) -> None:
    stale = make_dns(reference_zones(serial=2026090101, coder_target="127.0.0.2"))
    r, doc = run_json(*dns_args(lab_dns, stale))
    assert r.code == 0  # a warning
    check = by_id(doc)["dns.consistency"]
    assert check["status"] == "warn", check
    assert "disagree on coder.xuperson.org" in check["detail"]
    assert f"{lab_dns.nameserver} / authoritative: CNAME {TUNNEL}" in check["detail"]
    assert f"{stale.nameserver}: 127.0.0.2" in check["detail"]
    assert check["data"]["servers"][stale.nameserver]["coder.xuperson.org"] == "127.0.0.2"


def test_missing_ownership_records_warn(make_dns: MakeDNS) -> None:
    zone = "\n".join(line for line in reference_zones()["xuperson.org"].splitlines() if " TXT " not in line)
    server = make_dns({"xuperson.org": zone + "\n", "cfargotunnel.com": tunnel_zone()})
    r, doc = run_json(*dns_args(server))
    check = by_id(doc)["dns.ownership"]
    assert check["status"] == "warn" and "cname-coder.xuperson.org" in check["detail"]
    assert "not managed by ExternalDNS" in check["remediation"]


def test_failures_are_named(lab_dns: LabDNS) -> None:
    r, doc = run_json(*dns_args(lab_dns, access_url="https://coder.elsewhere.test"))
    assert "REFUSED" in by_id(doc)["dns.access-host"]["detail"]  # a server that is not authoritative
    r, doc = run_json(*dns_args(lab_dns, access_url="https://nope.cfargotunnel.com"))
    assert by_id(doc)["dns.access-host"]["detail"].startswith("nope.cfargotunnel.com: NXDOMAIN")


def test_unanswered_nameserver_is_a_named_timeout() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        r, doc = run_json("--timeout", "0.5", "probe", "dns", "--wildcard-url", WILDCARD,
                          "--access-url", ACCESS, "--nameserver", f"127.0.0.1:{port}")
    check = by_id(doc)["dns.access-host"]
    assert check["status"] == "fail" and "TIMEOUT" in check["detail"] and r.code == 1
    assert doc["duration_s"] < 0.5 + 2
