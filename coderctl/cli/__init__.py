"""The command line: click only. Each command lives in its own package and calls domain code.

Commands are loaded when they run (`LazyGroup`), so `coderctl --help` imports neither a command's module
nor the settings model. Global options are accepted before and after the subcommand, as kubectl does:
every command under the top-level group gets hidden copies of them, and the run's `App` is made when the
leaf command runs, from all of them.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from coderctl import __version__
from coderctl.cli.options import TIMEOUT

if TYPE_CHECKING:
    from coderctl.context import App
    from coderctl.redact import Redactor

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
GLOBALS = "coderctl.globals"


class Lazy(NamedTuple):
    """A command known by name and summary; its module is imported only when the command is used."""

    module: str
    summary: str


COMMANDS: dict[str, Lazy] = {
    "verify": Lazy("coderctl.cli.verify", "Run every read-only check concurrently and report; exit 0 when "
                         "nothing failed, else 1."),
    "doctor": Lazy("coderctl.cli.doctor", "Name the most likely root causes, with evidence and the exact fix; "
                          "exit 0 when nothing is wrong."),
    "probe": Lazy("coderctl.cli.probe", "Probe one part of the path Internet → Cloudflare → tunnel → NGINX → "
                        "Coder."),
    "backup": Lazy("coderctl.cli.backup", "pg_dump backups of the Coder database: create, verify, list, prune, "
                         "restore."),
    "config": Lazy("coderctl.cli.config", "Show or create the configuration."),
    "completion": Lazy("coderctl.cli.completion", "Print the shell completion script for SHELL."),
    "rotate-secrets": Lazy("coderctl.cli.rotate", "Rotate the database passwords across Infisical, the managed "
                                 "Secret, PostgreSQL and Coder."),
    "watch": Lazy("coderctl.cli.watch", "Run the read-only checks on a schedule; serve /metrics, /healthz, /status."),
}
"""The command table; `tests/test_cli_contract.py` checks each summary against the command's own."""


class Run:
    """What `main` knows about the run before and after click parsed it: the redactor every printed error
    passes (the App's), the output format and the command, for the error document of `-o json`. (A plain
    class: dataclasses would import inspect on the `--help` path.)"""

    def __init__(self, output: str = "text") -> None:
        self.output = output
        self.command: str | None = None
        self.started_at = time.time()
        self.start = time.monotonic()
        self._redact: Redactor | None = None

    def redactor(self) -> Redactor:
        if self._redact is None:
            from coderctl.redact import Redactor

            self._redact = Redactor()
        return self._redact


def _global_options(*, leaf: bool) -> list[Callable[[Any], Any]]:
    """The global options: on the top-level group with their defaults and environment variables; on every
    command under it as hidden copies without defaults, whose values, when given, win over those given
    before them (`_remember`)."""

    def opt(*decls: str, **kw: Any) -> Callable[[Any], Any]:
        if leaf:
            name = decls[-1] if not decls[-1].startswith("-") else decls[-1].lstrip("-").replace("-", "_")
            decls = tuple(d for d in decls if d.startswith("-"))
            kw = {k: v for k, v in kw.items() if k not in {"envvar", "default", "show_default"}}
            kw.update(hidden=True, expose_value=False, callback=_remember(name))
            if kw.get("count"):
                kw["default"] = 0
            return click.option(*decls, f"global_{name}", **kw)
        return click.option(*decls, **kw)

    return [
        opt("--config", "config_path", envvar="CODERCTL_CONFIG", metavar="PATH",
            help="configuration file [env: CODERCTL_CONFIG; default: ./coderctl.toml, else "
                 "$XDG_CONFIG_HOME/coderctl/config.toml]"),
        opt("--profile", envvar="CODERCTL_PROFILE", metavar="NAME",
            help="profile of the configuration file [env: CODERCTL_PROFILE]", shell_complete=_complete_profiles),
        opt("--kubeconfig", metavar="PATH", help="kubeconfig file(s), ':'-separated [env: KUBECONFIG]"),
        opt("--context", "kube_context", metavar="NAME", help="kubeconfig context [env: CODERCTL_CONTEXT]",
            shell_complete=_complete_contexts),
        opt("-n", "--namespace", metavar="NAME",
            help="namespace of Coder [env: CODERCTL_NAMESPACE; default: the kubeconfig context's, else coder]"),
        opt("-o", "--output", type=click.Choice(["text", "json"]), envvar="CODERCTL_OUTPUT", default="text",
            help="output format [env: CODERCTL_OUTPUT; default: text]"),
        opt("--timeout", type=TIMEOUT, metavar="SECONDS",
            help="per network operation [env: CODERCTL_TIMEOUT; default: 5]"),
        opt("-v", "--verbose", count=True, help="more detail (timings, data)"),
        opt("--debug", is_flag=True, envvar="CODERCTL_DEBUG", help="show tracebacks [env: CODERCTL_DEBUG]"),
        opt("--no-color", is_flag=True, help="plain output [env: NO_COLOR]"),
    ]


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value in (None, False, 0):
            return
        given = ctx.meta.setdefault(GLOBALS, {})
        given[name] = given.get(name, 0) + value if name == "verbose" else value
        run = ctx.find_object(Run)
        if name == "output" and run is not None:
            run.output = value

    return store


