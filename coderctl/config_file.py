"""Writing the commented configuration file of `config init`, and the masked view of `config show`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coderctl.errors import ConfigError, UsageError
from coderctl.fsutil import atomic_write_text
from coderctl.profile import FIELDS, SECTIONS, Field, Settings
from coderctl.redact import mask_url


def toml_value(value: Any) -> str:
    """`value` as TOML, written by a TOML writer (quoting and escaping are its business, not ours)."""
    import tomli_w

    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


def render_template(profile: str = "default") -> str:
    """A commented TOML file holding the reference deployment's values; unset values are commented out.
    Any profile name is written so that it reads back as itself (a quoted key where needed)."""
    import tomli_w

    lines = [
        "# coderctl configuration. Precedence: command-line flag > environment (CODERCTL_<KEY>) > profile >",
        "# built-in default. Several deployments: add more [profiles.NAME] tables and pick one with --profile.",
        f"default_profile = {toml_value(profile)}",
        "",
        tomli_w.dumps({"profiles": {profile: {}}}).rstrip("\n"),
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


def check_profile_name(name: str) -> None:
    if not name.strip():
        raise UsageError("--profile-name must not be empty")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("--profile-name is not valid UTF-8") from None


def write_template(path: Path, *, profile: str, force: bool) -> None:
    """Write the template, mode 0600, atomically; a path that cannot be a file is a configuration error."""
    check_profile_name(profile)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"cannot write {path}: {parent} is a file, not a directory")
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory")
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; use --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, render_template(profile), mode=0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


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
