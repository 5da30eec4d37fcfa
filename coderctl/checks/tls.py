"""The certificates served for the access host and for a host under the wildcard.

One TLS handshake per check, with the chain verified against the system roots or --ca-file but with
host name and validity dates left to this module, so that a certificate that is expired or for the
wrong host is still read and the failure can say what the certificate does cover and until when.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from coderctl.checks import cloudflare
from coderctl.checks.base import Outcome, check, fail, ok, skip, warn
from coderctl.checks.network import (
    resolve_access_url,
    sample_host,
    url_for_host,
    wildcard_parent,
    wildcard_pattern,
)
from coderctl.clients.dns import Nameserver
from coderctl.clients.http import Target, describe_error
from coderctl.context import App

DNS_LIBS = ("dns.resolver", "dns.rdatatype", "dns.rcode", "dns.exception")  # imported before the checks start
WARN_DAYS = 21
FAIL_DAYS = 7
_NO_CHECK_TIME = 0x200000  # OpenSSL X509_V_FLAG_NO_CHECK_TIME: dates are judged below, not by OpenSSL


@dataclass
class Served:
    """What one handshake showed."""

    host: str
    names: list[str]
    not_after: float
    tls_version: str
    issuer: str

    @property
    def days_left(self) -> float:
        return (self.not_after - time.time()) / 86400


def covers(pattern: str, host: str) -> bool:
    """RFC 6125 matching: exact, or a `*` as the whole left-most label matching exactly one label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    first, _, rest = host.partition(".")
    return bool(first) and rest == pattern[2:]


def _diagnostic_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False
    ctx.verify_flags |= _NO_CHECK_TIME
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def handshake(app: App, url: str) -> Served:
    """Connect to `url`'s host and port (honouring --resolve) with SNI = its host; raise on TLS errors."""
    client = app.http()
    target = Target.parse(url)
    ctx: ssl.SSLContext = app.cached("tls-diagnostic-context", lambda: _diagnostic_context(client.ca_file))
    address = client.resolver.address(target.host, target.port)
    with socket.create_connection((address, target.port), timeout=app.timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=target.host) as tls:
            cert: dict[str, Any] = tls.getpeercert() or {}
            version = tls.version() or "?"
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    issuer_fields = {k: v for rdn in cert.get("issuer", ()) for k, v in rdn}
    issuer = issuer_fields.get("commonName") or issuer_fields.get("organizationName") or ""
    return Served(target.host, names, ssl.cert_time_to_seconds(cert["notAfter"]), version, issuer)


def judge(app: App, served: Served, what: str) -> Outcome:
    """ok/warn/fail for a certificate: host covered, days left, TLS version. --insecure turns a failure
    into a warning."""
    data = {"host": served.host, "names": served.names, "days_left": round(served.days_left, 1),
            "tls_version": served.tls_version, "issuer": served.issuer}
    names = ", ".join(served.names) or "no DNS names"
    problems: list[tuple[str, str]] = []
    if not any(covers(n, served.host) for n in served.names):
        problems.append(("fail", f"the certificate for {what} covers {names}, not {served.host}"))
    days = served.days_left
    if days < 0:
        problems.append(("fail", f"the certificate expired {-days:.0f} days ago"))
    elif days < FAIL_DAYS:
        problems.append(("fail", f"the certificate expires in {days:.1f} days"))
    elif days < WARN_DAYS:
        problems.append(("warn", f"the certificate expires in {days:.0f} days"))
    if served.tls_version in ("TLSv1", "TLSv1.1", "SSLv3"):
        problems.append(("fail", f"{served.tls_version} negotiated"))
    fix = ("renew or reissue the certificate so it covers the host (cert-manager: kubectl describe "
           "certificate; "
           "behind Cloudflare, the edge certificate is Cloudflare's and this one is the origin's)")
    if any(level == "fail" for level, _ in problems):
        text = "; ".join(t for _, t in problems)
        if app.settings.insecure:
            return warn(f"{text} (not failing: --insecure)", fix, **data)
        return fail(text, fix, **data)
    if problems:
        return warn("; ".join(t for _, t in problems), fix, **data)
    return ok(f"{served.host}: {served.tls_version}, certificate issued by "
              f"{served.issuer or 'an unnamed issuer'}, "
              f"valid {days:.0f} more days", **data)


