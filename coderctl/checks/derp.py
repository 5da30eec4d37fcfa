"""Coder's embedded DERP relay through the access URL: both transports, login, keys, latency, idle hold.

The attempts on each transport (`Upgrade: DERP`, DERP over WebSocket, and GET without upgrade) are made
once per run and shared (App.cached): derp.upgrade, derp.websocket and derp.verdict read the same
attempt, and the checks that need a working transport pick the one that worked.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from coderctl.checks.base import Outcome, check, fail, ok, skip, warn
from coderctl.checks.network import answer_data, answered_by, resolve_access_url
from coderctl.clients.derp import TRANSPORT_NAMES, DerpSession, Greeting, Transport
from coderctl.clients.http import Response, describe_error
from coderctl.clients.latency import timed_gets
from coderctl.clients.upgrade import UpgradeRefused
from coderctl.clients.websocket import HandshakeError
from coderctl.context import App
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
LIBS = (  # imported by the runner before the checks start
    "websockets.client", "websockets.frames", "websockets.protocol", "websockets.uri", "nacl.public",
)


@dataclass(frozen=True)
class DerpOptions:
    """Per-run settings of the DERP checks (`coderctl probe derp --count --hold`)."""

    count: int = 5
    hold: float = 0.0


def set_options(app: App, options: DerpOptions) -> None:
    app.cached("derp-options", lambda: options)


def options(app: App) -> DerpOptions:
    return app.cached("derp-options", DerpOptions)  # type: ignore[no-any-return]


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
    results: dict[str, Attempt] = {}
    threads = [threading.Thread(target=lambda t=t: results.__setitem__(t, attempt(app, url, t)), daemon=True)
               for t in ("derp", "websocket")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for transport in ("derp", "websocket"):
        if transport in results and results[transport].works:
            return transport  # type: ignore[return-value]
    return None


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


def _greeting_problems(g: Greeting, *, expect_header: bool) -> list[str]:
    problems = []
    frame_key = g.server_key.hex()
    if expect_header or g.header_key is not None:
        if g.header_key is None:
            problems.append("no Derp-Public-Key header")
        elif not re.fullmatch(r"[0-9a-f]{64}", g.header_key):
            problems.append(f"Derp-Public-Key {g.header_key[:70]!r} is not 64 lower-case hex digits")
        elif g.header_key != frame_key:
            problems.append(f"Derp-Public-Key {g.header_key[:16]}… differs from the ServerKey frame's "
                            f"{frame_key[:16]}…")
    if expect_header and g.derp_version != str(codec.PROTOCOL_VERSION):
        problems.append(f"Derp-Version {g.derp_version!r}, expected {codec.PROTOCOL_VERSION}")
    return problems


def _greeting_outcome(a: Attempt, url: str) -> Outcome:
    if a.greeting is None:
        if a.refused is not None:
            reason = refusal_reason(a.refused, a.transport)
            fix = FORCE_WEBSOCKETS_FIX if a.transport == "derp" else (
                "pass `Upgrade` and `Connection: upgrade` to Coder (ingress-nginx does by default); a "
                "Cloudflare tunnel passes WebSocket upgrades")
            return fail(f"{a.name} to {url}: 101 expected, got {answered_by(a.refused)}: {reason}", fix,
                        transport=a.transport, **a.data)
        return fail(f"{a.name} to {url}: {a.error}",
                    "see http.healthz and tls.access-url for the path itself", transport=a.transport)
    g = a.greeting
    data = {"transport": a.transport, "server_key": g.server_key.hex(), "derp_version": g.derp_version,
            "first_frame_s": round(g.first_frame_s, 4), "peer": g.response.peer}
    problems = _greeting_problems(g, expect_header=a.transport == "derp")
    if problems:
        return fail(f"{a.name}: " + "; ".join(problems),
                    "something between the client and Coder rewrites the relay's answer", **data)
    return ok(f"101, ServerKey {g.server_key.hex()[:16]}… after {g.first_frame_s * 1000:.0f} ms", **data)


@check("derp.relay", "network", "GET /derp without upgrade answers 426 from the relay",
       uses_cluster=False, modules=LIBS)
def derp_relay(app: App) -> Outcome:
    """GET /derp without an upgrade: the relay answers 426 "DERP requires connection upgrade", which proves
    the request reached a relay and not a default backend or an error page."""
    url = relay_url(app)
    resp = plain_get(app, url)
    if isinstance(resp, str):
        return fail(f"GET {url}: {resp}", "see http.healthz for the path to Coder")
    data = answer_data(resp)
    if resp.status == 426 and b"DERP" in resp.body:
        return ok(f"426 from {resp.hop()}: a DERP relay answers at {url}", **data)
    if resp.status == 404 and resp.header("x-coder-build-version"):
        return fail(f"GET {url}: 404 from Coder: its embedded relay is off",
                    "enable it (CODER_DERP_SERVER_ENABLE=true, the default) or point clients at another "
                    "relay", **data)
    return fail(f"GET {url}: 426 expected, got {answered_by(resp)}: {refusal_reason(resp, 'derp')}",
                "route /derp on the access host to the Coder Service", **data)


@check("derp.upgrade", "network", "DERP relay answers Upgrade: DERP", uses_cluster=False, modules=LIBS)
def derp_upgrade(app: App) -> Outcome:
    """`Upgrade: DERP`: 101, Derp-Version 2, Derp-Public-Key, then the ServerKey frame with the magic and the
    same key; time to the first frame."""
    url = relay_url(app)
    return _greeting_outcome(attempt(app, url, "derp"), url)


@check("derp.websocket", "network", "DERP relay answers over WebSocket", uses_cluster=False, modules=LIBS)
def derp_websocket(app: App) -> Outcome:
    """WebSocket upgrade of /derp with subprotocol `derp`, then the same ServerKey frame in binary
    messages."""
    url = relay_url(app)
    return _greeting_outcome(attempt(app, url, "websocket"), url)


@check("derp.login", "network", "A DERP login and ping succeed", uses_cluster=False, modules=LIBS)
def derp_login(app: App) -> Outcome:
    """ClientInfo (a fresh Curve25519 key, NaCl box) → ServerInfo opened with the server's key, then
    Ping → Pong; on Upgrade: DERP when it works, else over WebSocket."""
    url = relay_url(app)
    transport = working_transport(app, url)
    if transport is None:
        return skip("no transport reaches the relay (derp.verdict)")
    name = TRANSPORT_NAMES[transport]
    try:
        with DerpSession.open(app.http(), url, transport) as session:
            info, login_s = session.login()
            rtt = session.ping()
    except TimeoutError:
        return fail(f"{name}: no answer within {app.timeout:g}s after ClientInfo",
                    "the relay did not accept the login: check Coder's logs for derp errors")
    except codec.FrameError as exc:
        return fail(f"{name}: login failed: {exc}",
                    "a different server answered than the one that sent ServerKey, or the relay is broken")
    except Exception as exc:
        return fail(f"{name}: {describe_failure(exc)}", "see derp.upgrade and derp.websocket")
    return ok(f"logged in over {name} in {login_s * 1000:.0f} ms (ServerInfo version "
              f"{info.get('version', '?')}), "
              f"ping RTT {rtt * 1000:.1f} ms", transport=transport, server_info=info,
              login_s=round(login_s, 4), ping_rtt_s=round(rtt, 4))


@check("derp.keys", "network", "Every connection meets the same relay key", uses_cluster=False, modules=LIBS)
def derp_keys(app: App) -> Outcome:
    """--count connections at once: one server key on all of them, else several relays answer for one name
    without a mesh (clients connected to different ones cannot reach each other)."""
    url = relay_url(app)
    transport = working_transport(app, url)
    if transport is None:
        return skip("no transport reaches the relay (derp.verdict)")
    count = options(app).count
    keys: list[str | None] = [None] * count
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            with DerpSession.open(app.http(), url, transport) as session:
                keys[i] = session.greeting.server_key.hex()
        except Exception as exc:
            errors.append(describe_failure(exc))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = [k for k in keys if k]
    distinct = sorted(set(seen))
    data = {"transport": transport, "connections": count, "keys": distinct, "failed": len(errors)}
    if not seen:
        return fail(f"all {count} connections failed: {errors[0] if errors else 'unknown'}",
                    "see derp.upgrade", **data)
    if len(distinct) > 1:
        return warn(f"{len(distinct)} different server keys over {len(seen)} connections "
                    f"({', '.join(k[:12] + '…' for k in distinct)}): several relays behind one name "
                    "without a mesh",
                    "run one Coder replica, or let the replicas mesh (high availability), or make the load "
                    "balancer keep a client on one replica", **data)
    if errors:
        return warn(f"{len(errors)} of {count} connections failed ({errors[0]}); the others met key "
                    f"{distinct[0][:16]}…",
                    "an overloaded or flapping relay or proxy: check the ingress and Coder logs", **data)
    return ok(f"{count} connections over {TRANSPORT_NAMES[transport]}, one server key {distinct[0][:16]}…",
              **data)


@check("derp.latency-check", "network", "The relay's /derp/latency-check answers",
       uses_cluster=False, modules=LIBS)
def derp_latency_check(app: App) -> Outcome:
    """GET /derp/latency-check --count times on one kept-alive connection: 200 each time; min/median/max of
    the request round trip."""
    url = relay_url(app)
    target = url + "/latency-check"
    try:
        responses = timed_gets(app.http(), target, options(app).count)
    except Exception as exc:
        return fail(f"GET {target}: {describe_error(exc)}", "see http.healthz")
    bad = next((r for r in responses if r.status != 200), None)
    if bad is not None:
        return fail(f"GET {target}: 200 expected, got {answered_by(bad)}",
                    "route /derp/* to Coder and keep its embedded relay on (CODER_DERP_SERVER_ENABLE)",
                    **answer_data(bad))
    samples = [r.elapsed_s for r in responses]
    ms = [s * 1000 for s in samples]
    return ok(f"{len(ms)} requests: min {min(ms):.1f} / median {statistics.median(ms):.1f} / max "
              f"{max(ms):.1f} ms",
              min_ms=round(min(ms), 2), median_ms=round(statistics.median(ms), 2), max_ms=round(max(ms), 2),
              samples_ms=[round(m, 2) for m in ms])


@check("derp.hold", "network", "An idle relay connection stays open for --hold seconds",
       uses_cluster=False, modules=LIBS)
def derp_hold(app: App) -> Outcome:
    """Log in, send nothing for --hold seconds and report whether something closed the connection (a proxy
    read timeout, 60 s by default in ingress-nginx); then a ping must still be answered."""
    hold = options(app).hold
    if hold <= 0:
        return skip("off (coderctl probe derp --hold 70 keeps a connection idle past the 60 s proxy timeout)")
    url = relay_url(app)
    transport = working_transport(app, url)
    if transport is None:
        return skip("no transport reaches the relay (derp.verdict)")
    name = TRANSPORT_NAMES[transport]
    try:
        with DerpSession.open(app.http(), url, transport) as session:
            session.login()
            closed_after, held, keepalives = session.idle(hold)
            if closed_after is not None:
                return fail(f"{name}: the connection was closed after {closed_after:.1f} s idle (asked "
                            f"to hold {hold:g} s): a proxy's read timeout", TIMEOUT_FIX, transport=transport,
                            closed_after_s=round(closed_after, 2), hold_s=hold, keepalives=keepalives)
            rtt = session.ping()
    except Exception as exc:
        return fail(f"{name}: {describe_failure(exc)}", "see derp.login")
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
    if ws.works:
        why = refusal_reason(raw.refused, "derp") if raw.refused is not None else raw.error
        return warn(f"only DERP over WebSocket works (Coder's EDERP01); Upgrade: DERP got "
                    f"{raw.answer()}: {why}", FORCE_WEBSOCKETS_FIX, **data)
    if raw.works:
        return warn(f"only Upgrade: DERP works; DERP over WebSocket got {ws.answer()}",
                    "clients that fall back to WebSocket (after a 4xx, or behind proxies negotiating h2) "
                    "will fail: let the proxy pass Upgrade: websocket", **data)
    if all(a.refused is not None and a.refused.status == 426 and a.refused.header("x-coder-build-version")
           for a in (raw, ws)):
        fix = ("every proxy between the client and Coder drops the Upgrade header: pass `Upgrade` and "
               "`Connection: upgrade` (ingress-nginx's default template does; a custom location, snippet or "
               "`Connection: close` does not)")
    else:
        fix = ("follow the steps: no 426 on GET /derp means /derp is not routed to Coder; a 426 on the "
               "upgrades means a proxy drops Upgrade; a Cloudflare cf-ray means the tunnel answered")
    lines = "\n".join(f"{k}: {v}" for k, v in steps.items())
    return fail(f"no transport reaches the relay:\n{lines}", fix, **data)
