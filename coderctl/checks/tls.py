"""The certificates served for the access host and for a host under the wildcard.

One TLS handshake per check, with the chain verified against the system roots or --ca-file but with
host name and validity dates left to this module, so that a certificate that is expired or for the
wrong host is still read and the failure can say what the certificate does cover and until when.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, replace
from typing import Any

from coderctl.checks.base import Outcome, check, found, skip
from coderctl.checks.network import resolve_access_url, sample_host, wildcard_pattern
from coderctl.clients.dns import Nameserver
from coderctl.clients.http import Target, describe_error
from coderctl.context import App
from coderctl.facts import cloudflare
from coderctl.facts.hosts import host_matches, url_for_host, wildcard_parent
from coderctl.problems import Problem, Severity, code

DNS_LIBS = ("dns.resolver", "dns.rdatatype", "dns.rcode", "dns.exception")  # imported before the checks start
WARN_DAYS = 21
FAIL_DAYS = 7
_NO_CHECK_TIME = 0x200000  # OpenSSL X509_V_FLAG_NO_CHECK_TIME: dates are judged below, not by OpenSSL
INSECURE_NOTE = " (not failing: --insecure)"

_REISSUE = ("Renew or reissue the certificate so it covers the host (cert-manager: kubectl describe certificate); "
            "behind Cloudflare, the edge certificate is Cloudflare's and the one checked here is the origin's.")
NAME_MISMATCH = code(
    "TLS-NAME-MISMATCH", "fail", "The certificate does not cover the host",
    meaning="The certificate served for the host (SNI) lists other names: clients refuse the connection.",
    evidence="The host asked for and the certificate's names, issuer and expiry.",
    fix=_REISSUE, check="tls.access-url, tls.wildcard")
CERT_EXPIRED = code(
    "TLS-CERT-EXPIRED", "fail", "The certificate has expired",
    meaning="The certificate's notAfter is in the past: clients refuse the connection.",
    evidence="The certificate's names, issuer and notAfter.",
    fix=_REISSUE, check="tls.access-url, tls.wildcard")
CERT_EXPIRES_SOON = code(
    "TLS-CERT-EXPIRES-SOON", "fail", "The certificate expires within 7 days",
    meaning=f"Fewer than {FAIL_DAYS} days are left (Tailscale's derpprobe fails at this point too): renewal "
            "has most likely failed.",
    evidence="The certificate's names, issuer and notAfter.",
    fix=_REISSUE, check="tls.access-url, tls.wildcard")
CERT_EXPIRING = code(
    "TLS-CERT-EXPIRING", "warn", "The certificate expires within 21 days",
    meaning=f"Fewer than {WARN_DAYS} days are left: automatic renewal (cert-manager renews 90-day certificates "
            "30 days ahead) may be failing.",
    evidence="The certificate's names, issuer and notAfter.",
    fix=_REISSUE, check="tls.access-url, tls.wildcard")
OLD_PROTOCOL = code(
    "TLS-OLD-PROTOCOL", "fail", "An obsolete TLS version was negotiated",
    meaning="The server negotiated TLS 1.0/1.1 or SSLv3, which current clients refuse.",
    evidence="The negotiated version.",
    fix="Allow TLS 1.2 and 1.3 only on the ingress (ingress-nginx ConfigMap key ssl-protocols).",
    check="tls.access-url, tls.wildcard")
CHAIN_UNTRUSTED = code(
    "TLS-CHAIN-UNTRUSTED", "fail", "The certificate chain does not lead to a trusted root",
    meaning="Verification of the served chain failed: a missing intermediate, a self-signed or private CA.",
    evidence="The URL and OpenSSL's verification error.",
    fix="Serve the full chain (leaf + intermediates), or pass --ca-file for a private CA.",
    check="tls.access-url, tls.wildcard")
HANDSHAKE_REFUSED = code(
    "TLS-HANDSHAKE-REFUSED", "fail", "The server refused the TLS handshake for the host",
    meaning="The handshake ended with a TLS alert: no certificate is configured for this name.",
    evidence="The URL and the TLS error.",
    fix="Configure a certificate for the name (Cloudflare: a host more than one level below the zone needs an "
        "advanced certificate).",
    check="tls.access-url, tls.wildcard")
UNREACHABLE = code(
    "TLS-UNREACHABLE", "fail", "No TLS connection to the host",
    meaning="The TCP connection for the handshake could not be made (name, refused, timeout).",
    evidence="The URL and the error.",
    fix="See http.healthz for the path to the server.",
    check="tls.access-url, tls.wildcard")
CLOUDFLARE_ONE_LEVEL = code(
    "TLS-CLOUDFLARE-ONE-LEVEL", "warn", "Cloudflare's Universal SSL cannot cover the wildcard",
    meaning="Hosts under the wildcard sit two or more levels below a Cloudflare zone; Universal SSL covers "
            "one level only, so browsers see ERR_SSL_VERSION_OR_CIPHER_MISMATCH (cloudflare/cloudflared#687).",
    evidence="The wildcard, the zone and its levels below the zone.",
    fix="Use a one-level wildcard (*.<zone>) or a Cloudflare advanced certificate for the wildcard.",
    check="tls.wildcard")


@dataclass
class Served:
    """What one handshake showed."""

    host: str
    names: list[str]
    not_after: float
    tls_version: str
    issuer: str
    port: int = 443

    @property
    def days_left(self) -> float:
        return (self.not_after - time.time()) / 86400


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
    return Served(target.host, names, ssl.cert_time_to_seconds(cert["notAfter"]), version, issuer, target.port)


def _certificate_evidence(served: Served) -> list[str]:
    expiry = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(served.not_after))
    return [f"host (SNI): {served.host}",
            f"certificate names: {', '.join(served.names) or 'none'}",
            f"issuer: {served.issuer or 'unnamed'}",
            f"notAfter: {expiry} ({served.days_left:.1f} days left)",
            f"negotiated: {served.tls_version}"]


def _reissue_fix(served: Served, app: App) -> list[str]:
    return ["renew or reissue the certificate so it covers the host (cert-manager: kubectl describe certificate; "
            "behind Cloudflare, the edge certificate is Cloudflare's and this one is the origin's)",
            f"kubectl -n {app.namespace} get certificate,ingress -o wide",
            f"openssl s_client -connect {served.host}:{served.port} -servername {served.host} </dev/null | "
            "openssl x509 -noout -ext subjectAltName -enddate"]


def _downgraded(app: App, problems: list[Problem]) -> list[Problem]:
    """With --insecure, certificate failures are reported as warnings."""
    if not app.settings.insecure:
        return problems
    return [replace(p, severity=Severity.WARN) for p in problems]


def certificate_problems(app: App, served: Served, what: str) -> list[Problem]:
    """What is wrong with a served certificate: host not covered, days left, TLS version."""
    evidence = _certificate_evidence(served)
    fix = _reissue_fix(served, app)
    names = ", ".join(served.names) or "no DNS names"
    problems: list[Problem] = []
    if not any(host_matches(n, served.host) for n in served.names):
        problems.append(NAME_MISMATCH(f"the certificate for {what} covers {names}, not {served.host}",
                                      evidence=evidence, fix=fix))
    days = served.days_left
    if days < 0:
        problems.append(CERT_EXPIRED(f"the certificate expired {-days:.0f} days ago", evidence=evidence, fix=fix))
    elif days < FAIL_DAYS:
        problems.append(CERT_EXPIRES_SOON(f"the certificate expires in {days:.1f} days", evidence=evidence,
                                          fix=fix))
    elif days < WARN_DAYS:
        problems.append(CERT_EXPIRING(f"the certificate expires in {days:.0f} days", evidence=evidence, fix=fix))
    if served.tls_version in ("TLSv1", "TLSv1.1", "SSLv3"):
        problems.append(OLD_PROTOCOL(f"{served.tls_version} negotiated", evidence=evidence,
                                     fix=["set ssl-protocols: \"TLSv1.2 TLSv1.3\" in the ConfigMap "
                                          f"{app.settings.ingress_namespace}/{app.settings.ingress_controller}"]))
    return problems


def judge(app: App, served: Served, problems: list[Problem]) -> Outcome:
    """ok/warn/fail for a certificate from its problems; --insecure turns a failure into a warning."""
    data = {"host": served.host, "names": served.names, "days_left": round(served.days_left, 1),
            "not_after": int(served.not_after), "tls_version": served.tls_version, "issuer": served.issuer}
    failing = any(p.severity is Severity.FAIL for p in problems)
    outcome = found(_downgraded(app, problems),
                    f"{served.host}: {served.tls_version}, certificate issued by "
                    f"{served.issuer or 'an unnamed issuer'}, valid {served.days_left:.0f} more days", **data)
    if failing and app.settings.insecure:
        outcome.detail += INSECURE_NOTE
    return outcome


def handshake_failure(app: App, url: str, exc: BaseException) -> Outcome:
    message = f"TLS to {url}: {describe_error(exc)}"
    evidence = [f"handshake with {Target.parse(url).host}:{Target.parse(url).port}: {describe_error(exc)}"]
    if isinstance(exc, ssl.SSLCertVerificationError):
        problem = CHAIN_UNTRUSTED(message, evidence=evidence, fix=[
            "the chain does not lead to a trusted root: serve the full chain (leaf + intermediates), "
            "or pass --ca-file for a private CA"])
    elif isinstance(exc, ssl.SSLError):
        problem = HANDSHAKE_REFUSED(message, evidence=evidence, fix=[
            "the server refused the handshake for this name: no certificate for it (Cloudflare: a "
            "host more than one level below the zone needs an advanced certificate)"])
    else:
        problem = UNREACHABLE(message, evidence=evidence, fix=["see http.healthz for the path to the server"])
    if app.settings.insecure and isinstance(exc, ssl.SSLCertVerificationError):
        outcome = found(_downgraded(app, [problem]), "", url=url)
        outcome.detail += INSECURE_NOTE
        return outcome
    return found([problem], "", url=url)


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
    return judge(app, served, certificate_problems(app, served, "the access host"))


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
    problems = certificate_problems(app, served, pattern)
    outcome = judge(app, served, problems)
    gap_found = _cloudflare_gap(app, pattern)
    if gap_found is None:
        return outcome
    gap, zone = gap_found
    gap_problem = CLOUDFLARE_ONE_LEVEL(
        gap, evidence=[f"wildcard: {pattern}", f"Cloudflare zone: {zone}",
                       f"levels below the zone: {cloudflare.levels_below(wildcard_parent(pattern), zone) + 1}"],
        fix=[f"use a one-level wildcard (*.{zone}) or a Cloudflare advanced certificate for {pattern}"])
    joined = "and" if outcome.status.value == "fail" else "but"
    detail = f"{outcome.detail}; {joined} {gap}"
    combined = found([*outcome.problems, gap_problem], "", **outcome.data, cloudflare=gap)
    combined.detail = detail
    return combined