def handshake_failure(app: App, url: str, exc: BaseException) -> Outcome:
    detail = f"TLS to {url}: {describe_error(exc)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        fix = ("the chain does not lead to a trusted root: serve the full chain (leaf + intermediates), "
               "or pass --ca-file for a private CA")
    elif isinstance(exc, ssl.SSLError):
        fix = ("the server refused the handshake for this name: no certificate for it (Cloudflare: a "
               "host more than one level below the zone needs an advanced certificate)")
    else:
        fix = "see http.healthz for the path to the server"
    if app.settings.insecure and isinstance(exc, ssl.SSLCertVerificationError):
        return warn(detail + " (not failing: --insecure)", fix, url=url)
    return fail(detail, fix, url=url)


@check("tls.access-url", "network", "The access URL's certificate is valid for its host", uses_cluster=False)
def tls_access_url(app: App) -> Outcome:
    """TLS handshake with the access host: chain against the system roots or --ca-file, host name, TLS
    version, days left (warn under 21, fail under 7)."""
    url = resolve_access_url(app)
    if Target.parse(url).scheme != "https":
        return skip(f"the access URL {url} is not https")
    try:
        served = handshake(app, url)
    except (OSError, ValueError) as exc:
        return handshake_failure(app, url, exc)
    return judge(app, served, "the access host")


def _cloudflare_gap(app: App, pattern: str) -> tuple[str, str] | None:
    """Universal SSL's one-level limit, when the wildcard's zone is on Cloudflare or its hosts go through
    it: (why, zone), else None."""
    from coderctl.clients.dns_lookup import Asker, lookup, zone_of

    servers = list(app.settings.nameserver or [])
    if not servers:
        return None
    asker = Asker.at(Nameserver.parse(servers[0]), app.timeout)
    parent = wildcard_parent(pattern)
    found = zone_of(asker, sample_host(app, pattern))
    if found is None:
        return None
    zone, ns = found
    gap = cloudflare.universal_ssl_gap(parent, zone)
    if gap is None:
        return None
    answer = lookup(asker, sample_host(app, pattern))
    proxied = (any(n.endswith("." + cloudflare.NS_DOMAIN) for n in ns)
               or any(cloudflare.tunnel_id(n) for n in answer.chain)
               or any(cloudflare.is_cloudflare_address(a) for a in answer.records))
    return (gap, zone) if proxied else None


@check("tls.wildcard", "network", "The certificate covers a random host under the wildcard",
       uses_cluster=False, modules=DNS_LIBS)
def tls_wildcard(app: App) -> Outcome:
    """TLS handshake with SNI = a random host under the wildcard: the certificate must cover it. A wildcard
    two or more labels below a Cloudflare zone is flagged: Universal SSL covers one level only."""
    url = resolve_access_url(app)
    pattern = wildcard_pattern(app)
    if Target.parse(url).scheme != "https":
        return skip(f"the access URL {url} is not https")
    host_url = url_for_host(url, sample_host(app, pattern))
    try:
        served = handshake(app, host_url)
    except (OSError, ValueError) as exc:
        return handshake_failure(app, host_url, exc)
    outcome = judge(app, served, pattern)
    found = _cloudflare_gap(app, pattern)
    if found is None:
        return outcome
    gap, zone = found
    fix = f"use a one-level wildcard (*.{zone}) or a Cloudflare advanced certificate for {pattern}"
    if outcome.status.value == "fail":
        return fail(f"{outcome.detail}; and {gap}", fix, **outcome.data, cloudflare=gap)
    return warn(f"{outcome.detail}; but {gap}", fix, **outcome.data, cloudflare=gap)
