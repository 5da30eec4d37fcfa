"""Writing the commented configuration file of `config init`, and the masked view of `config show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coderctl.fsutil import atomic_write_text
from coderctl.errors import ConfigError
from coderctl.profile import FIELDS, SECTIONS, Field, Settings
from coderctl.redact import mask_url


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)


def render_template(profile: str = "default") -> str:
    """A commented TOML file holding the reference deployment's values; unset values are commented out."""
    lines = [
        "# coderctl configuration. Precedence: command-line flag > environment (CODERCTL_<KEY>) > profile >",
        "# built-in default. Several deployments: add more [profiles.NAME] tables and pick one with --profile.",
        f'default_profile = "{profile}"',
        "",
        f"[profiles.{profile}]",
    ]
    for section, title in SECTIONS.items():
        lines += ["", f"# --- {title} ---"]
        for f in (f for f in FIELDS if f.section == section):
            lines.append(f"# {f.help} (env {f.env_var})")
            if f.default is None or f.secret:
                example = "postgresql://coder:PASSWORD@coder-coder-postgresql:5432/coder?sslmode=disable" \
                    if f.name == "database_url" else ""
                lines.append(f"# {f.name} = {toml_value(example)}")
            else:
                lines.append(f"{f.name} = {toml_value(f.default)}")
    return "\n".join(lines) + "\n"


def write_template(path: Path, *, profile: str, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; use --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_template(profile), mode=0o600)


def display_value(f: Field, value: Any) -> Any:
    if value is None:
        return None
    if f.secret:
        return mask_url(str(value)) if "://" in str(value) else "***"
    return value


def effective(settings: Settings) -> list[dict[str, Any]]:
    return [
        {"key": f.name, "value": display_value(f, settings.values[f.name].value),
         "source": settings.values[f.name].source, "section": f.section}
        for f in FIELDS
    ]