def _complete_profiles(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from coderctl.profile import find_config_file, read_config_file

    try:
        given = ctx.find_root().params.get("config_path") or ctx.meta.get(GLOBALS, {}).get("config_path")
        cfg = read_config_file(find_config_file(given))
    except Exception:
        return []
    return [name for name in cfg.profiles if name.startswith(incomplete)]


def _complete_contexts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from coderctl.clients.kubeconfig import kubeconfig_contexts

    given = ctx.find_root().params.get("kubeconfig") or ctx.meta.get(GLOBALS, {}).get("kubeconfig")
    try:
        names = kubeconfig_contexts(given)
    except Exception:
        return []
    return [name for name in names if name.startswith(incomplete)]


class LazyGroup(click.Group):
    """The top-level group: commands from `COMMANDS`, imported when used. A command whose package is not
    installed (yet) is left out."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, lazy in COMMANDS.items() if _module_present(lazy.module)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        lazy = COMMANDS.get(cmd_name)
        if lazy is None or not _module_present(lazy.module):
            return None
        import importlib

        module = importlib.import_module(lazy.module)
        command = _find_command(module, cmd_name)
        _prepare(command, (cmd_name,))
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name].summary) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_present(module: str) -> bool:
    relative = module.removeprefix("coderctl.cli.").replace(".", os.sep)
    here = Path(__file__).parent
    return (here / relative / "__init__.py").is_file() or (here / f"{relative}.py").is_file()


def _find_command(module: Any, name: str) -> click.Command:
    found = getattr(module, name.replace("-", "_"), None)
    if isinstance(found, click.Command):
        return found
    for value in vars(module).values():
        if isinstance(value, click.Command) and value.name == name:
            return value
    raise LookupError(f"{module.__name__} defines no click command {name!r}")


def _prepare(command: click.Command, path: tuple[str, ...]) -> None:
    """Give every command under `command` the global options; every leaf also its examples, the environment
    variables of its options in its help, value completion, and the App made from all global options when
    it runs."""
    if getattr(command, "_coderctl_prepared", False):
        return
    command._coderctl_prepared = True  # type: ignore[attr-defined]
    taken = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for decorate in _global_options(leaf=True):
        holder = click.Command("holder")
        decorate(holder)
        param = holder.params[0]
        if not taken & {*param.opts, *param.secondary_opts}:
            command.params.append(param)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _prepare(sub, (*path, name))
        return
    if command.callback is None:
        return
    from coderctl.cli.examples import EXAMPLES, describe_options

    describe_options(command)
    lines = [f"  {example}" for example in EXAMPLES.get(" ".join(path), ())]
    note = "Global options (coderctl --help) are accepted here too, e.g. -n NAMESPACE, -o json, --timeout 2."
    command.epilog = "\n\n".join(x for x in (command.epilog, "Examples:\n\n\b\n" + "\n".join(lines) if lines
                                              else None, note) if x)
    command.callback = _with_app(command.callback)


def _with_app(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        ctx.obj = make_app(ctx)
        return callback(*args, **kwargs)

    return run


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS,
             epilog="Examples:\n\n\b\n  coderctl verify\n  coderctl verify -n coder --context prod -o json\n"
                    "  coderctl probe http --timeout 2\n  coderctl config show")
@click.pass_context
def cli(ctx: click.Context, **given: Any) -> None:
    """Day-2 operations for a self-hosted Coder deployment on Kubernetes.

    Exit codes: 0 fine, 1 problems found or operation failed (and was put back), 2 usage or configuration
    error, 3 something needs a person (the output says what). Global options work before or after the
    command.
    """
    ctx.meta[GLOBALS] = {k: v for k, v in given.items() if v not in (None, False)}
    run = ctx.find_object(Run)
    if run is not None and given["output"] == "json":
        run.output = "json"


for _decorate in _global_options(leaf=False):
    _decorate(cli)
click.version_option(__version__, "--version", prog_name="coderctl")(cli)


def make_app(ctx: click.Context) -> App:
    """The run's App, from the global options given before and after the command; the namespace falls back
    to the kubeconfig context's before the built-in default (flag > env > profile > kubeconfig > default)."""
    from coderctl.context import App
    from coderctl.profile import FIELDS, load_settings

    given = ctx.meta.get(GLOBALS, {})
    run = ctx.find_object(Run)
    if run is not None:
        run.command = ctx.command_path.removeprefix(ctx.find_root().info_name or "").strip() or None
    redact = run.redactor() if run is not None else _new_redactor()
    verbose = int(given.get("verbose", 0))
    _log_through(ctx.find_root(), redact, verbose)
    settings = load_settings(
        config=given.get("config_path"), profile=given.get("profile"),
        flags={"kubeconfig": given.get("kubeconfig"), "context": given.get("kube_context"),
               "namespace": given.get("namespace"), "timeout": given.get("timeout")},
    )
    redact.add(*(str(getattr(settings, f.name) or "") for f in FIELDS if f.secret))
    if settings.source("namespace") == "default":
        from coderctl.clients.kubeconfig import context_namespace

        found = context_namespace(settings.kubeconfig, settings.context)
        if found:
            settings.set("namespace", found[0], f"kubeconfig context {found[1]}")
    output = str(given.get("output", "text"))
    color = not given.get("no_color") and "NO_COLOR" not in os.environ and output == "text"
    return App(settings=settings, output=output, verbose=verbose, debug=bool(given.get("debug")), color=color,
               redact=redact)


def _new_redactor() -> Redactor:
    from coderctl.redact import Redactor

    return Redactor()


def _log_through(ctx: click.Context, redact: Callable[[str], str], verbose: int) -> None:
    """Log records go to stderr through the run's redactor, terminal-safe (INFO with -v, DEBUG with -vv),
    until the run ends."""
    import logging

    from coderctl.facts.text import terminal_safe
    from coderctl.redact import log_filter

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(log_filter(lambda text: terminal_safe(redact(text))))
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


def _wants_json(args: list[str]) -> bool:
    """`-o json` as far as it can be told before click parses (for errors in parsing itself)."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-o", "--output") and i + 1 < len(args):
            if args[i + 1] == "json":
                return True
        elif arg in ("-ojson", "--output=json"):
            return True
    return os.environ.get("CODERCTL_OUTPUT") == "json"


def _help_width() -> int:
    """What click's formatter would compute, without importing shutil (a tenth of `--help`'s time)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        width = int(columns)
    else:
        try:
            width = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 80
        except (AttributeError, ValueError, OSError):
            width = 80
    return max(min(width or 80, int(CONTEXT_SETTINGS["max_content_width"])) - 2, 50)


