from __future__ import annotations

import click


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash:  coderctl completion bash > /etc/bash_completion.d/coderctl
    zsh:   coderctl completion zsh > "${fpath[1]}/_coderctl"
    fish:  coderctl completion fish > ~/.config/fish/completions/coderctl.fish

    Values are completed too: --only, --skip, --profile and --context.
    """
    app = click.get_current_context().obj
    if app.output == "json":
        from coderctl import render

        render.emit(app, "completion", shell=shell, script=completion_script(shell))
        return
    click.echo(completion_script(shell), nl=False)


def completion_script(shell: str) -> str:
    from click.shell_completion import get_completion_class

    from coderctl.cli import cli

    cls = get_completion_class(shell)
    if cls is None:
        raise click.BadParameter(f"unsupported shell {shell}")
    return cls(cli, {}, "coderctl", "_CODERCTL_COMPLETE").source()
