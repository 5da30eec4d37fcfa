"""A WebSocket through the access URL, as browsers and the CLI open them (Coder's EWS01/EWS02)."""

from __future__ import annotations

import os
import secrets
import time

from coderctl.checks.base import Outcome, check, found, ok
from coderctl.checks.derp import attempt, describe_failure, refusal_reason
from coderctl.checks.network import answer_data, answer_evidence, answered_by, resolve_access_url
from coderctl.clients.http import Response
from coderctl.clients.upgrade import Deadline, UpgradeRefused
from coderctl.clients.websocket import open_websocket
from coderctl.context import App
from coderctl.problems import code

TOKEN_ENV = "CODER_SESSION_TOKEN"
ECHO_PATH = "/api/v2/debug/ws"
UPGRADE_FIX = ("pass `Upgrade` and `Connection: upgrade` through every proxy to Coder (ingress-nginx does by "
               "default; check custom snippets and the tunnel)")

LIBS = (  # imported by the runner before the checks start
    "websockets.client", "websockets.frames", "websockets.protocol", "websockets.uri",
)

TOKEN_REJECTED = code(
    "WS-TOKEN-REJECTED", "fail", "The session token was not accepted",
    meaning=f"Coder answered 401 to the WebSocket request made with {TOKEN_ENV}: the token is wrong, expired "
            "or revoked.",
    evidence="Status, who answered; never the token.",
    fix=f"Set {TOKEN_ENV} to a valid session token (coder tokens create), or unset it to probe the relay's "
        "WebSocket instead.",
    check="ws.upgrade")
UPGRADE_REFUSED = code(
    "WS-UPGRADE-REFUSED", "fail", "The WebSocket upgrade was refused",
    meaning="A WebSocket through the access URL got an HTTP answer other than 101: a proxy on the way drops "
            "the Upgrade header, or the request did not reach Coder.",
    evidence="Status, Server header, X-Coder-Build-Version, cf-ray, body, and which hop refused.",
    fix="Pass `Upgrade` and `Connection: upgrade` through every proxy to Coder (ingress-nginx does by default; "
        "check custom snippets and the tunnel).",
    check="ws.upgrade", coder_code="EWS01")
OPEN_FAILED = code(
    "WS-OPEN-FAILED", "fail", "The WebSocket could not be opened",
    meaning="No WebSocket handshake completed: the connection failed, timed out, or the 101 was not a valid "
            "WebSocket handshake.",
    evidence="The URL and the error.",
    fix="See http.healthz for the path to Coder; then pass `Upgrade` and `Connection: upgrade` to Coder.",
    check="ws.upgrade", coder_code="EWS01")
ECHO_FAILED = code(
    "WS-ECHO-FAILED", "fail", "The WebSocket opened but the echo failed",
    meaning="Coder's authenticated echo opened, but the message did not come back: something on the path "
            "breaks WebSocket frames (a buffering proxy).",
    evidence="The URL, handshake time and the error.",
    fix="Find the hop between the client and Coder that breaks WebSocket frames (a buffering or "
        "WebSocket-unaware proxy): compare through the tunnel, the ingress and the Coder Service directly.",
    check="ws.upgrade", coder_code="EWS02")
ECHO_ALTERED = code(
    "WS-ECHO-ALTERED", "fail", "The WebSocket echo came back altered",
    meaning="Coder's authenticated echo returned another message than the one sent: something on the path "
            "alters WebSocket messages.",
    evidence="What was sent and what came back.",
    fix="Find the proxy that rewrites WebSocket payloads between the client and Coder.",
    check="ws.upgrade", coder_code="EWS02")


