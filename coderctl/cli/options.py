"""Options shared by several commands."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class Seconds(click.ParamType):
    """A finite number of seconds within [low, high]: click's FloatRange lets `nan` through (every
    comparison with it is false) and `inf`, and neither means anything as a duration."""

    name = "seconds"

    def __init__(self, low: float, high: float, *, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        import math

        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        below = number <= self.low if self.low_open else number < self.low
        if below or number > self.high:
            low = f"more than {self.low:g}" if self.low_open else f"at least {self.low:g}"
            self.fail(f"{value!r}: must be {low} and at most {self.high:g} seconds", param, ctx)
        return number

    def __repr__(self) -> str:
        return f"Seconds({self.low:g}, {self.high:g})"


class CompressionChoice(click.ParamType):
    """backup create --compress: auto, a zlib level (as before pg_dump 16) or pg_dump 16's METHOD[:LEVEL]."""

    name = "compression"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from coderctl.ops.compression import Compression, parse

        if isinstance(value, Compression):
            return value
        try:
            return parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[click.shell_completion.CompletionItem]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(v) for v in ("auto", "zstd:1", "gzip:1", "lz4", "none", "1", "6")
                if v.startswith(incomplete)]


TIMEOUT = Seconds(0, 3600, low_open=True)
"""--timeout: per network operation; a day of verify at most (its deadline is 6 x --timeout)."""
HOLD = Seconds(0, 86400)
"""probe derp --hold: 0 (off) up to a day."""
DEADLINE = Seconds(0.1, 86400)
"""verify --deadline."""


def network_options(fn: F) -> F:
    """--access-url, --resolve, --nameserver, --ca-file, --insecure: applied on top of the profile."""

    @click.option("--access-url", metavar="URL", envvar="CODERCTL_ACCESS_URL",
                  help="Coder access URL [default: discovered from CODER_ACCESS_URL]")
    @click.option("--resolve", multiple=True, metavar="HOST:PORT:ADDRESS",
                  help="connect to ADDRESS for HOST:PORT, keeping Host and SNI (like curl); HOST may be *.domain")
    @click.option("--nameserver", multiple=True, metavar="ADDRESS[:PORT]", help="DNS server to ask (repeatable)")
    @click.option("--ca-file", type=click.Path(dir_okay=False), metavar="PATH",
                  help="CA bundle to verify the access URL's certificate")
    @click.option("--insecure", is_flag=True, default=None, help="do not verify TLS certificates")
    @functools.wraps(fn)
    def wrapper(*args: Any, access_url: str | None, resolve: tuple[str, ...], nameserver: tuple[str, ...],
                ca_file: str | None, insecure: bool | None, **kwargs: Any) -> Any:
        from coderctl.profile import override

        app = click.get_current_context().find_object(_app_type())
        assert app is not None, "network_options needs the App on the click context"
        override(app.settings, {"access_url": access_url, "resolve": resolve, "nameserver": nameserver,
                                "ca_file": ca_file, "insecure": insecure})
        validate_network(app.settings)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _app_type() -> type:
    from coderctl.context import App

    return App


def validate_network(settings: Any) -> None:
    """Malformed network options are usage errors before anything runs, not failed checks."""
    from pathlib import Path

    from coderctl.clients.dns import Nameserver
    from coderctl.clients.http import Resolver, Target
    from coderctl.errors import UsageError

    Resolver.parse(settings.resolve)
    for ns in settings.nameserver:
        Nameserver.parse(ns)
    if settings.access_url:
        Target.parse(settings.access_url)
    if settings.ca_file and not Path(settings.ca_file).is_file():
        raise UsageError(f"--ca-file {settings.ca_file}: no such file")
