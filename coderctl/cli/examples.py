"""What each command's `--help` adds to the command's own text: examples, the environment variable behind
each option, and completion of option values. Applied when a command is loaded (`coderctl.cli._prepare`),
so that the command modules stay plain click."""

from __future__ import annotations

import click

EXAMPLES: dict[str, tuple[str, ...]] = {
    "verify": (
        "coderctl verify",
        "coderctl verify -n coder --context prod -o json",
        "coderctl verify --only network --access-url https://coder.example.org",
        "coderctl verify --skip derp.hold --strict",
        "coderctl verify --list",
    ),
    "probe derp": ("coderctl probe derp", "coderctl probe derp --count 10 --hold 120",
                   "coderctl probe derp --resolve coder.example.org:443:10.0.0.5"),
    "probe websocket": ("coderctl probe websocket", "coderctl probe websocket --access-url https://coder.example.org"),
    "probe dns": ("coderctl probe dns", "coderctl probe dns --nameserver 1.1.1.1 --nameserver 8.8.8.8",
                  "coderctl probe dns --wildcard-url '*.example.org'"),
    "probe http": ("coderctl probe http", "coderctl probe http --timeout 2",
                   "coderctl probe http --resolve coder.example.org:443:10.0.0.5 --ca-file ca.pem"),
    "backup create": ("coderctl backup create", "coderctl backup create --output-dir /srv/backups --compress 6",
                      "coderctl backup create --via direct --db-address 127.0.0.1:5432"),
    "backup verify": ("coderctl backup verify FILE",
                      "coderctl backup verify FILE --restore-to postgresql://scratch@127.0.0.1:5432/scratch"),
    "backup list": ("coderctl backup list", "coderctl backup list /srv/backups --quick",
                    "coderctl -o json backup list"),
    "backup prune": ("coderctl backup prune --keep-last 3 --keep-daily 7 --dry-run",
                     "coderctl backup prune --keep-weekly 4 --keep-monthly 6"),
    "backup restore": ("coderctl backup restore FILE", "coderctl backup restore FILE --yes",
                       "coderctl backup restore --list"),
    "config show": ("coderctl config show", "coderctl --profile staging config show --discover",
                    "coderctl config show -o json"),
    "config init": ("coderctl config init", "coderctl config init --path ./coderctl.toml --profile-name home"),
    "completion": ("coderctl completion bash > /etc/bash_completion.d/coderctl",
                   "coderctl completion zsh > \"${fpath[1]}/_coderctl\""),
    "doctor": ("coderctl doctor", "coderctl doctor --since 2h --bundle ./coder-support.tar.gz",
               "coderctl -o json doctor"),
    "rotate-secrets": ("coderctl rotate-secrets --dry-run", "coderctl rotate-secrets --target all --yes",
                       "coderctl rotate-secrets --list"),
}

OPTION_FIELDS = {"via": "db_via", "output_dir": "backup_dir", "to": "backup_destination"}
"""Options named otherwise than the setting they override."""


def describe_options(command: click.Command) -> None:
    """Show the environment variable of every option that has one, and complete --only and --skip."""
    from coderctl.profile import FIELDS_BY_NAME

    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        f = FIELDS_BY_NAME.get(OPTION_FIELDS.get(param.name or "", param.name or ""))
        env = param.envvar if isinstance(param.envvar, str) else f.env_var if f is not None else None
        if env and f"env: {env}" not in (param.help or ""):
            param.help = f"{param.help or ''} [env: {env}]".strip()
        if param.name in COMPLETERS and param._custom_shell_complete is None:
            param._custom_shell_complete = COMPLETERS[param.name]


def _complete_categories(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from coderctl.checks.registry import all_checks

    return sorted({c.category for c in all_checks() if c.category.startswith(incomplete)})


def _complete_check_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from coderctl.checks.registry import all_checks

    return [c.id for c in all_checks() if c.id.startswith(incomplete)]


COMPLETERS = {"only": _complete_categories, "skip": _complete_check_ids}
