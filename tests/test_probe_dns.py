"""`coderctl probe dns` against real Knot DNS servers on loopback (never the system resolver)."""

from __future__ import annotations

from collections.abc import Callable

from lab.dns import DEFAULT_TUNNEL_ID, LabDNS, reference_zones, tunnel_zone
from probeargs import WILDCARD, assert_coded, by_id, codes, run_json, statuses

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
    assert all(c["problems"] == [] for c in doc["checks"])


def test_zone_without_wildcard_fails_dns_wildcard(make_dns: MakeDNS) -> None:
    server = make_dns(reference_zones(wildcard=False))
    r, doc = run_json(*dns_args(server))
    assert r.code == 1
    check = by_id(doc)["dns.wildcard"]
    assert check["status"] == "fail"
    assert "NXDOMAIN" in check["detail"] and f"the zone has no {WILDCARD} record" in check["detail"]
    assert statuses(doc)["dns.access-host"] == "ok"
    assert_coded(doc)
    assert codes(check) == ["DNS-WILDCARD-MISSING"]
    assert all(e.startswith(f"{server.nameserver}: coderctl-probe-") and "NXDOMAIN" in e
               for e in check["problems"][0]["evidence"])
    assert any("coder-workspaces-wildcard" in f for f in check["problems"][0]["fix"])


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
    assert_coded(doc)
    [problem] = check["problems"]  # the wildcard host gets the same answer everywhere: one disagreement
    assert problem["code"] == "DNS-SERVERS-DISAGREE" and problem["message"].endswith("disagree on coder.xuperson.org")
    assert problem["evidence"] == [f"{lab_dns.nameserver} / authoritative: CNAME {TUNNEL}",
                                   f"{stale.nameserver}: 127.0.0.2"]
    port = stale.nameserver.rpartition(":")[2]
    assert f"dig +short SOA xuperson.org @127.0.0.1 -p {port}" in problem["fix"]


def test_missing_ownership_records_warn(make_dns: MakeDNS) -> None:
    zone = "\n".join(line for line in reference_zones()["xuperson.org"].splitlines() if " TXT " not in line)
    server = make_dns({"xuperson.org": zone + "\n", "cfargotunnel.com": tunnel_zone()})
    r, doc = run_json(*dns_args(server))
    check = by_id(doc)["dns.ownership"]
    assert check["status"] == "warn" and "cname-coder.xuperson.org" in check["detail"]
    assert "not managed by ExternalDNS" in check["remediation"]
    assert_coded(doc)
    assert codes(check) == ["DNS-OWNERSHIP-MISSING", "DNS-OWNERSHIP-MISSING"]  # the access host and the wildcard
    assert f"{server.nameserver}: cname-coder.xuperson.org TXT → no TXT records" in check["problems"][0]["evidence"]


def test_failures_are_named(lab_dns: LabDNS) -> None:
    r, doc = run_json(*dns_args(lab_dns, access_url="https://coder.elsewhere.test"))
    assert "REFUSED" in by_id(doc)["dns.access-host"]["detail"]  # a server that is not authoritative
    assert codes(by_id(doc)["dns.access-host"]) == ["DNS-REFUSED"]
    assert_coded(doc)
    r, doc = run_json(*dns_args(lab_dns, access_url="https://nope.cfargotunnel.com"))
    assert by_id(doc)["dns.access-host"]["detail"].startswith("nope.cfargotunnel.com: NXDOMAIN")
    assert codes(by_id(doc)["dns.access-host"]) == ["DNS-ACCESS-HOST-NXDOMAIN"]
    assert_coded(doc)


def test_unanswered_nameserver_is_a_named_timeout() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        r, doc = run_json("--timeout", "0.5", "probe", "dns", "--wildcard-url", WILDCARD,
                          "--access-url", ACCESS, "--nameserver", f"127.0.0.1:{port}")
    check = by_id(doc)["dns.access-host"]
    assert check["status"] == "fail" and "TIMEOUT" in check["detail"] and r.code == 1
    assert codes(check) == ["DNS-TIMEOUT"] and check["problems"][0]["evidence"][0].startswith(f"127.0.0.1:{port}: ")
    assert_coded(doc)
    assert doc["duration_s"] < 0.5 + 2
