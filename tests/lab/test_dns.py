from __future__ import annotations

import secrets
from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rdatatype
import psutil

from lab.dns import DEFAULT_TUNNEL_ID, LabDNS, lab_dns, make_dns, reference_zone, reference_zones  # noqa: F401

TUNNEL = f"{DEFAULT_TUNNEL_ID}.cfargotunnel.com."


def _resolve(server: LabDNS, name: str, rdtype: str = "A") -> tuple[list[str], list[str]]:
    """Follow CNAMEs on `server` as a resolver would: (the chain of names, the final addresses)."""
    chain = [name.rstrip(".") + "."]
    for _ in range(8):
        reply = server.query(chain[-1], rdtype)
        assert reply.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(reply.rcode())
        cnames = [r for r in reply.answer if r.rdtype == dns.rdatatype.CNAME]
        addresses = [r for r in reply.answer if r.rdtype == dns.rdatatype.from_text(rdtype)]
        if addresses:
            return chain, sorted(rd.to_text() for rd in addresses[0])
        assert cnames, f"no answer for {chain[-1]}"
        chain.append(cnames[0][0].target.to_text())
    raise AssertionError(f"CNAME loop: {chain}")


def _serial(server: LabDNS, zone: str = "xuperson.org") -> int:
    return int(server.query(zone, "SOA").answer[0][0].serial)


def _txt(reply: dns.message.Message) -> list[str]:
    return [b"".join(rd.strings).decode() for rrset in reply.answer for rd in rrset]


def test_coder_cname_chain_to_tunnel(lab_dns: LabDNS) -> None:
    assert lab_dns.nameserver == f"127.0.0.1:{lab_dns.port}"
    assert _resolve(lab_dns, "coder.xuperson.org") == (["coder.xuperson.org.", TUNNEL], ["127.0.0.1"])
    assert _resolve(lab_dns, "coder.xuperson.org", "AAAA")[1] == ["::1"]
    reply = lab_dns.query("coder.xuperson.org", "CNAME", tcp=True)
    assert reply.answer[0][0].target.to_text() == TUNNEL


def test_random_label_under_wildcard(lab_dns: LabDNS) -> None:
    name = f"code-server--ws-{secrets.token_hex(4)}--user1.xuperson.org"
    assert _resolve(lab_dns, name) == ([name + ".", TUNNEL], ["127.0.0.1"])


def test_externaldns_ownership_txt(lab_dns: LabDNS) -> None:
    owner = "heritage=external-dns,external-dns/owner=default,external-dns/resource="
    assert _txt(lab_dns.query("cname-coder.xuperson.org", "TXT")) == [owner + "ingress/coder/coder"]
    wildcard = _txt(lab_dns.query("cname-*.xuperson.org", "TXT"))
    assert wildcard == [owner + "ingress/coder/coder-workspaces-wildcard"]
    assert _txt(lab_dns.query("a-www.xuperson.org", "TXT")) == _txt(lab_dns.query("www.xuperson.org", "TXT"))


def test_no_wildcard_is_nxdomain(make_dns: Callable[[dict[str, str]], LabDNS]) -> None:
    server = make_dns(reference_zones(wildcard=False))
    assert server.query("my-ws.xuperson.org").rcode() == dns.rcode.NXDOMAIN
    assert server.query("cname-*.xuperson.org", "TXT").rcode() == dns.rcode.NXDOMAIN
    assert _resolve(server, "coder.xuperson.org")[1] == ["127.0.0.1"]


def test_stale_server_answers_differently(
    lab_dns: LabDNS, make_dns: Callable[[dict[str, str]], LabDNS]
) -> None:
    stale = make_dns(reference_zones(serial=2026090101, coder_target="127.0.0.2"))
    assert stale.port != lab_dns.port
    assert _resolve(stale, "coder.xuperson.org") == (["coder.xuperson.org."], ["127.0.0.2"])
    assert _txt(stale.query("a-coder.xuperson.org", "TXT"))
    assert _serial(stale) == 2026090101 < _serial(lab_dns) == 2026112601


def test_reload_and_stop(make_dns: Callable[[dict[str, str]], LabDNS]) -> None:
    server = make_dns({"xuperson.org": reference_zone()})
    port, pid = server.port, server.pid
    server.reload({"xuperson.org": reference_zone(serial=2026112602, wildcard=False)})
    assert (server.port, server.pid, _serial(server)) == (port, pid, 2026112602)
    assert server.query("x.xuperson.org").rcode() == dns.rcode.NXDOMAIN
    server.reload(reference_zones())
    assert server.port == port and server.pid != pid
    assert _resolve(server, "x.xuperson.org")[1] == ["127.0.0.1"]
    pid, root = server.pid, server.root
    server.stop()
    assert pid is not None and not psutil.pid_exists(pid)
    assert root is not None and not root.exists()
