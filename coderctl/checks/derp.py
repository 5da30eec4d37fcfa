"""Coder's embedded DERP relay through the access URL: both transports, login, keys, latency, idle hold.

The attempts on each transport (`Upgrade: DERP`, DERP over WebSocket, and GET without upgrade) are made
once per run and shared (App.cached): derp.upgrade, derp.websocket and derp.verdict read the same
attempt, and the checks that need a working transport pick the one that worked.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from coderctl.checks.base import Outcome, SkipCheck, check, found, ok, skip
from coderctl.checks.network import answer_data, answer_evidence, answered_by, env_shown, resolve_access_url
from coderctl.clients.derp import TRANSPORT_NAMES, DerpSession, Greeting, Transport
from coderctl.clients.http import Response, describe_error
from coderctl.clients.latency import timed_gets
from coderctl.clients.upgrade import UpgradeRefused
from coderctl.clients.websocket import HandshakeError
from coderctl.concurrent import fan_out
from coderctl.context import App
from coderctl.problems import Problem, code
from coderctl.protocols import derp as codec

FORCE_WEBSOCKETS_FIX = (
    "let the proxy pass `Upgrade: derp` (ingress-nginx passes any Upgrade with its default template; "
    "look for a custom Upgrade/Connection header or snippet), or, behind a Cloudflare tunnel where that "
    "cannot work, set CODER_DERP_FORCE_WEBSOCKETS=true so clients use DERP over WebSocket only"
)
TIMEOUT_FIX = (
    "raise the proxy's idle timeouts on the Coder Ingress: nginx.ingress.kubernetes.io/proxy-read-timeout "
    "and proxy-send-timeout: \"3600\" (the default of 60 s cuts idle relay connections; keepalives come "
    "every 60 s)"
)
WEBSOCKET_UPGRADE_FIX = ("pass `Upgrade` and `Connection: upgrade` to Coder (ingress-nginx does by default); a "
                         "Cloudflare tunnel passes WebSocket upgrades")
LIBS = (  # imported by the runner before the checks start
    "websockets.client", "websockets.frames", "websockets.protocol", "websockets.uri", "nacl.public",
)

RELAY_UNREACHABLE = code(
    "DERP-RELAY-UNREACHABLE", "fail", "GET /derp got no answer",
    meaning="A plain GET of <access URL>/derp got no HTTP answer (DNS, TCP, TLS or a timeout).",
    evidence="The URL and the error.",
    fix="See http.healthz for the path to Coder.", check="derp.relay")
RELAY_DISABLED = code(
    "DERP-RELAY-DISABLED", "fail", "Coder's embedded DERP relay is off",
    meaning="Coder answers 404 on /derp: its embedded relay is disabled, so clients need another relay.",
    evidence="The 404 with Coder's version header.",
    fix="Enable it (CODER_DERP_SERVER_ENABLE=true, the default) or point clients at another relay.",
    check="derp.relay")
RELAY_NOT_ROUTED = code(
    "DERP-RELAY-NOT-ROUTED", "fail", "/derp does not reach a DERP relay",
    meaning="GET /derp without upgrade should get the relay's 426 \"DERP requires connection upgrade\"; "
            "another answer means a default backend, Cloudflare or another server answers /derp.",
    evidence="Status, Server header, X-Coder-Build-Version, cf-ray and the body.",
    fix="Route /derp on the access host to the Coder Service.", check="derp.relay")
UPGRADE_BLOCKED = code(
    "DERP-UPGRADE-BLOCKED", "fail", "`Upgrade: DERP` is refused on the way to the relay",
    meaning="The request with `Upgrade: DERP` got an HTTP answer instead of 101: a proxy drops or rejects the "
            "DERP upgrade (a Cloudflare tunnel always does), so clients fall back to DERP over WebSocket.",
    evidence="Status, Server header, X-Coder-Build-Version, cf-ray, body, and which hop refused.",
    fix="Let the proxy pass `Upgrade: derp`, or behind a Cloudflare tunnel set "
        "CODER_DERP_FORCE_WEBSOCKETS=true.",
    check="derp.upgrade")
UPGRADE_FAILED = code(
    "DERP-UPGRADE-FAILED", "fail", "`Upgrade: DERP` gave no DERP greeting",
    meaning="The DERP upgrade did not end in a ServerKey frame: no connection, a timeout, or a 101 followed "
            "by something that is not DERP.",
    evidence="The URL and what happened at each step (connection, 101, first frame).",
    fix="See http.healthz and tls.access-url for the path itself.", check="derp.upgrade")
WEBSOCKET_BLOCKED = code(
    "DERP-WEBSOCKET-BLOCKED", "fail", "DERP over WebSocket is refused on the way to the relay",
    meaning="The WebSocket upgrade of /derp (subprotocol derp) got an HTTP answer instead of 101.",
    evidence="Status, Server header, X-Coder-Build-Version, cf-ray, body, and which hop refused.",
    fix="Pass `Upgrade` and `Connection: upgrade` to Coder (ingress-nginx does by default).",
    check="derp.websocket", coder_code="EWS01")
WEBSOCKET_FAILED = code(
    "DERP-WEBSOCKET-FAILED", "fail", "DERP over WebSocket gave no DERP greeting",
    meaning="The WebSocket upgrade of /derp did not end in a ServerKey frame: no connection, a timeout, an "
            "invalid WebSocket handshake, or a stream that is not DERP.",
    evidence="The URL and what happened at each step.",
    fix="See http.healthz and tls.access-url for the path itself.", check="derp.websocket")
KEY_HEADER_MISSING = code(
    "DERP-KEY-HEADER-MISSING", "fail", "The relay's 101 has no Derp-Public-Key header",
    meaning="The relay sends its public key in a Derp-Public-Key header with the 101; without it something "
            "between the client and Coder rewrites the answer.",
    evidence="The 101's headers and the ServerKey frame's key.",
    fix="Find the proxy that rewrites the relay's answer.", check="derp.upgrade, derp.websocket")
KEY_HEADER_MALFORMED = code(
    "DERP-KEY-HEADER-MALFORMED", "fail", "The Derp-Public-Key header is not 64 hex digits",
    meaning="The key header must be 64 lower-case hex digits (a 32-byte Curve25519 key).",
    evidence="The header value.",
    fix="Find the proxy that rewrites the relay's answer.", check="derp.upgrade, derp.websocket")
KEY_MISMATCH = code(
    "DERP-KEY-MISMATCH", "fail", "The header key and the ServerKey frame differ",
    meaning="Derp-Public-Key and the key in the ServerKey frame must be the same: two servers took part in "
            "one connection, or the answer was rewritten.",
    evidence="Both keys.",
    fix="Find the proxy that rewrites the relay's answer or splits one connection.",
    check="derp.upgrade, derp.websocket")
VERSION_UNEXPECTED = code(
    "DERP-VERSION-UNEXPECTED", "fail", "The relay speaks another DERP protocol version",
    meaning=f"The 101's Derp-Version is not {codec.PROTOCOL_VERSION}.",
    evidence="The Derp-Version header.",
    fix="Find the proxy that rewrites the relay's answer; check Coder's version.",
    check="derp.upgrade")
LOGIN_TIMEOUT = code(
    "DERP-LOGIN-TIMEOUT", "fail", "The relay did not answer the login",
    meaning="After ClientInfo no ServerInfo came within the timeout: the relay did not accept the login.",
    evidence="The transport and the timeout.",
    fix="Check Coder's logs for derp errors.", check="derp.login")
LOGIN_REJECTED = code(
    "DERP-LOGIN-REJECTED", "fail", "The DERP login failed",
    meaning="ServerInfo could not be opened with the server's key, or a broken frame came back: a different "
            "server answered than the one that sent ServerKey, or the relay is broken.",
    evidence="The transport and the frame error.",
    fix="Make one connection reach one relay (session affinity), check Coder's logs.", check="derp.login")
LOGIN_FAILED = code(
    "DERP-LOGIN-FAILED", "fail", "The DERP login connection failed",
    meaning="The connection for the login failed before or during ClientInfo/ServerInfo or the ping.",
    evidence="The transport and the error.",
    fix="See derp.upgrade and derp.websocket.", check="derp.login")
KEYS_NO_CONNECTION = code(
    "DERP-KEYS-NO-CONNECTION", "fail", "No connection reached the relay",
    meaning="All --count concurrent connections failed, though a single one worked.",
    evidence="The number of connections and the first error.",
    fix="See derp.upgrade; an overloaded relay or proxy refuses concurrent connections.", check="derp.keys")
KEYS_DIFFER = code(
    "DERP-KEYS-DIFFER", "warn", "Several relays answer for one name",
    meaning="Connections met different server keys: several relays behind one name without a mesh, so clients "
            "connected to different ones cannot reach each other (`tailscale debug derp` warns the same).",
    evidence="The keys met and over how many connections.",
    fix="Run one Coder replica, let the replicas mesh (high availability), or keep a client on one replica.",
    check="derp.keys")
KEYS_SOME_FAILED = code(
    "DERP-KEYS-SOME-FAILED", "warn", "Some concurrent relay connections failed",
    meaning="Of --count concurrent connections some failed while the others reached the relay: an overloaded "
            "or flapping relay or proxy.",
    evidence="How many failed, the first error and the key the others met.",
    fix="Check the ingress and Coder logs.", check="derp.keys")
LATENCY_UNREACHABLE = code(
    "DERP-LATENCY-UNREACHABLE", "fail", "/derp/latency-check got no answer",
    meaning="Clients pick a relay by timing GET /derp/latency-check; it got no HTTP answer.",
    evidence="The URL and the error.", fix="See http.healthz.", check="derp.latency-check")
LATENCY_STATUS = code(
    "DERP-LATENCY-STATUS", "fail", "/derp/latency-check does not answer 200",
    meaning="Clients pick a relay by timing GET /derp/latency-check; it did not answer 200, so clients may "
            "consider the relay unusable.",
    evidence="Status, Server header, X-Coder-Build-Version, cf-ray and the body.",
    fix="Route /derp/* to Coder and keep its embedded relay on (CODER_DERP_SERVER_ENABLE).",
    check="derp.latency-check")
IDLE_CLOSED = code(
    "DERP-IDLE-CLOSED", "fail", "An idle relay connection is closed by a proxy",
    meaning="A logged-in relay connection left idle was closed before --hold seconds: a proxy's read timeout "
            "(60 s by default in ingress-nginx) cuts idle relay connections, whose keepalives come every "
            "60 s.",
    evidence="How long the connection stayed open, the hold asked for, keepalives received.",
    fix="Set nginx.ingress.kubernetes.io/proxy-read-timeout and proxy-send-timeout to \"3600\" on the Coder "
        "Ingress.",
    check="derp.hold")
HOLD_FAILED = code(
    "DERP-HOLD-FAILED", "fail", "The idle-hold connection failed",
    meaning="The connection for the idle hold failed at login or at the ping after the hold.",
    evidence="The transport and the error.", fix="See derp.login.", check="derp.hold")
WEBSOCKET_ONLY = code(
    "DERP-WEBSOCKET-ONLY", "warn", "Only DERP over WebSocket reaches the relay",
    meaning="`Upgrade: DERP` is refused on the way, DERP over WebSocket works: clients fall back to WebSocket "
            "after a failed attempt each time, unless CODER_DERP_FORCE_WEBSOCKETS=true tells them to use it "
            "at once (the fix behind a Cloudflare tunnel, which passes only WebSocket upgrades).",
    evidence="The answer at each step: GET /derp, Upgrade: DERP, DERP over WebSocket.",
    fix="Let the proxy pass `Upgrade: derp`, or set CODER_DERP_FORCE_WEBSOCKETS=true.",
    check="derp.verdict", coder_code="EDERP01")
NO_WEBSOCKET = code(
    "DERP-NO-WEBSOCKET", "warn", "Only `Upgrade: DERP` reaches the relay",
    meaning="DERP over WebSocket fails: clients that fall back to WebSocket (after a 4xx, or behind proxies "
            "negotiating h2) cannot reach the relay.",
    evidence="The answer at each step: GET /derp, Upgrade: DERP, DERP over WebSocket.",
    fix="Let the proxy pass `Upgrade: websocket`.", check="derp.verdict")
UPGRADE_DROPPED = code(
    "DERP-UPGRADE-DROPPED", "fail", "A proxy drops the Upgrade header: no transport reaches the relay",
    meaning="Coder itself answered both upgrades with 426: it received them without their Upgrade header, so "
            "a proxy between the client and Coder drops it.",
    evidence="The answer at each step: GET /derp, Upgrade: DERP, DERP over WebSocket.",
    fix="Pass `Upgrade` and `Connection: upgrade` at every proxy (ingress-nginx's default template does; a "
        "custom location, snippet or `Connection: close` does not).",
    check="derp.verdict", coder_code="EDERP02")
UNREACHABLE = code(
    "DERP-UNREACHABLE", "fail", "No transport reaches the relay",
    meaning="Neither `Upgrade: DERP` nor DERP over WebSocket reaches the relay: clients cannot connect to "
            "workspaces unless direct connections work.",
    evidence="The answer at each step: GET /derp, Upgrade: DERP, DERP over WebSocket.",
    fix="Follow the steps: no 426 on GET /derp means /derp is not routed to Coder; a 426 on the upgrades means "
        "a proxy drops Upgrade; a Cloudflare cf-ray means the tunnel answered.",
    check="derp.verdict", coder_code="EDERP02")


def relay_url(app: App) -> str:
    return resolve_access_url(app).rstrip("/") + "/derp"


@dataclass
class Attempt:
    """One try at the greeting on one transport: what came back, or why nothing did."""

    transport: Transport
    greeting: Greeting | None = None
    refused: Response | None = None
    error: str = ""
    elapsed_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def works(self) -> bool:
        return self.greeting is not None

    @property
    def name(self) -> str:
        return TRANSPORT_NAMES[self.transport]

    def answer(self) -> str:
        if self.greeting is not None:
            return f"101, ServerKey {self.greeting.server_key.hex()[:16]}…"
        if self.refused is not None:
            return answered_by(self.refused)
        return self.error


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, codec.BadMagic):
        return f"101, but the stream is not DERP: {exc}"
    if isinstance(exc, codec.EndOfStream):
        return "101, then the connection closed before the ServerKey frame"
    if isinstance(exc, codec.FrameError):
        return f"101, then a broken frame: {exc}"
    if isinstance(exc, HandshakeError):
        return f"101, but not a valid WebSocket handshake: {exc}"
    return describe_error(exc)


def attempt(app: App, url: str, transport: Transport) -> Attempt:
    """The shared greeting attempt on `transport` (made once per run)."""

    def run() -> Attempt:
        start = time.monotonic()
        try:
            with DerpSession.open(app.http(), url, transport) as session:
                return Attempt(transport, greeting=session.greeting, elapsed_s=time.monotonic() - start)
        except UpgradeRefused as exc:
            return Attempt(transport, refused=exc.response, elapsed_s=time.monotonic() - start,
                           data=answer_data(exc.response))
        except Exception as exc:
            return Attempt(transport, error=describe_failure(exc), elapsed_s=time.monotonic() - start)

    return app.cached(f"derp-attempt:{transport}", run)  # type: ignore[no-any-return]


def plain_get(app: App, url: str) -> Response | str:
    """GET /derp without an upgrade (shared): the answer, or why there was none."""

    def run() -> Response | str:
        try:
            return app.http().request("GET", url)
        except Exception as exc:
            return describe_error(exc)

    return app.cached("derp-plain", run)  # type: ignore[no-any-return]


def working_transport(app: App, url: str) -> Transport | None:
    """Upgrade: DERP when it works, else WebSocket when that does (both attempts run concurrently)."""
    transports: tuple[Transport, ...] = ("derp", "websocket")
    results = fan_out(lambda t: attempt(app, url, t), transports)
    return next((t for t, r in zip(transports, results, strict=True) if isinstance(r, Attempt) and r.works), None)


def relay_transport(app: App) -> tuple[str, Transport]:
    """The relay's URL and the transport that reaches it; the check is skipped when none does (derp.verdict
    reports why)."""
    url = relay_url(app)
    transport = working_transport(app, url)
    if transport is None:
        raise SkipCheck("no transport reaches the relay (derp.verdict)")
    return url, transport


def refusal_reason(resp: Response, transport: Transport) -> str:
    """Which hop refused the upgrade, in words."""
    if resp.status == 426 and resp.header("x-coder-build-version"):
        what = "`Upgrade: DERP`" if transport == "derp" else "the WebSocket upgrade"
        return f"Coder got the request without its Upgrade header: a proxy on the way drops {what}"
    if resp.header("cf-ray"):
        return "Cloudflare answered, not the relay"
    if not resp.header("x-coder-build-version"):
        return "the request did not reach Coder (a default backend or another server answered)"
    return "Coder refused the upgrade"


def _greeting_evidence(g: Greeting) -> list[str]:
    return [f"101 from {g.response.peer}",
            f"Derp-Version: {g.derp_version if g.derp_version is not None else '(none)'}",
            f"Derp-Public-Key: {g.header_key if g.header_key is not None else '(none)'}",
            f"ServerKey frame after {g.first_frame_s * 1000:.0f} ms: {g.server_key.hex()}"]


def _greeting_problems(g: Greeting, *, expect_header: bool) -> list[Problem]:
    evidence = _greeting_evidence(g)
    fix = ["something between the client and Coder rewrites the relay's answer"]
    problems = []
    frame_key = g.server_key.hex()
    if expect_header or g.header_key is not None:
        if g.header_key is None:
            problems.append(KEY_HEADER_MISSING("no Derp-Public-Key header", evidence=evidence, fix=fix))
        elif not re.fullmatch(r"[0-9a-f]{64}", g.header_key):
            problems.append(KEY_HEADER_MALFORMED(
                f"Derp-Public-Key {g.header_key[:70]!r} is not 64 lower-case hex digits", evidence=evidence,
                fix=fix))
        elif g.header_key != frame_key:
            problems.append(KEY_MISMATCH(f"Derp-Public-Key {g.header_key[:16]}… differs from the ServerKey "
                                         f"frame's {frame_key[:16]}…", evidence=evidence, fix=fix))
    if expect_header and g.derp_version != str(codec.PROTOCOL_VERSION):
        problems.append(VERSION_UNEXPECTED(f"Derp-Version {g.derp_version!r}, expected {codec.PROTOCOL_VERSION}",
                                           evidence=evidence, fix=fix))
    return problems


def _force_websockets_fix(app: App) -> list[str]:
    ingress = f"{app.settings.ingress_namespace}/{app.settings.ingress_controller}"
    return [FORCE_WEBSOCKETS_FIX,
            f"check the $connection_upgrade map in ConfigMap {ingress} (http-snippet): "
            f"kubectl -n {app.settings.ingress_namespace} get configmap {app.settings.ingress_controller} -o yaml "
            "| grep -B2 -A4 connection_upgrade",
            "behind a Cloudflare tunnel: in the Coder HelmRelease values (coder.env) add "
            "CODER_DERP_FORCE_WEBSOCKETS: \"true\""]


def _greeting_outcome(app: App, a: Attempt, url: str) -> Outcome:
    raw = a.transport == "derp"
    if a.greeting is None:
        if a.refused is not None:
            reason = refusal_reason(a.refused, a.transport)
            fix = _force_websockets_fix(app) if raw else [WEBSOCKET_UPGRADE_FIX]
            evidence = [*answer_evidence(f"GET ({a.name})", url, a.refused), f"verdict: {reason}"]
            blocked = UPGRADE_BLOCKED if raw else WEBSOCKET_BLOCKED
            return found([blocked(f"{a.name} to {url}: 101 expected, got {answered_by(a.refused)}: {reason}",
                                  evidence=evidence, fix=fix)], "", transport=a.transport, **a.data)
        failed = UPGRADE_FAILED if raw else WEBSOCKET_FAILED
        return found([failed(f"{a.name} to {url}: {a.error}",
                             evidence=[f"{a.name} to {url}: {a.error} (after {a.elapsed_s:.2f} s)"],
                             fix=["see http.healthz and tls.access-url for the path itself"])],
                     "", transport=a.transport)
    g = a.greeting
    data = {"transport": a.transport, "server_key": g.server_key.hex(), "derp_version": g.derp_version,
            "first_frame_s": round(g.first_frame_s, 4), "peer": g.response.peer}
    problems = _greeting_problems(g, expect_header=raw)
    outcome = found(problems, f"101, ServerKey {g.server_key.hex()[:16]}… after {g.first_frame_s * 1000:.0f} ms",
                    **data)
    if problems:
        outcome.detail = f"{a.name}: {outcome.detail}"
    return outcome


@check("derp.relay", "network", "GET /derp without upgrade answers 426 from the relay",
       uses_cluster=False, modules=LIBS)
def derp_relay(app: App) -> Outcome:
    """GET /derp without an upgrade: the relay answers 426 "DERP requires connection upgrade", which proves
    the request reached a relay and not a default backend or an error page."""
    url = relay_url(app)
    resp = plain_get(app, url)
    if isinstance(resp, str):
        return found([RELAY_UNREACHABLE(f"GET {url}: {resp}", evidence=[f"GET {url}: {resp}"],
                                        fix=["see http.healthz for the path to Coder"])], "")
    data = answer_data(resp)
    if resp.status == 426 and b"DERP" in resp.body:
        return ok(f"426 from {resp.hop()}: a DERP relay answers at {url}", **data)
    evidence = answer_evidence("GET", url, resp)
    if resp.status == 404 and resp.header("x-coder-build-version"):
        return found([RELAY_DISABLED(
            f"GET {url}: 404 from Coder: its embedded relay is off", evidence=evidence,
            fix=["enable it (CODER_DERP_SERVER_ENABLE=true, the default) or point clients at another relay",
                 env_shown(app, "CODER_DERP_SERVER_ENABLE")])], "", **data)
    reason = refusal_reason(resp, "derp")
    return found([RELAY_NOT_ROUTED(
        f"GET {url}: 426 expected, got {answered_by(resp)}: {reason}", evidence=[*evidence, f"verdict: {reason}"],
        fix=["route /derp on the access host to the Coder Service",
             f"kubectl -n {app.namespace} get ingress {app.settings.access_ingress} -o yaml"])], "", **data)


@check("derp.upgrade", "network", "DERP relay answers Upgrade: DERP", uses_cluster=False, modules=LIBS)
def derp_upgrade(app: App) -> Outcome:
    """`Upgrade: DERP`: 101, Derp-Version 2, Derp-Public-Key, then the ServerKey frame with the magic and the
    same key; time to the first frame."""
    url = relay_url(app)
    return _greeting_outcome(app, attempt(app, url, "derp"), url)


@check("derp.websocket", "network", "DERP relay answers over WebSocket", uses_cluster=False, modules=LIBS)
def derp_websocket(app: App) -> Outcome:
    """WebSocket upgrade of /derp with subprotocol `derp`, then the same ServerKey frame in binary
    messages."""
    url = relay_url(app)
    return _greeting_outcome(app, attempt(app, url, "websocket"), url)


@check("derp.login", "network", "A DERP login and ping succeed", uses_cluster=False, modules=LIBS)
def derp_login(app: App) -> Outcome:
    """ClientInfo (a fresh Curve25519 key, NaCl box) → ServerInfo opened with the server's key, then
    Ping → Pong; on Upgrade: DERP when it works, else over WebSocket."""
    url, transport = relay_transport(app)
    name = TRANSPORT_NAMES[transport]
    try:
        with DerpSession.open(app.http(), url, transport) as session:
            info, login_s = session.login()
            rtt = session.ping()
    except TimeoutError:
        return found([LOGIN_TIMEOUT(
            f"{name}: no answer within {app.timeout:g}s after ClientInfo",
            evidence=[f"{name} to {url}: 101 and ServerKey", f"ClientInfo sent; nothing within {app.timeout:g} s"],
            fix=["the relay did not accept the login: check Coder's logs for derp errors",
                 f"kubectl -n {app.namespace} logs deployment/{app.settings.coder_deployment} | grep -i derp"])],
            "", transport=transport)
    except codec.FrameError as exc:
        return found([LOGIN_REJECTED(
            f"{name}: login failed: {exc}", evidence=[f"{name} to {url}: 101 and ServerKey",
                                                      f"ClientInfo sent; answer: {exc}"],
            fix=["a different server answered than the one that sent ServerKey, or the relay is broken"])],
            "", transport=transport)
    except Exception as exc:
        return found([LOGIN_FAILED(f"{name}: {describe_failure(exc)}",
                                   evidence=[f"{name} to {url}: {describe_failure(exc)}"],
                                   fix=["see derp.upgrade and derp.websocket"])], "", transport=transport)
    return ok(f"logged in over {name} in {login_s * 1000:.0f} ms (ServerInfo version "
              f"{info.get('version', '?')}), "
              f"ping RTT {rtt * 1000:.1f} ms", transport=transport, server_info=info,
              login_s=round(login_s, 4), ping_rtt_s=round(rtt, 4))


@check("derp.keys", "network", "Every connection meets the same relay key", uses_cluster=False, modules=LIBS)
def derp_keys(app: App) -> Outcome:
    """--count connections at once: one server key on all of them, else several relays answer for one name
    without a mesh (clients connected to different ones cannot reach each other)."""
    url, transport = relay_transport(app)
    count = app.derp.count
    def server_key(_: int) -> str:
        with DerpSession.open(app.http(), url, transport) as session:
            return session.greeting.server_key.hex()

    results = fan_out(server_key, range(count))
    seen = [r for r in results if isinstance(r, str)]
    errors = [describe_failure(r) for r in results if isinstance(r, BaseException)]
    distinct = sorted(set(seen))
    data = {"transport": transport, "connections": count, "keys": distinct, "failed": len(errors)}
    name = TRANSPORT_NAMES[transport]
    if not seen:
        return found([KEYS_NO_CONNECTION(
            f"all {count} connections failed: {errors[0] if errors else 'unknown'}",
            evidence=[f"{count} concurrent connections over {name} to {url}", *sorted(set(errors))[:3]],
            fix=["see derp.upgrade"])], "", **data)
    problems: list[Problem] = []
    if len(distinct) > 1:
        problems.append(KEYS_DIFFER(
            f"{len(distinct)} different server keys over {len(seen)} connections "
            f"({', '.join(k[:12] + '…' for k in distinct)}): several relays behind one name without a mesh",
            evidence=[f"{len(seen)} connections over {name} to {url}",
                      *(f"key {k}: {seen.count(k)} connections" for k in distinct)],
            fix=["run one Coder replica, or let the replicas mesh (high availability), or make the load "
                 "balancer keep a client on one replica",
                 f"kubectl -n {app.namespace} get pods -o wide | grep {app.settings.coder_deployment}"]))
    elif errors:
        problems.append(KEYS_SOME_FAILED(
            f"{len(errors)} of {count} connections failed ({errors[0]}); the others met key {distinct[0][:16]}…",
            evidence=[f"{count} concurrent connections over {name} to {url}: {len(errors)} failed",
                      *sorted(set(errors))[:3], f"key {distinct[0]}: {len(seen)} connections"],
            fix=["an overloaded or flapping relay or proxy: check the ingress and Coder logs",
                 f"kubectl -n {app.settings.ingress_namespace} logs deployment/{app.settings.ingress_controller} "
                 "--since=10m | grep /derp"]))
    return found(problems, f"{count} connections over {name}, one server key {distinct[0][:16]}…", **data)


@check("derp.latency-check", "network", "The relay's /derp/latency-check answers",
       uses_cluster=False, modules=LIBS)
def derp_latency_check(app: App) -> Outcome:
    """GET /derp/latency-check --count times on one kept-alive connection: 200 each time; min/median/max of
    the request round trip."""
    url = relay_url(app)
    target = url + "/latency-check"
    try:
        responses = timed_gets(app.http(), target, app.derp.count)
    except Exception as exc:
        return found([LATENCY_UNREACHABLE(f"GET {target}: {describe_error(exc)}",
                                          evidence=[f"GET {target}: {describe_error(exc)}"],
                                          fix=["see http.healthz"])], "")
    bad = next((r for r in responses if r.status != 200), None)
    if bad is not None:
        return found([LATENCY_STATUS(
            f"GET {target}: 200 expected, got {answered_by(bad)}", evidence=answer_evidence("GET", target, bad),
            fix=["route /derp/* to Coder and keep its embedded relay on (CODER_DERP_SERVER_ENABLE)",
                 f"kubectl -n {app.namespace} get ingress {app.settings.access_ingress} -o yaml"])],
            "", **answer_data(bad))
    samples = [r.elapsed_s for r in responses]
    ms = [s * 1000 for s in samples]
    return ok(f"{len(ms)} requests: min {min(ms):.1f} / median {statistics.median(ms):.1f} / max "
              f"{max(ms):.1f} ms",
              min_ms=round(min(ms), 2), median_ms=round(statistics.median(ms), 2), max_ms=round(max(ms), 2),
              samples_ms=[round(m, 2) for m in ms])


def _timeout_fix(app: App) -> list[str]:
    ns, ingress = app.namespace, app.settings.access_ingress
    return [TIMEOUT_FIX,
            f"in the Ingress {ns}/{ingress} (coder-ingress.yaml) set annotations "
            "nginx.ingress.kubernetes.io/proxy-read-timeout: \"3600\" and "
            "nginx.ingress.kubernetes.io/proxy-send-timeout: \"3600\"",
            f"kubectl -n {ns} get ingress {ingress} -o jsonpath='{{.metadata.annotations}}'"]


@check("derp.hold", "network", "An idle relay connection stays open for --hold seconds",
       uses_cluster=False, modules=LIBS)
def derp_hold(app: App) -> Outcome:
    """Log in, send nothing for --hold seconds and report whether something closed the connection (a proxy
    read timeout, 60 s by default in ingress-nginx); then a ping must still be answered."""
    hold = app.derp.hold
    if hold <= 0:
        return skip("off (coderctl probe derp --hold 70 keeps a connection idle past the 60 s proxy timeout)")
    url, transport = relay_transport(app)
    name = TRANSPORT_NAMES[transport]
    try:
        with DerpSession.open(app.http(), url, transport) as session:
            session.login()
            closed_after, held, keepalives = session.idle(hold)
            if closed_after is not None:
                return found([IDLE_CLOSED(
                    f"{name}: the connection was closed after {closed_after:.1f} s idle (asked "
                    f"to hold {hold:g} s): a proxy's read timeout",
                    evidence=[f"{name} to {url}: logged in", f"idle: closed after {closed_after:.1f} s of the "
                              f"{hold:g} s asked", f"keepalives received: {keepalives}"],
                    fix=_timeout_fix(app))], "", transport=transport,
                    closed_after_s=round(closed_after, 2), hold_s=hold, keepalives=keepalives)
            rtt = session.ping()
    except Exception as exc:
        return found([HOLD_FAILED(f"{name}: {describe_failure(exc)}",
                                  evidence=[f"{name} to {url}: {describe_failure(exc)}"],
                                  fix=["see derp.login"])], "", transport=transport)
    return ok(f"{name}: open after {held:.1f} s idle ({keepalives} keepalives), then ping RTT "
              f"{rtt * 1000:.1f} ms",
              transport=transport, hold_s=hold, keepalives=keepalives, ping_rtt_s=round(rtt, 4))


@check("derp.verdict", "network", "Clients can reach the relay", uses_cluster=False, modules=LIBS)
def derp_verdict(app: App) -> Outcome:
    """Both transports → ok; WebSocket only → warn (Coder's EDERP01) with the fix; neither → fail with what
    answered at each step."""
    url = relay_url(app)
    working_transport(app, url)
    raw, ws = attempt(app, url, "derp"), attempt(app, url, "websocket")
    plain = plain_get(app, url)
    steps = {"GET /derp": plain if isinstance(plain, str) else answered_by(plain),
             raw.name: raw.answer(), ws.name: ws.answer()}
    data = {"steps": steps}
    if raw.works and ws.works:
        return ok("both transports work: Upgrade: DERP and DERP over WebSocket", **data)
    evidence = [f"{k}: {v}" for k, v in steps.items()]
    if ws.works:
        why = refusal_reason(raw.refused, "derp") if raw.refused is not None else raw.error
        return found([WEBSOCKET_ONLY(f"only DERP over WebSocket works (Coder's EDERP01); Upgrade: DERP got "
                                     f"{raw.answer()}: {why}", evidence=evidence, fix=_force_websockets_fix(app))],
                     "", **data)
    if raw.works:
        return found([NO_WEBSOCKET(
            f"only Upgrade: DERP works; DERP over WebSocket got {ws.answer()}", evidence=evidence,
            fix=["clients that fall back to WebSocket (after a 4xx, or behind proxies negotiating h2) "
                 "will fail: let the proxy pass Upgrade: websocket"])], "", **data)
    lines = "\n".join(evidence)
    message = f"no transport reaches the relay:\n{lines}"
    if all(a.refused is not None and a.refused.status == 426 and a.refused.header("x-coder-build-version")
           for a in (raw, ws)):
        problem = UPGRADE_DROPPED(message, evidence=evidence, fix=[
            "every proxy between the client and Coder drops the Upgrade header: pass `Upgrade` and "
            "`Connection: upgrade` (ingress-nginx's default template does; a custom location, snippet or "
            "`Connection: close` does not)",
            f"kubectl -n {app.namespace} get ingress {app.settings.access_ingress} -o yaml | grep -i snippet"])
    else:
        problem = UNREACHABLE(message, evidence=evidence, fix=[
            "follow the steps: no 426 on GET /derp means /derp is not routed to Coder; a 426 on the "
            "upgrades means a proxy drops Upgrade; a Cloudflare cf-ray means the tunnel answered"])
    return found([problem], "", **data)
