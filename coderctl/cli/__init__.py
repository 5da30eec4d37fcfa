"""The command line: click only. Each command lives in its own package and calls domain code."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from coderctl import __version__
from coderctl.cli.options import TIMEOUT

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--config", "config_path", envvar="CODERCTL_CONFIG", metavar="PATH",
              help="configuration file [default: ./coderctl.toml, else $XDG_CONFIG_HOME/coderctl/config.toml]")
@click.option("--profile", envvar="CODERCTL_PROFILE", metavar="NAME", help="profile of the configuration file")
@click.option("--kubeconfig", metavar="PATH", help="kubeconfig file [env: KUBECONFIG]")
@click.option("--context", "kube_context", metavar="NAME", help="kubeconfig context")
@click.option("-n", "--namespace", metavar="NAME", help="namespace of Coder [default: coder]")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), envvar="CODERCTL_OUTPUT", default="text",
              show_default=True, help="output format")
@click.option("--timeout", type=TIMEOUT, metavar="SECONDS", help="per network operation [default: 5]")
@click.option("-v", "--verbose", count=True, help="more detail (timings, data)")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.option("--no-color", is_flag=True, help="plain output (also NO_COLOR)")
@click.version_option(__version__, "--version", prog_name="coderctl")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, profile: str | None, kubeconfig: str | None,
        kube_context: str | None, namespace: str | None, output: str, timeout: float | None, verbose: int,
        debug: bool, no_color: bool) -> None:
    """Day-2 operations for a self-hosted Coder deployment on Kubernetes.

    Exit codes: 0 fine, 1 problems found or operation failed (and was put back), 2 usage or configuration
    error, 3 something needs a person (the output says what).
    """
    from coderctl.context import App
    from coderctl.profile import FIELDS, load_settings
    from coderctl.redact import Redactor

    redact = ctx.obj if isinstance(ctx.obj, Redactor) else Redactor()
    _log_through(ctx, redact, verbose)
    if timeout is not None and timeout <= 0:
        raise click.BadParameter("must be a positive number of seconds", param_hint="--timeout")
    settings = load_settings(
        config=config_path, profile=profile,
        flags={"kubeconfig": kubeconfig, "context": kube_context, "namespace": namespace, "timeout": timeout},
    )
    redact.add(*(str(getattr(settings, f.name) or "") for f in FIELDS if f.secret))
    color = not no_color and "NO_COLOR" not in os.environ and output == "text"
    ctx.obj = App(settings=settings, output=output, verbose=verbose, debug=debug, color=color, redact=redact)


def _log_through(ctx: click.Context, redact: Callable[[str], str], verbose: int) -> None:
    """Log records go to stderr through the run's redactor (INFO with -v, DEBUG with -vv) until the run
    ends."""
    import logging

    from coderctl.redact import log_filter

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(log_filter(redact))
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    if verbose:
        root.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(level)

    ctx.call_on_close(restore)


def _register() -> None:
    from coderctl.cli.backup import backup
    from coderctl.cli.completion import completion
    from coderctl.cli.config import config
    from coderctl.cli.probe import probe
    from coderctl.cli.verify import verify

    for command in (verify, probe, backup, config, completion):
        cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> Any:
    """Entry point: maps every expected failure to one line on stderr and its exit code. Everything it
    prints passes through the run's redactor, the one its App gets (created here, so that an error raised
    before the App exists is still masked by shape); `--debug` adds the redacted traceback."""
    from coderctl.errors import CoderctlError, ExitCode
    from coderctl.redact import Redactor

    redact = Redactor()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("CODERCTL_DEBUG"))
    try:
        code = cli.main(args=args, prog_name="coderctl", standalone_mode=False, obj=redact)
    except click.exceptions.Abort:
        click.echo("coderctl: aborted", err=True)
        code = ExitCode.PROBLEMS
    except click.ClickException as exc:
        shown = io.StringIO()
        exc.show(file=shown)
        click.echo(redact(shown.getvalue()), err=True, nl=False)
        code = exc.exit_code
    except CoderctlError as exc:
        if debug:
            _traceback(redact)
        click.echo(redact(f"coderctl: error: {exc}"), err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("coderctl: interrupted", err=True)
        code = ExitCode.PROBLEMS
    except Exception as exc:
        if debug:
            _traceback(redact)
            click.echo(redact(f"coderctl: internal error: {type(exc).__name__}: {exc}"), err=True)
        else:
            click.echo(redact(f"coderctl: internal error: {type(exc).__name__}: {exc} (run with --debug for "
                              "the traceback)"), err=True)
        code = ExitCode.PROBLEMS
    sys.exit(int(code or 0))


def _traceback(redact: Callable[[str], str]) -> None:
    """The exception being handled, with its chain, redacted."""
    import traceback

    click.echo(redact(traceback.format_exc()).rstrip("\n"), err=True)
