from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from coderctl.context import App


@click.group()
def config() -> None:
    """Show or create the configuration."""


@config.command()
@click.option("--discover", is_flag=True, help="also ask the cluster for the values it can tell")
@click.pass_obj
def show(app: App, discover: bool) -> int:
    """Print the effective configuration and where each value came from; secrets are masked."""

    from coderctl import render
    from coderctl.config_file import effective

    app.freeze()
    discovered, problems = _discover(app) if discover else ({}, [])
    rows = _with_discovered(effective(app.settings), discovered)
    if app.output == "json":
        render.emit(
            app, "config show", profile=app.settings.profile,
            config_file=str(app.settings.config_path) if app.settings.config_path else None,
            values={r["key"]: {"value": r["value"], "source": r["source"]} for r in rows}, problems=problems)
        return 0
    where = app.settings.config_path or "none found"
    render.say(f"profile: {app.settings.profile}    config file: {where}")
    width = max(len(r["key"]) for r in rows)
    for r in rows:
        value = "(unset)" if r["value"] is None else r["value"]
        if isinstance(value, list):
            value = ", ".join(value) or "(none)"
        render.say(f"  {r['key']:<{width}}  {value}  [{r['source']}]")
    for p in problems:
        render.say(f"could not discover: {p}", err=True)
    return 0


def _with_discovered(rows: list[dict[str, Any]], discovered: dict[str, object]) -> list[dict[str, Any]]:
    """The rows of `config_file.effective`, with what the cluster told for the keys that were unset (source
    "cluster", secrets masked like the rest)."""
    from coderctl.config_file import display_value
    from coderctl.profile import FIELDS_BY_NAME

    return [{**r, "value": display_value(FIELDS_BY_NAME[r["key"]], discovered[r["key"]]), "source": "cluster"}
            if r["key"] in discovered else r for r in rows]


def _discover(app: App) -> tuple[dict[str, object], list[str]]:
    """What the cluster tells for the discoverable keys that are unset, and why some could not be read; the
    run's settings stay as they are (frozen). The keys are asked at once, under one deadline."""
    import time
    from collections.abc import Callable

    from coderctl import discovery
    from coderctl.clients.kube import preload
    from coderctl.concurrent import fan_out

    def infisical(field: str) -> Callable[[App], object]:
        def read(a: App) -> object:
            target = a.cached("infisical-target", lambda: discovery.infisical_target(a))
            if field == "token_secret":
                return "/".join(target.token_secret) if target.token_secret else None
            return getattr(target, field)
        return read

    readers: list[tuple[str, Callable[[App], object]]] = [
        ("access_url", discovery.access_url), ("wildcard_url", discovery.wildcard_url),
        ("database_url", discovery.database_url),
    ]
    readers += [(f"infisical_{f}", infisical(f)) for f in ("host", "environment", "path", "token_secret")]
    wanted = [(key, read) for key, read in readers if not app.settings.values[key].value]
    preload(app.settings.kubeconfig, app.settings.context)  # not on the clock
    deadline = time.monotonic() + 2 * app.timeout + 1
    answers = fan_out(lambda kr: kr[1](app), wanted, deadline=deadline)
    discovered: dict[str, object] = {}
    problems: list[str] = []
    for (key, _), value in zip(wanted, answers, strict=True):
        if isinstance(value, BaseException):
            problems.append(f"{key}: {app.redact(str(value))}")
        elif value:
            discovered[key] = value
    return discovered, problems


@config.command()
@click.option("--path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="where to write [default: $XDG_CONFIG_HOME/coderctl/config.toml]")
@click.option("--profile-name", default="default", show_default=True, help="name of the profile to write")
@click.option("--force", is_flag=True, help="overwrite an existing file")
@click.pass_obj
def init(app: App, path: Path | None, profile_name: str, force: bool) -> None:
    """Write a commented configuration file with the reference deployment's values."""
    import os

    from coderctl import render
    from coderctl.config_file import write_template

    if path is None:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        path = base / "coderctl" / "config.toml"
    write_template(path, profile=profile_name, force=force)
    if app.output == "json":
        render.emit(app, "config init", path=str(path), profile=profile_name)
    else:
        render.say(f"wrote {path}")
