"""Rendering results: text with rich, or the JSON envelope. The only code that prints results."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import datetime, UTC
from typing import IO, TYPE_CHECKING, Any

from coderctl import __version__
from coderctl.checks.base import CATEGORIES, CheckResult, Status
from coderctl.facts.text import terminal_safe

if TYPE_CHECKING:
    from coderctl.context import App
    from coderctl.doctor.model import Finding

MARKS = {
    Status.OK: ("✓", "green"),
    Status.WARN: ("!", "yellow"),
    Status.FAIL: ("✗", "red"),
    Status.SKIP: ("-", "dim"),
    Status.ERROR: ("E", "magenta"),
}


def summary(results: list[CheckResult]) -> dict[str, int]:
    counts = Counter(r.status for r in results)
    return {s.value: counts.get(s, 0) for s in Status}


def envelope(command: str, started_at: datetime, duration_s: float, **body: Any) -> dict[str, Any]:
    return {
        "coderctl": __version__,
        "command": command,
        "started_at": started_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(duration_s, 3),
        **body,
    }


def document(app: App, command: str, **body: Any) -> dict[str, Any]:
    """The JSON envelope of a command's result: the one builder every command uses. Its body passes the
    run's redactor as data, and its duration runs from the command's start."""
    import time

    redacted = app.redact.deep(body)
    assert isinstance(redacted, dict)
    return envelope(command, app.started_at, time.monotonic() - app.started, **redacted)


def emit(app: App, command: str, **body: Any) -> None:
    print_json(document(app, command, **body))


def print_json(document: dict[str, Any], stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    out.flush()


class SafeConsole:
    """A rich Console that prints text only after escaping what a server could have put in it to drive the
    terminal (facts/text.py); coderctl's own styling is added by rich afterwards, so it survives."""

    def __init__(self, con: Any) -> None:
        self._con = con

    @property
    def is_terminal(self) -> bool:
        return bool(self._con.is_terminal)

    def print(self, text: str, *, markup: bool = True) -> None:
        self._con.print(terminal_safe(text), markup=markup)


def console(*, color: bool, stream: IO[str] | None = None) -> SafeConsole:
    """A rich Console: colour only on a terminal and without NO_COLOR; plain text when piped."""
    from rich.console import Console

    return SafeConsole(Console(file=stream or sys.stdout, no_color=not color, highlight=False, soft_wrap=True,
                               emoji=False, force_terminal=None if color else False))


def say(text: str, *, err: bool = False, nl: bool = True) -> None:
    """One line of text output outside the rich renderers, made terminal-safe like them."""
    import click

    click.echo(terminal_safe(text), err=err, nl=nl)


def _plain_mark(status: Status) -> str:
    return f"[{status.value}]".ljust(7)


def _print_row(con: Any, *, fancy: bool, mark: str, style: str, plain_mark: str, name: str, detail: str,
               suffix: str = "") -> None:
    """One result line (mark, name, first line of the detail), then the detail's further lines indented."""
    from rich.markup import escape

    first, *rest = detail.splitlines() or [""]
    if fancy:
        con.print(f"  [{style}]{mark}[/{style}] {name}  {escape(first)}[dim]{suffix}[/dim]")
    else:
        con.print(f"  {plain_mark} {name}  {first}{suffix}", markup=False)
    for line in rest:
        con.print(f"      {line}", markup=False)


def print_results(
    command: str, results: list[CheckResult], duration_s: float, *, color: bool, verbose: int = 0,
    stream: IO[str] | None = None,
) -> None:
    con = console(color=color, stream=stream)
    fancy = con.is_terminal and color
    width = max((len(r.id) for r in results), default=10)
    by_cat: dict[str, list[CheckResult]] = {}
    for r in results:
        by_cat.setdefault(r.category, []).append(r)
    for cat in [c for c in CATEGORIES if c in by_cat] + [c for c in by_cat if c not in CATEGORIES]:
        con.print(f"[bold]{cat}[/bold]" if fancy else cat)
        for r in by_cat[cat]:
            mark, style = MARKS[r.status]
            suffix = f" ({r.duration_s:.2f}s)" if verbose else ""
            if r.problems and r.status in (Status.WARN, Status.FAIL, Status.ERROR):
                _print_problems(con, r, fancy=fancy, mark=mark, style=style, name=r.id.ljust(width), suffix=suffix,
                                verbose=verbose)
                continue
            _print_row(con, fancy=fancy, mark=mark, style=style, plain_mark=_plain_mark(r.status),
                       name=r.id.ljust(width), detail=r.detail or "", suffix=suffix)
            if r.remediation and r.status in (Status.WARN, Status.FAIL, Status.ERROR):
                _print_fix(con, r.remediation, fancy=fancy)
    counts = summary(results)
    parts = [f"{counts[s.value]} {s.value}" for s in Status]
    con.print(f"{', '.join(parts)} in {duration_s:.2f}s", markup=False)


def _print_fix(con: Any, text: str, *, fancy: bool, indent: str = "      ") -> None:
    from rich.markup import escape

    prefix = "[dim]→ fix:[/dim] " if fancy else "-> fix: "
    con.print(f"{indent}{prefix}{escape(text) if fancy else text}", markup=fancy)