def _refused(target: str, resp: Response) -> Outcome:
    data = {"url": target, **answer_data(resp)}
    evidence = answer_evidence("GET (Upgrade: websocket)", target, resp)
    if resp.status == 401:
        return found([TOKEN_REJECTED(
            f"{target}: 401 from {resp.hop()}: {TOKEN_ENV} was not accepted", evidence=evidence,
            fix=[f"set {TOKEN_ENV} to a valid session token (coder tokens create), or unset it to probe "
                 "the relay's WebSocket instead"])], "", **data)
    reason = refusal_reason(resp, "websocket")
    return found([UPGRADE_REFUSED(
        f"WebSocket to {target}: 101 expected, got {answered_by(resp)}: {reason} (Coder's EWS01)",
        evidence=[*evidence, f"verdict: {reason}"], fix=[UPGRADE_FIX])], "", **data)


def _open_failed(target: str, why: str) -> Outcome:
    return found([OPEN_FAILED(f"WebSocket to {target}: {why} (Coder's EWS01)",
                              evidence=[f"WebSocket to {target}: {why}"], fix=[UPGRADE_FIX])], "", url=target)


def _relay_websocket(app: App, url: str) -> Outcome:
    """The relay's WebSocket endpoint, through the attempt derp.websocket makes anyway (one connection)."""
    target = url.rstrip("/") + "/derp"
    result = attempt(app, target, "websocket")
    if result.refused is not None:
        return _refused(target, result.refused)
    if result.greeting is None:
        return _open_failed(target, result.error)
    handshake_s = result.greeting.response.elapsed_s
    return ok(f"101 from the relay's WebSocket endpoint in {handshake_s * 1000:.0f} ms (set {TOKEN_ENV} to "
              "test Coder's authenticated echo)", url=target, handshake_s=round(handshake_s, 4),
              authenticated=False)


def _echo(app: App, url: str, token: str) -> Outcome:
    """Coder's authenticated WebSocket echo: open, send one message, get it back."""
    target = url.rstrip("/") + ECHO_PATH
    start = time.monotonic()
    try:
        ws = open_websocket(app.http(), target, headers={"Coder-Session-Token": token})
    except UpgradeRefused as exc:
        return _refused(target, exc.response)
    except Exception as exc:
        return _open_failed(target, describe_failure(exc))
    handshake_s = time.monotonic() - start
    data = {"url": target, "handshake_s": round(handshake_s, 4), "authenticated": True}
    evidence = [f"WebSocket to {target}: 101 in {handshake_s * 1000:.0f} ms"]
    message = f"coderctl-{secrets.token_hex(8)}"
    try:
        ws.deadline = Deadline(app.timeout)
        echo_start = time.monotonic()
        ws.send(message)
        reply = ws.recv()
        echo_s = time.monotonic() - echo_start
    except Exception as exc:
        return found([ECHO_FAILED(
            f"{target}: opened, but the echo failed: {describe_failure(exc)} (Coder's EWS02)",
            evidence=[*evidence, f"sent {message!r}; then: {describe_failure(exc)}"],
            fix=["something between the client and Coder breaks WebSocket frames (buffering proxy?)"])],
            "", **data)
    finally:
        ws.close()
    if reply != message:
        return found([ECHO_ALTERED(
            f"{target}: opened, but the echo came back as {str(reply)[:40]!r} (Coder's EWS02)",
            evidence=[*evidence, f"sent {message!r}", f"received {str(reply)[:80]!r}"],
            fix=["something between the client and Coder alters WebSocket messages"])], "", **data)
    return ok(f"authenticated echo: handshake {handshake_s * 1000:.0f} ms, echo {echo_s * 1000:.1f} ms",
              echo_s=round(echo_s, 4), **data)


@check("ws.upgrade", "network", "A WebSocket opens through the access URL", uses_cluster=False, modules=LIBS)
def ws_upgrade(app: App) -> Outcome:
    """With CODER_SESSION_TOKEN: Coder's authenticated echo (/api/v2/debug/ws, the endpoint of its own
    health check) must open and echo a message; without: the relay's WebSocket endpoint (/derp,
    subprotocol derp) must open. Reports the handshake time."""
    url = resolve_access_url(app)
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return _relay_websocket(app, url)
    app.redact.add(token)
    return _echo(app, url, token)