def _debug_requested(args: list[str]) -> bool:
    return "--debug" in args or os.environ.get("CODERCTL_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


_final_collection_skipped = False


def _skip_final_collection() -> None:
    """At exit, CPython garbage-collects every object still alive, most of them the modules' (with the
    Kubernetes client imported, 2 to 3.4 s after `backup create` printed its result on the heavily loaded lab
    machine; 0.2 to 0.3 s with the collection skipped). gc.freeze() from an exit handler moves them out of the
    collector's sight. Nothing a command still needs is left to that collection: files and sockets that matter
    are closed where they are used, temporary files and directories are removed by their own exit handlers
    (registered later, so run earlier), and the interpreter flushes the standard streams itself."""
    global _final_collection_skipped
    if not _final_collection_skipped:
        import atexit
        import gc

        atexit.register(gc.freeze)
        _final_collection_skipped = True


def main(argv: list[str] | None = None) -> Any:
    """Entry point: maps every expected failure to one line on stderr and its exit code (and, with
    `-o json`, to one error document on stdout). Everything it prints passes through the run's redactor,
    the one its App gets (so that an error raised before the App exists is still masked by shape);
    `--debug` adds the redacted traceback and changes nothing else."""
    args = sys.argv[1:] if argv is None else argv
    _skip_final_collection()
    run = Run(output="json" if _wants_json(args) else "text")
    cli.context_settings["terminal_width"] = _help_width()
    try:
        code = cli.main(args=args, prog_name="coderctl", standalone_mode=False, obj=run)
    except click.exceptions.Abort:
        code = _fail(run, 1, "aborted", prefix="coderctl: ")
    except click.exceptions.NoArgsIsHelpError as exc:
        run.command = exc.ctx.command_path.removeprefix("coderctl").strip() or None
        if run.output == "json":
            code = _fail(run, exc.exit_code, f"missing command (see '{exc.ctx.command_path} --help')")
        else:
            click.echo(exc.format_message(), err=True)
            code = exc.exit_code
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            run.command = run.command or exc.ctx.command_path.removeprefix("coderctl").strip() or None
            hint = f" (see '{exc.ctx.command_path} --help')"
        code = _fail(run, exc.exit_code, " ".join(exc.format_message().split()) + hint)
    except KeyboardInterrupt:
        code = _fail(run, 1, "interrupted", prefix="coderctl: ")
    except Exception as exc:
        from coderctl.errors import CoderctlError

        if isinstance(exc, CoderctlError):
            code = _fail(run, int(exc.exit_code), str(exc), traceback=_debug_requested(args))
        else:
            hint = "" if _debug_requested(args) else " (run with --debug for the traceback)"
            code = _fail(run, 1, f"{type(exc).__name__}: {exc}{hint}", prefix="coderctl: internal error: ",
                         traceback=_debug_requested(args))
    sys.exit(int(code or 0))


def _fail(run: Run, code: int, message: str, *, prefix: str = "coderctl: error: ", traceback: bool = False) -> int:
    """One redacted line on stderr (after the redacted traceback, with --debug), and with `-o json` the error
    document on stdout: the envelope with `error: {code, message}`."""
    redact = run.redactor()
    if traceback:
        import traceback as tb

        click.echo(_printable(redact(tb.format_exc())).rstrip("\n"), err=True)
    message = _printable(redact(message))
    click.echo(f"{prefix}{message}", err=True)
    if run.output == "json":
        from datetime import datetime

        from coderctl import render

        started_at = datetime.fromtimestamp(run.started_at).astimezone()
        document = render.envelope(run.command or "", started_at, time.monotonic() - run.start,
                                   error={"code": code, "message": message})
        document["command"] = run.command
        render.print_json(document)
    return code


def _printable(text: str) -> str:
    from coderctl.facts.text import terminal_safe

    return terminal_safe(text)