def _print_problems(con: Any, r: CheckResult, *, fancy: bool, mark: str, style: str, name: str, suffix: str,
                    verbose: int) -> None:
    """A check with problems: one line per problem with its code, then its fix lines (a fix shared with an
    earlier problem of the same check is not repeated); with -v its evidence too. Further lines of the detail
    (log lines, say) follow at the end."""
    seen: set[str] = set()
    _, *rest = (r.detail or "").splitlines() or [""]
    for i, problem in enumerate(r.problems):
        line = f"[{problem.code}] {problem.message}"
        if i == 0:
            _print_row(con, fancy=fancy, mark=mark, style=style, plain_mark=_plain_mark(r.status), name=name,
                       detail=line, suffix=suffix)
        else:
            con.print(f"      {line}", markup=False)
        if verbose:
            for evidence in problem.evidence:
                con.print(f"        evidence: {evidence}", markup=False)
        for fix in problem.fix:
            if fix not in seen:
                seen.add(fix)
                _print_fix(con, fix, fancy=fancy, indent="        ")
    for line in rest:
        con.print(f"      {line}", markup=False)


# -- operations (backup, restore): steps, results, tables, progress ----------------------------------------

STEP_MARKS = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "failed": ("✗", "red"), "skipped": ("-", "dim"),
              "interrupted": ("✗", "red"), "running": ("…", "yellow")}


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600:.0f}h"
    return f"{seconds // 86400:.0f}d"


def print_steps(steps: list[dict[str, Any]], *, color: bool, summary: list[str],
                stream: IO[str] | None = None) -> None:
    """An operation in text: one line per step, then a few summary lines."""

    con = console(color=color, stream=stream)
    fancy = con.is_terminal and color
    width = max((len(s["name"]) for s in steps), default=8)
    for s in steps:
        mark, style = STEP_MARKS.get(s["status"], ("?", "dim"))
        _print_row(con, fancy=fancy, mark=mark, style=style, plain_mark=f"[{s['status']}]".ljust(9),
                   name=s["name"].ljust(width), detail=s.get("detail") or "")
    for line in summary:
        con.print(line, markup=False)


def print_table(headers: list[str], rows: list[list[str]], *, color: bool, stream: IO[str] | None = None,
                empty: str = "nothing to show") -> None:
    con = console(color=color, stream=stream)
    if not rows:
        con.print(empty, markup=False)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    con.print(f"[bold]{line}[/bold]" if con.is_terminal and color else line, markup=con.is_terminal and color)
    for r in rows:
        con.print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), markup=False)


class TransferProgress:
    """Bytes, rate and elapsed time on stderr while a transfer runs; only on a terminal, never in JSON mode.

    `update(done)` is cheap enough to call for every chunk and safe from any thread.
    """

    def __init__(self, label: str, total: int | None = None, *, enabled: bool) -> None:
        self._progress: Any = None
        self._task: Any = None
        if not (enabled and sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TransferSpeedColumn)

        columns: list[Any] = [TextColumn("{task.description}"), DownloadColumn(), TransferSpeedColumn(),
                              TimeElapsedColumn()]
        if total:
            columns.insert(1, BarColumn())
        self._progress = Progress(*columns, console=Console(file=sys.stderr), transient=True)
        self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> TransferProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done)

    @property
    def callback(self) -> Any:
        return self.update if self._progress is not None else None


# -- doctor: findings first, then a compact count of the checks ---------------------------------------------

FINDING_MARKS = {"critical": ("✗", "bold red"), "fail": ("✗", "red"), "error": ("E", "magenta"),
                 "warn": ("!", "yellow")}


def print_findings(findings: list[Finding], results: list[CheckResult], duration_s: float, *, color: bool,
                   verbose: int = 0, stream: IO[str] | None = None) -> None:
    """Each finding: severity, code and title; why (the chain), one line of evidence (all with -v), the fix
    lines, and the checks folded under it. Then one line counting the checks."""
    from rich.markup import escape

    con = console(color=color, stream=stream)
    fancy = con.is_terminal and color
    for f in findings:
        mark, style = FINDING_MARKS.get(f.severity, ("?", "bold"))
        head = f"{f.severity.upper()} {f.code}"
        if fancy:
            con.print(f"[{style}]{mark} {head}[/{style}]  [bold]{escape(f.title)}[/bold]")
        else:
            con.print(f"{mark} {head}  {f.title}", markup=False)
        if f.chain:
            con.print(f"    why: {f.chain}", markup=False)
        for line in f.evidence if verbose else f.evidence[:1]:
            con.print(f"    evidence: {line}", markup=False)
        if not verbose and len(f.evidence) > 1:
            con.print(f"    ({len(f.evidence) - 1} more evidence lines with -v)", markup=False)
        for i, line in enumerate(f.fix):
            con.print(f"    {'fix: ' if i == 0 else '     '}{line}", markup=False)
        involved = [*f.checks, *f.consequences]
        if f.consequences:
            con.print(f"    explains: {', '.join(f.consequences)}", markup=False)
        elif involved and verbose:
            con.print(f"    checks: {', '.join(involved)}", markup=False)
        con.print("")
    if not findings:
        con.print("[green]✓ no problems found[/green]" if fancy else "no problems found", markup=fancy)
    counts = summary(results)
    parts = [f"{counts[s.value]} {s.value}" for s in Status]
    con.print(f"checks: {', '.join(parts)}; {len(findings)} finding{'s' if len(findings) != 1 else ''} "
              f"in {duration_s:.2f}s", markup=False)
