"""Rendering results: text with rich, or the JSON envelope. The only code that prints results."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import datetime, timezone
from typing import IO, Any

from coderctl import __version__
from coderctl.checks.base import CATEGORIES, CheckResult, Status

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
        "started_at": started_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(duration_s, 3),
        **body,
    }


def print_json(document: dict[str, Any], stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    out.flush()


def console(*, color: bool, stream: IO[str] | None = None):  # type: ignore[no-untyped-def]
    """A rich Console: colour only on a terminal and without NO_COLOR; plain text when piped."""
    from rich.console import Console

    return Console(file=stream or sys.stdout, no_color=not color, highlight=False, soft_wrap=True,
                   emoji=False, force_terminal=None if color else False)


def _plain_mark(status: Status) -> str:
    return f"[{status.value}]".ljust(7)


def print_results(
    command: str, results: list[CheckResult], duration_s: float, *, color: bool, verbose: int = 0,
    stream: IO[str] | None = None,
) -> None:
    from rich.markup import escape

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
            first, *rest = (r.detail or "").splitlines() or [""]
            timing = f" ({r.duration_s:.2f}s)" if verbose else ""
            if fancy:
                con.print(f"  [{style}]{mark}[/{style}] {r.id.ljust(width)}  {escape(first)}[dim]{timing}[/dim]")
            else:
                con.print(f"  {_plain_mark(r.status)} {r.id.ljust(width)}  {first}{timing}", markup=False)
            for line in rest:
                con.print(f"      {line}", markup=False)
            if r.remediation and r.status in (Status.WARN, Status.FAIL, Status.ERROR):
                prefix = "[dim]→ fix:[/dim] " if fancy else "-> fix: "
                con.print(f"      {prefix}{escape(r.remediation) if fancy else r.remediation}",
                          markup=fancy)
    counts = summary(results)
    parts = [f"{counts[s.value]} {s.value}" for s in Status]
    con.print(f"{', '.join(parts)} in {duration_s:.2f}s", markup=False)
