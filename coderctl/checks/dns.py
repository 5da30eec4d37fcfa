"""Name resolution of the access host and the wildcard, and whether resolvers agree on it.

Which servers are asked: every --nameserver (or profile/env `nameserver`), in order; the zone's
authoritative servers (its NS records, looked up through the first nameserver, asked on that
nameserver's port: 53 in real life, the lab's random port in tests); and the system resolver only when
no nameserver was configured at all (the built-in 1.1.1.1 and 8.8.8.8 are in use), so that naming
servers explicitly means exactly those are asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from coderctl.checks.base import Conclusion, Outcome, check, found, ok
from coderctl.checks.network import resolve_access_url, sample_host, wildcard_pattern
from coderctl.clients.dns import Nameserver
from coderctl.clients.dns_lookup import Asker, Lookup, lookup, zone_of
from coderctl.clients.http import Target
from coderctl.concurrent import all_results, fan_out
from coderctl.context import App
from coderctl.facts import cloudflare
from coderctl.problems import Code, Problem, code

OWNER_MARK = "heritage=external-dns"

LIBS = ("dns.resolver", "dns.rdatatype", "dns.rcode", "dns.exception")  # imported before the checks start

NO_NAMESERVER = code(
    "DNS-NO-NAMESERVER", "fail", "No nameserver to ask",
    meaning="No --nameserver was usable and there is no system resolver: nothing can be looked up.",
    evidence="The configured nameservers.", fix="Pass --nameserver ADDRESS[:PORT].",
    check="dns.access-host, dns.wildcard, dns.consistency, dns.ownership")
ACCESS_HOST_NXDOMAIN = code(
    "DNS-ACCESS-HOST-NXDOMAIN", "fail", "The access host does not exist in DNS",
    meaning="The access host's name (or a name in its CNAME chain) answers NXDOMAIN: nobody can reach Coder.",
    evidence="The answer with its CNAME chain and the server asked.",
    fix="Create the record (ExternalDNS creates it from the Ingress host; check its logs and --domain-filter).",
    check="dns.access-host")
ACCESS_HOST_NO_ADDRESS = code(
    "DNS-ACCESS-HOST-NO-ADDRESS", "fail", "The access host has no addresses",
    meaning="The name exists but has neither A nor AAAA records at the end of its chain.",
    evidence="The A and AAAA answers and the server asked.",
    fix="Point the name at the tunnel (a CNAME to <tunnel id>.cfargotunnel.com) or the ingress.",
    check="dns.access-host")
SERVFAIL = code(
    "DNS-SERVFAIL", "fail", "The resolver could not get an answer (SERVFAIL)",
    meaning="The resolver failed to get an answer from the zone's servers: a DNSSEC or delegation problem.",
    evidence="The name, the server asked and its answer.",
    fix="Ask the zone's authoritative servers directly (dig @<ns> NAME) and check the delegation and DNSSEC.",
    check="dns.access-host, dns.wildcard")
REFUSED = code(
    "DNS-REFUSED", "fail", "The server refused the query (REFUSED)",
    meaning="The server does not serve this name and does not recurse.",
    evidence="The name, the server asked and its answer.",
    fix="Name a recursive resolver, or the zone's authoritative server, with --nameserver.",
    check="dns.access-host, dns.wildcard")
TIMEOUT = code(
    "DNS-TIMEOUT", "fail", "The nameserver did not answer in time",
    meaning="No answer within the timeout: the server is unreachable or drops queries.",
    evidence="The name, the server asked and the timeout.",
    fix="Check the server's address and port and the firewall in between (UDP and TCP 53).",
    check="dns.access-host, dns.wildcard")
LOOKUP_FAILED = code(
    "DNS-LOOKUP-FAILED", "fail", "The lookup failed",
    meaning="The lookup ended with another response code or an error.",
    evidence="The name, the server asked and its answer.", fix="Check the resolver.",
    check="dns.access-host, dns.wildcard")
WILDCARD_MISSING = code(
    "DNS-WILDCARD-MISSING", "fail", "Hosts under the wildcard do not resolve",
    meaning="A random host under the wildcard domain answers NXDOMAIN or has no records: the zone has no "
            "wildcard record, so workspace apps on subdomains cannot be reached.",
    evidence="The answers for the random hosts and the server asked.",
    fix="Create the wildcard record (a CNAME to the tunnel, like the access host); ExternalDNS creates it from "
        "the wildcard Ingress (coder-workspaces-wildcard).",
    check="dns.wildcard")
WILDCARD_TARGET_DIFFERS = code(
    "DNS-WILDCARD-TARGET-DIFFERS", "warn", "The wildcard leads elsewhere than the access host",
    meaning="Hosts under the wildcard resolve to another target than the access host: fine only if that "
            "target also routes to Coder.",
    evidence="The targets of the wildcard hosts and of the access host.",
    fix="Make both CNAMEs to the same tunnel or ingress.", check="dns.wildcard")
SERVERS_DISAGREE = code(
    "DNS-SERVERS-DISAGREE", "warn", "Nameservers give different answers",
    meaning="The configured resolvers and the zone's authoritative servers answer one name differently: a "
            "server with an old zone, a resolver with a cached old answer, or a split-horizon view.",
    evidence="The first answer for the name at each server.",
    fix="Compare SOA serials (a secondary that stopped transferring), wait for the TTL of a cached answer, or "
        "check for a split-horizon view.",
    check="dns.consistency")
OWNERSHIP_MISSING = code(
    "DNS-OWNERSHIP-MISSING", "warn", "No ExternalDNS ownership record",
    meaning="ExternalDNS keeps a TXT record (`heritage=external-dns`) next to each record it owns; without it "
            "ExternalDNS does not update or delete the record.",
    evidence="The names looked for and the server asked.",
    fix="If the records should be managed, let ExternalDNS adopt them (or mind its --txt-prefix/--txt-suffix).",
    check="dns.ownership")
OWNERSHIP_UNCHECKED = code(
    "DNS-OWNERSHIP-UNCHECKED", "warn", "Nothing resolved to check ownership of",
    meaning="Neither the access host nor the wildcard resolved, so no ownership record could be looked for.",
    evidence="The names and their answers.", fix="See dns.access-host and dns.wildcard.",
    check="dns.ownership")
NO_ANSWER = code(
    "DNS-NO-ANSWER", "error", "No nameserver answered: nothing was compared",
    meaning="Every server asked about a name timed out, failed (SERVFAIL, an error) or refused: there is no "
            "answer to compare, so whether the servers agree is unknown.",
    evidence="The name and each server's outcome.",
    fix="Check each server's address and port (--nameserver ADDRESS[:PORT]) and the firewall in between "
        "(UDP and TCP 53); dns.access-host names the failure.",
    check="dns.consistency")
UNANSWERED = frozenset({"TIMEOUT", "ERROR", "SERVFAIL", "REFUSED"})
"""Lookup outcomes that say nothing about the name: the server gave no answer (NXDOMAIN is an answer)."""
_FAILURE_CODES: dict[str, Code] = {"SERVFAIL": SERVFAIL, "REFUSED": REFUSED, "TIMEOUT": TIMEOUT}


def nameservers(app: App) -> list[Asker]:
    """The configured nameservers, each once, plus the system resolver when none was configured."""
    seen: list[Asker] = []
    for text in app.settings.nameserver or []:
        server = Nameserver.parse(text)
        if all(a.label != str(server) for a in seen):
            seen.append(Asker.at(server, app.timeout))
    if app.settings.source("nameserver") == "default":
        try:
            seen.append(Asker.system(app.timeout))
        except Exception:  # no /etc/resolv.conf: nothing to compare
            pass
    return seen


def primary(app: App) -> Asker | None:
    found = nameservers(app)
    return found[0] if found else None


def optional_wildcard_pattern(app: App) -> str | None:
    """The wildcard pattern when there is one: checks that only add it to their sample carry on without."""
    try:
        return wildcard_pattern(app)
    except Conclusion:
        return None


def access_host(app: App) -> str:
    return Target.parse(resolve_access_url(app)).host


def cached_lookup(app: App, asker: Asker, name: str, rdtype: str = "A") -> Lookup:
    return app.cached(f"dns:{asker.label}:{name}:{rdtype}",  # type: ignore[no-any-return]
                      lambda: lookup(asker, name, rdtype))


def first_definite(app: App, name: str, rdtype: str = "A") -> Lookup | None:
    """The answer of the first configured server that gives one (a timeout or error moves on to the next)."""
    last = None
    for asker in nameservers(app):
        last = cached_lookup(app, asker, name, rdtype)
        if last.outcome not in UNANSWERED:
            return last
    return last


def at_once(app: App, names: list[str]) -> list[Lookup | None]:
    """`first_definite` A lookups of several names concurrently, so silent servers cost one timeout."""
    return [r if isinstance(r, Lookup) else None for r in fan_out(lambda n: first_definite(app, n), names)]


def target_of(result: Lookup) -> str:
    """Where a name leads: the last name of its CNAME chain, else its addresses."""
    return result.chain[-1] if len(result.chain) > 1 else ", ".join(result.records)


def _failure_fix(result: Lookup) -> str:
    return {
        "NXDOMAIN": "the name does not exist: create the record (ExternalDNS creates it from the "
                    "Ingress host; check its logs and --domain-filter)",
        "SERVFAIL": "the resolver could not get an answer from the zone's servers (DNSSEC or delegation "
                    "problem): ask the authoritative servers directly",
        "REFUSED": "the server does not serve this name and does not recurse: name a recursive resolver",
        "TIMEOUT": "no answer in time: the server is unreachable or drops queries (firewall, wrong port)",
    }.get(result.outcome, "check the resolver")


def _no_nameserver(app: App) -> Outcome:
    configured = ", ".join(app.settings.nameserver or []) or "none"
    return found([NO_NAMESERVER("no nameserver to ask", evidence=[f"nameservers: {configured}"],
                                fix=["pass --nameserver"])], "")


def _answer(result: Lookup) -> str:
    """An evidence line: which server said what."""
    return f"{result.server}: {result.describe()}"


def _lookup_failure(message: str, result: Lookup, missing: Code, missing_fix: str) -> Problem:
    """The problem for a failed lookup: the name missing (NXDOMAIN), or the resolver failing."""
    if result.outcome == "NXDOMAIN":
        return missing(message, evidence=[_answer(result)], fix=[missing_fix])
    kind = _FAILURE_CODES.get(result.outcome, LOOKUP_FAILED)
    return kind(message, evidence=[_answer(result)], fix=[_failure_fix(result)])


def _notes(result: Lookup) -> list[str]:
    notes = [f"Cloudflare tunnel {t}" for t in (cloudflare.tunnel_id(n) for n in result.chain) if t]
    if any(cloudflare.is_cloudflare_address(a) for a in result.records):
        notes.append("Cloudflare addresses (proxied)")
    return notes


@check("dns.access-host", "dns", "The access host resolves", uses_cluster=False, modules=LIBS)
def dns_access_host(app: App) -> Outcome:
    """A and AAAA of the access host with the CNAME chain (a `*.cfargotunnel.com` target is the Cloudflare
    tunnel); NXDOMAIN, SERVFAIL and timeouts named as such."""
    host = access_host(app)
    a = first_definite(app, host, "A")
    if a is None:
        return _no_nameserver(app)
    if not a.ok:  # no AAAA question: a name that fails for A fails for AAAA too, and a timeout would double
        return found([_lookup_failure(f"{a.describe()} (asked {a.server})", a, ACCESS_HOST_NXDOMAIN,
                                      _failure_fix(a))], "", server=a.server, a=a.as_dict())
    aaaa = first_definite(app, host, "AAAA")
    data: dict[str, Any] = {"server": a.server, "a": a.as_dict(), "aaaa": aaaa.as_dict() if aaaa else None}
    addresses = a.records + (aaaa.records if aaaa and aaaa.ok else [])
    if not addresses:
        return found([ACCESS_HOST_NO_ADDRESS(
            f"{a.describe()} and no AAAA records either (asked {a.server})",
            evidence=[_answer(a), *([_answer(aaaa)] if aaaa else [])],
            fix=["the name exists without addresses: point it at the tunnel or the ingress"])], "", **data)
    notes = _notes(a)
    v6 = f"; AAAA {', '.join(aaaa.records)}" if aaaa and aaaa.ok and aaaa.records else ""
    return ok(f"{a.describe()}{v6}" + (f" ({'; '.join(notes)})" if notes else "") + f" [asked {a.server}]",
              tunnel=next(filter(None, map(cloudflare.tunnel_id, a.chain)), None), **data)


@check("dns.wildcard", "dns", "Random hosts under the wildcard resolve like the access host",
       uses_cluster=False, modules=LIBS)
def dns_wildcard(app: App) -> Outcome:
    """Two random labels under the wildcard domain resolve, to the same target as the access host."""
    pattern = wildcard_pattern(app)
    host = access_host(app)
    *samples, access = at_once(app, [sample_host(app, pattern, 0), sample_host(app, pattern, 1), host])
    if access is None or any(s is None for s in samples):
        return _no_nameserver(app)
    results: list[Lookup] = [s for s in samples if s is not None]
    data = {"pattern": pattern, "samples": [s.as_dict() for s in results], "access_host": access.as_dict()}
    bad = [s for s in results if not s.ok or not s.records and len(s.chain) == 1]
    if bad:
        first = bad[0]
        why = (f"the zone has no {pattern} record" if first.outcome == "NXDOMAIN" else _failure_fix(first))
        create = (f"create {pattern} (a CNAME to the tunnel, like the access host); ExternalDNS "
                  f"creates it from the {app.settings.wildcard_ingress} Ingress")
        message = f"{first.describe()} (asked {first.server}): {why}"
        problem = (WILDCARD_MISSING(message, evidence=[_answer(s) for s in results], fix=[create])
                   if first.ok else _lookup_failure(message, first, WILDCARD_MISSING, create))
        return found([problem], "", **data)
    targets = {target_of(s) for s in results}
    problems: list[Problem] = []
    if access.ok and targets != {target_of(access)}:
        problems.append(WILDCARD_TARGET_DIFFERS(
            f"{pattern} leads to {', '.join(sorted(targets))}, the access host to {target_of(access)}",
            evidence=[*(_answer(s) for s in results), _answer(access)],
            fix=["fine only if that target also routes to Coder; usually both are CNAMEs to the same tunnel or "
                 "ingress"]))
    return found(problems, f"{results[0].describe()}; a second random label too: same target as {host}", **data)


@dataclass
class _Server:
    asker: Asker
    labels: list[str]


def _authoritative(app: App, first: Asker, name: str) -> list[_Server]:
    """The zone's NS servers, asked on the first nameserver's port."""
    found = zone_of(first, name)
    if found is None:
        return []
    _, ns_names = found
    port = first.resolver.port
    servers = []
    for ns in ns_names:
        for rdtype in ("A", "AAAA"):
            for address in cached_lookup(app, first, ns, rdtype).records:
                server = Nameserver(address, port)
                servers.append(_Server(Asker.at(server, app.timeout), [f"{ns} ({server}, authoritative)"]))
    return servers


def _all_servers(app: App, name: str) -> list[_Server]:
    configured = [_Server(a, [a.label]) for a in nameservers(app)]
    if not configured:
        return []
    merged = list(configured)
    for auth in _authoritative(app, configured[0].asker, name):
        same = next((s for s in merged if s.asker.label == auth.asker.label), None)
        if same is not None:
            same.labels.append("authoritative")
        else:
            merged.append(auth)
    return merged


@check("dns.consistency", "dns", "Resolvers and authoritative servers agree", uses_cluster=False,
       modules=LIBS)
def dns_consistency(app: App) -> Outcome:
    """Every --nameserver, the zone's authoritative servers (and the system resolver when no nameserver is
    configured) give the same first answer for the access host and a wildcard host; each disagreement is
    shown per server."""
    host = access_host(app)
    # What needs the cluster (the wildcard), what needs a first answer (the authoritative servers) and the
    # configured servers' answer for the access host are independent: asked at once, silent servers and an
    # unreachable API cost one timeout, not three in a row. The lookups are cached, so none is asked twice.
    first: list[Callable[[], object]] = [lambda: optional_wildcard_pattern(app), lambda: _all_servers(app, host),
                                         *((lambda a=a: cached_lookup(app, a, host)) for a in nameservers(app))]
    pattern_r, servers_r, *_ = fan_out(lambda f: f(), first)
    for failed in (pattern_r, servers_r):
        if isinstance(failed, BaseException):
            raise failed
    pattern = cast("str | None", pattern_r)
    servers = cast("list[_Server]", servers_r)
    names = [host]
    if pattern:
        names.append(sample_host(app, pattern))
    if not servers:
        return _no_nameserver(app)
    asked = [(i, n) for i in range(len(servers)) for n in names]
    answers = dict(zip(asked, all_results(fan_out(lambda q: cached_lookup(app, servers[q[0]].asker, q[1]), asked)),
                       strict=True))

    def shown(r: Lookup) -> str:
        return r.first_hop if r.ok else r.outcome

    per_server = {per_server_label(s): {n: shown(answers[(i, n)]) for n in names}
                  for i, s in enumerate(servers)}
    data = {"servers": per_server}
    silent = [n for n in names if all(answers[(i, n)].outcome in UNANSWERED for i in range(len(servers)))]
    if silent:
        return found([NO_ANSWER(f"no server answered for {n}: nothing to compare",
                                evidence=[f"{label}: {values[n]}" for label, values in per_server.items()],
                                fix=[f"check the nameservers' addresses and ports ({', '.join(per_server)}) and "
                                     "the firewall in between"]) for n in silent], "", **data)
    split = [n for n in names if len({shown(answers[(i, n)]) for i in range(len(servers))}) > 1]
    if split:
        fix = ["a server with an old zone (compare SOA serials; a secondary that stopped transferring), a "
               "resolver with a cached old answer (wait for the TTL), or a split-horizon view",
               *(_dig(s.asker, "SOA", split[0].partition(".")[2]) for s in servers)]
        problems = [SERVERS_DISAGREE(f"{len(servers)} servers disagree on {n}",
                                     evidence=[f"{label}: {values[n]}" for label, values in per_server.items()],
                                     fix=fix) for n in split]
        outcome = found(problems, "", **data)
        lines = []
        for n in split:
            lines.append(f"{n}:")
            lines += [f"  {label}: {values[n]}" for label, values in per_server.items()]
        outcome.detail = f"{len(servers)} servers disagree on {', '.join(split)}\n" + "\n".join(lines)
        return outcome
    if len(servers) > 1:
        who = f"all {len(servers)} servers agree"
    else:
        who = f"one server asked ({per_server_label(servers[0])})"
    return ok(f"{who}: " + "; ".join(f"{n} → {shown(answers[(0, n)])}" for n in names), **data)


def _dig(asker: Asker, rdtype: str, name: str) -> str:
    """The dig command that asks `asker` the same question."""
    resolver = asker.resolver
    at = f" @{resolver.nameservers[0]} -p {resolver.port}" if len(resolver.nameservers) == 1 else ""
    return f"dig +short {rdtype} {name}{at}"


def per_server_label(server: _Server) -> str:
    return " / ".join(server.labels)


def _ownership_names(result: Lookup) -> list[str]:
    """Where ExternalDNS's TXT registry keeps ownership of `result.name`: `<type>-<name>` (current format)
    and `<name>` itself (legacy; impossible next to a CNAME)."""
    kind = "cname" if result.first_hop.startswith("CNAME ") else "a"
    first, _, rest = result.name.partition(".")
    return [f"{kind}-{first}.{rest}", result.name]


def _txt_shown(app: App, asker: Asker, name: str) -> str:
    txt = cached_lookup(app, asker, name, "TXT")
    if not txt.ok:
        return txt.outcome
    return ", ".join(txt.records) or "no TXT records"


def _owner(app: App, asker: Asker, result: Lookup) -> str | None:
    for name in _ownership_names(result):
        txt = cached_lookup(app, asker, name, "TXT")
        for record in txt.records if txt.ok else []:
            if OWNER_MARK in record:
                return f"{name}: {record}"
    return None


@check("dns.ownership", "dns", "ExternalDNS ownership records are present", uses_cluster=False, modules=LIBS)
def dns_ownership(app: App) -> Outcome:
    """The TXT records ExternalDNS's registry writes next to the records it owns, for the access host and
    the wildcard; without them ExternalDNS does not update (or delete) those records."""
    host = access_host(app)
    asker = primary(app)
    if asker is None:
        return _no_nameserver(app)
    records = [cached_lookup(app, asker, host)]
    pattern = optional_wildcard_pattern(app)
    if pattern:
        wildcard = cached_lookup(app, asker, sample_host(app, pattern))
        records.append(Lookup(wildcard.server, pattern, "A", chain=[pattern], first_hop=wildcard.first_hop))
    owners = {r.name: _owner(app, asker, r) for r in records if r.first_hop and r.outcome == "NOERROR"}
    data = {"owners": owners}
    missing = [name for name, owner in owners.items() if owner is None]
    fix = ["the records are not managed by ExternalDNS (it will not update them), or it runs with "
           "--txt-prefix/--txt-suffix; if they should be managed, let ExternalDNS adopt them"]
    problems = [OWNERSHIP_MISSING(
        f"no ExternalDNS ownership TXT record for {r.name} (looked for {', '.join(_ownership_names(r))})",
        evidence=[f"{r.server}: {r.name} → {r.first_hop}",
                  *(f"{asker.label}: {n} TXT → {_txt_shown(app, asker, n)}" for n in _ownership_names(r))],
        fix=[*fix, _dig(asker, "TXT", _ownership_names(r)[0])]) for r in records if r.name in missing]
    if problems:
        return found(problems, "", **data)
    if not owners:
        return found([OWNERSHIP_UNCHECKED(
            "nothing resolved to check ownership of (see dns.access-host)",
            evidence=[_answer(r) for r in records])], "", **data)
    return ok("; ".join(f"{n} owned ({o.split('external-dns/resource=')[-1] if o else ''})"
                        for n, o in owners.items()), **data)

