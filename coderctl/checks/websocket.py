"""A WebSocket through the access URL, as browsers and the CLI open them (Coder's EWS01/EWS02)."""

from __future__ import annotations

import os
import secrets
import time

from coderctl.checks.base import Outcome, check, fail, ok
from coderctl.checks.derp import attempt, describe_failure, refusal_reason
from coderctl.checks.network import answer_data, answered_by, resolve_access_url
from coderctl.clients.http import Response
from coderctl.clients.upgrade import Deadline, UpgradeRefused
from coderctl.clients.websocket import open_websocket
from coderctl.context import App

TOKEN_ENV = "CODER_SESSION_TOKEN"
ECHO_PATH = "/api/v2/debug/ws"
UPGRADE_FIX = ("pass `Upgrade` and `Connection: upgrade` through every proxy to Coder (ingress-nginx does by "
               "default; check custom snippets and the tunnel)")

LIBS = (  # imported by the runner before the checks start
    "websockets.client", "websockets.frames", "websockets.protocol", "websockets.uri",
)


def _refused(target: str, resp: Response) -> Outcome:
    data = {"url": target, **answer_data(resp)}
    if resp.status == 401:
        return fail(f"{target}: 401 from {resp.hop()}: {TOKEN_ENV} was not accepted",
                    f"set {TOKEN_ENV} to a valid session token (coder tokens create), or unset it to probe "
                    "the relay's WebSocket instead", **data)
    return fail(f"WebSocket to {target}: 101 expected, got {answered_by(resp)}: "
                f"{refusal_reason(resp, 'websocket')} (Coder's EWS01)", UPGRADE_FIX, **data)


def _relay_websocket(app: App, url: str) -> Outcome:
    """The relay's WebSocket endpoint, through the attempt derp.websocket makes anyway (one connection)."""
    target = url.rstrip("/") + "/derp"
    result = attempt(app, target, "websocket")
    if result.refused is not None:
        return _refused(target, result.refused)
    if result.greeting is None:
        return fail(f"WebSocket to {target}: {result.error} (Coder's EWS01)", UPGRADE_FIX, url=target)
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
        return fail(f"WebSocket to {target}: {describe_failure(exc)} (Coder's EWS01)", UPGRADE_FIX,
                    url=target)
    handshake_s = time.monotonic() - start
    data = {"url": target, "handshake_s": round(handshake_s, 4), "authenticated": True}
    message = f"coderctl-{secrets.token_hex(8)}"
    try:
        ws.deadline = Deadline(app.timeout)
        echo_start = time.monotonic()
        ws.send(message)
        reply = ws.recv()
        echo_s = time.monotonic() - echo_start
    except Exception as exc:
        return fail(f"{target}: opened, but the echo failed: {describe_failure(exc)} (Coder's EWS02)",
                    "something between the client and Coder breaks WebSocket frames (buffering proxy?)",
                    **data)
    finally:
        ws.close()
    if reply != message:
        return fail(f"{target}: opened, but the echo came back as {str(reply)[:40]!r} (Coder's EWS02)",
                    "something between the client and Coder alters WebSocket messages", **data)
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
