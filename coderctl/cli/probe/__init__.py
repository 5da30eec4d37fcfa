"""`coderctl probe derp|websocket|dns|http`: one part of the network path, with the checks verify runs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from coderctl.cli.options import HOLD, network_options
from coderctl.context import App, DerpOptions

F = TypeVar("F", bound=Callable[..., Any])

DERP = ("derp.relay", "derp.upgrade", "derp.websocket", "derp.login", "derp.keys", "derp.latency-check",
        "derp.hold", "derp.verdict")
WEBSOCKET = ("ws.upgrade",)
DNS = ("dns.access-host", "dns.wildcard", "dns.consistency", "dns.ownership")
HTTP = ("http.healthz", "http.buildinfo", "tls.access-url", "http.wildcard", "tls.wildcard")


def _strict(fn: F) -> F:
    return click.option("--strict", is_flag=True, help="warnings fail too (exit 1)")(fn)  # type: ignore[return-value]


def _wildcard_url(fn: F) -> F:
    """--wildcard-url, applied on top of the profile (CODERCTL_WILDCARD_URL, wildcard_url)."""

    @click.option("--wildcard-url", metavar="PATTERN",
                  help="wildcard host pattern such as *.example.org [default: discovered from "
                       "CODER_WILDCARD_ACCESS_URL]")
    @functools.wraps(fn)
    def wrapper(*args: Any, wildcard_url: str | None, **kwargs: Any) -> Any:
        from coderctl.profile import override

        app = click.get_current_context().find_object(App)
        if app is not None:
            override(app.settings, {"wildcard_url": wildcard_url})
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _run(app: App, name: str, ids: tuple[str, ...], strict: bool, extra_time: float = 0.0) -> int:
    from coderctl.checks.registry import all_checks
    from coderctl.cli.checkrun import run_and_report

    checks = [c for c in all_checks() if c.id in ids]
    return run_and_report(app, f"probe {name}", checks, check_timeout=2 * app.timeout + 1 + extra_time,
                          deadline=6 * app.timeout + extra_time, strict=strict)


@click.group()
def probe() -> None:
    """Probe one part of the path Internet → Cloudflare → tunnel → NGINX → Coder.

    Each probe runs the matching checks of `coderctl verify` (categories network and dns) concurrently, with
    the same output and exit codes: 0 fine, 1 problems found, 2 usage error.
    """


@probe.command()
@click.option("--count", type=click.IntRange(1, 50), default=5, show_default=True, metavar="N",
              help="connections for the key comparison, and requests for the latency check")
@click.option("--hold", type=HOLD, default=0, show_default=True, metavar="SECONDS",
              help="keep one relay connection idle this long and report if something closes it (0: off)")
@_strict
@network_options
@click.pass_obj
def derp(app: App, count: int, hold: float, strict: bool) -> int:
    """DERP relay handshake over Upgrade: DERP and over WebSocket, latency, key consistency.

    In detail: 426 without upgrade, both greetings (101, headers, ServerKey frame), a login and ping, the
    server key on --count connections, /derp/latency-check, an idle --hold, and the verdict."""
    app.derp = DerpOptions(count=count, hold=hold)
    return _run(app, "derp", DERP, strict, extra_time=hold)


@probe.command()
@_strict
@network_options
@click.pass_obj
def websocket(app: App, strict: bool) -> int:
    """WebSocket upgrade through the access URL.

    Coder's authenticated echo when CODER_SESSION_TOKEN is set, else the relay's WebSocket endpoint; the
    handshake time."""
    return _run(app, "websocket", WEBSOCKET, strict)


@probe.command()
@_strict
@_wildcard_url
@network_options
@click.pass_obj
def dns(app: App, strict: bool) -> int:
    """Access host and wildcard resolution, CNAME chain, resolver agreement.

    Asks every --nameserver and the zone's authoritative servers (on the first nameserver's port); the
    system resolver too when no nameserver is configured. Also ExternalDNS's ownership TXT records."""
    return _run(app, "dns", DNS, strict)


@probe.command()
@_strict
@_wildcard_url
@network_options
@click.pass_obj
def http(app: App, strict: bool) -> int:
    """HTTP and TLS through the access URL and the wildcard.

    /healthz, build info against the expected version, the access URL's certificate, and a random host
    under the wildcard: answered by Coder, and covered by the certificate."""
    return _run(app, "http", HTTP, strict)
