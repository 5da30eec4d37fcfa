"""DNS lookups that keep what a probe reports: the CNAME chain, the first hop, and the failure by name.

A stub resolver asking an authoritative server gets a CNAME without the target's addresses when the
target lies in another zone (the tunnel's `cfargotunnel.com`); the lookup then asks the same server for
the target, as a recursive resolver would, and records every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coderctl.clients.dns import Nameserver, resolver_for

if TYPE_CHECKING:
    import dns.resolver

MAX_CHAIN = 8


@dataclass
class Asker:
    """One server to ask (or the system's configuration), with a label for reports."""

    label: str
    resolver: dns.resolver.Resolver

    @classmethod
    def at(cls, server: Nameserver, timeout: float) -> Asker:
        return cls(str(server), resolver_for(server, timeout))

    @classmethod
    def system(cls, timeout: float) -> Asker:
        import dns.resolver

        res = dns.resolver.Resolver()  # /etc/resolv.conf
        res.timeout = res.lifetime = timeout
        return cls(f"system resolver ({', '.join(str(n) for n in res.nameservers)})", res)


@dataclass
class Lookup:
    """The outcome of one name and type at one server.

    `outcome` is NOERROR, NXDOMAIN, SERVFAIL, REFUSED, TIMEOUT (or another rcode or ERROR); `chain` the
    names followed from the question to the final name; `first_hop` the answer at the asked name itself
    (`CNAME target` or the sorted records), which is what servers that do not recurse can be compared on.
    """

    server: str
    name: str
    rdtype: str
    outcome: str = "NOERROR"
    chain: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    first_hop: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "NOERROR"

    def describe(self) -> str:
        """`a → CNAME b → 1.2.3.4`, or the failure by name."""
        path = " → ".join([self.chain[0], *(f"CNAME {c}" for c in self.chain[1:])]) if self.chain \
            else self.name
        if not self.ok:
            where = f" at {self.chain[-1]}" if len(self.chain) > 1 else ""
            return f"{path}: {self.outcome}{where}" + (f" ({self.error})" if self.error else "")
        return f"{path} → {', '.join(self.records) if self.records else f'no {self.rdtype} records'}"

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "name": self.name, "type": self.rdtype, "outcome": self.outcome,
                "chain": self.chain, "records": self.records, "first_hop": self.first_hop}


def _failure(exc: Exception) -> tuple[str, str]:
    import dns.rcode
    import dns.resolver

    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "NXDOMAIN", ""
    if isinstance(exc, (dns.resolver.LifetimeTimeout, dns.exception.Timeout)):
        return "TIMEOUT", "no answer in time"
    if isinstance(exc, dns.resolver.NoNameservers):
        for entry in exc.kwargs.get("errors") or []:
            response = entry[-1] if isinstance(entry, tuple) else None
            if response is not None and hasattr(response, "rcode"):
                return dns.rcode.to_text(response.rcode()), ""
            if isinstance(entry, tuple) and len(entry) >= 4:
                return "ERROR", str(entry[3])
        return "SERVFAIL", ""
    return "ERROR", f"{type(exc).__name__}: {exc}"


def _records(rrset: Any) -> list[str]:
    import dns.rdatatype

    if rrset.rdtype == dns.rdatatype.TXT:
        return sorted(b"".join(rd.strings).decode("utf-8", "replace") for rd in rrset)
    return sorted(rd.to_text() for rd in rrset)


def lookup(asker: Asker, name: str, rdtype: str = "A") -> Lookup:
    """Resolve `name`/`rdtype` at `asker`, following CNAMEs there; never raises for DNS failures."""
    import dns.exception
    import dns.rdatatype
    import dns.resolver

    result = Lookup(asker.label, name.rstrip(".").lower(), rdtype, chain=[name.rstrip(".").lower()])
    current = result.name
    for _ in range(MAX_CHAIN):
        try:
            answer = asker.resolver.resolve(current, rdtype, raise_on_no_answer=False, search=False)
        except (dns.exception.DNSException, OSError, RuntimeError) as exc:
            result.outcome, result.error = _failure(exc) if isinstance(exc, dns.exception.DNSException) \
                else ("ERROR", f"{type(exc).__name__}: {exc}")
            return result
        cnames = [r for r in answer.response.answer if r.rdtype == dns.rdatatype.CNAME]
        targets = {r.name.to_text().rstrip(".").lower(): r[0].target.to_text().rstrip(".").lower()
                   for r in cnames}
        if not result.first_hop:
            result.first_hop = f"CNAME {targets[current]}" if current in targets else ""
        while current in targets and len(result.chain) <= MAX_CHAIN:
            current = targets[current]
            result.chain.append(current)
        if answer.rrset is not None:
            result.records = _records(answer.rrset)
            if not result.first_hop:
                result.first_hop = ", ".join(result.records)
            return result
        if current not in targets and len(result.chain) == 1:
            result.first_hop = result.first_hop or f"no {rdtype} records"
            return result  # NOERROR without data (NODATA)
        if not cnames:
            return result
    result.outcome, result.error = "ERROR", f"CNAME chain longer than {MAX_CHAIN}"
    return result


def zone_of(asker: Asker, name: str) -> tuple[str, list[str]] | None:
    """The zone apex holding `name` and its NS names, asking only `asker`; None when it cannot tell."""
    import dns.exception
    import dns.name
    import dns.rdatatype
    import dns.resolver

    try:
        zone = dns.resolver.zone_for_name(name, resolver=asker.resolver, lifetime=asker.resolver.lifetime)
        answer = asker.resolver.resolve(zone, "NS", raise_on_no_answer=False, search=False)
    except (dns.exception.DNSException, OSError, RuntimeError):
        return None
    ns = sorted(rd.target.to_text().rstrip(".").lower() for rd in answer.rrset) if answer.rrset else []
    return zone.to_text().rstrip(".").lower(), ns
