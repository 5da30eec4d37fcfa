"""Prometheus textfile metrics for node_exporter's textfile collector.

Written atomically (temporary name in the same directory, then rename) so the collector never reads half a
file. A failed run keeps the last success's values and only updates the `last_run` metrics, so alerts can
fire both on a failure and on a success that is too old.

Every sample is labelled with the namespace, the database and the destination (`dir` or `s3`; for a bucket,
also its `bucket` and key `prefix`, which are configuration, never credentials).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from coderctl.fsutil import atomic_write_text
from coderctl.errors import UsageError

SUCCESS = (
    ("coderctl_backup_last_success_timestamp_seconds", "Unix time the last successful backup finished."),
    ("coderctl_backup_duration_seconds", "Duration of the last successful backup."),
    ("coderctl_backup_size_bytes", "Size of the last successful backup file."),
    ("coderctl_backup_verified", "1 if the last successful backup was read back in full, else 0."),
)
RUN = (
    ("coderctl_backup_last_run_timestamp_seconds", "Unix time the last backup attempt ended."),
    ("coderctl_backup_last_run_success", "1 if the last backup attempt succeeded, else 0."),
)
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)")


@dataclass
class Run:
    finished: float
    success: bool
    namespace: str
    database: str
    duration_s: float = 0.0
    size: int = 0
    verified: bool = False
    destination: str = "dir"
    bucket: str = ""
    prefix: str = ""


def _labels(run: Run) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    pairs = [("namespace", run.namespace), ("database", run.database), ("destination", run.destination)]
    if run.destination == "s3":
        pairs += [("bucket", run.bucket), ("prefix", run.prefix)]
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs) + "}"


def previous_success(path: Path) -> dict[str, str]:
    """The success samples of an existing file, kept as they are."""
    names = {name for name, _ in SUCCESS}
    kept: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return kept
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group("name") in names:
            kept[match.group("name")] = line
    return kept


def render(run: Run, kept: dict[str, str]) -> str:
    labels = _labels(run)
    values: dict[str, str] = {}
    if run.success:
        values = {
            "coderctl_backup_last_success_timestamp_seconds": f"{run.finished:.3f}",
            "coderctl_backup_duration_seconds": f"{run.duration_s:.3f}",
            "coderctl_backup_size_bytes": str(run.size),
            "coderctl_backup_verified": "1" if run.verified else "0",
        }
    lines: list[str] = []
    for name, help_text in SUCCESS:
        sample = f"{name}{labels} {values[name]}" if name in values else kept.get(name)
        if sample:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", sample]
    run_values = {"coderctl_backup_last_run_timestamp_seconds": f"{run.finished:.3f}",
                  "coderctl_backup_last_run_success": "1" if run.success else "0"}
    for name, help_text in RUN:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{labels} {run_values[name]}"]
    return "\n".join(lines) + "\n"


def write(path: Path, run: Run) -> None:
    path = path.expanduser()
    if not path.parent.is_dir():
        raise UsageError(f"--metrics-file {path}: directory {path.parent} does not exist")
    atomic_write_text(path, render(run, previous_success(path)), mode=0o644)
