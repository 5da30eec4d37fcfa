"""/metrics in the Prometheus text exposition format (version 0.0.4), built from one state snapshot.

Every family is computed afresh per scrape from the latest results, so a problem that cleared or a
certificate that is no longer read leaves no stale series behind.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable

from coderctl import __version__
from coderctl.checks.base import Status
from coderctl.watch.state import Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = tuple(s.value for s in Status)
Sample = tuple[dict[str, str], float]


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self.lines += [f"# HELP {name} {_escape_help(help_text)}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{_labels(labels)} {_value(value)}" for labels, value in samples]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(snap: Snapshot, now: float | None = None) -> str:
    now = time.time() if now is None else now
    out = Exposition()
    _checks(out, snap)
    _derived(out, snap, now)
    _backup(out, snap, now)
    _process(out, snap)
    return out.text()


def _checks(out: Exposition, snap: Snapshot) -> None:
    states = sorted(snap.checks.items())
    ids = {cid: {"id": cid, "category": s.result.category} for cid, s in states}
    out.family("coderctl_check_status", "gauge",
               "1 for the check's current status (ok, warn, fail, skip, error), 0 for the other four.",
               [({**ids[cid], "status": status}, 1.0 if s.result.status.value == status else 0.0)
                for cid, s in states for status in STATUSES])
    out.family("coderctl_check_duration_seconds", "gauge", "How long the check's last run took.",
               ((ids[cid], s.result.duration_s) for cid, s in states))
    out.family("coderctl_check_last_run_timestamp_seconds", "gauge", "Unix time the check's last run ended.",
               ((ids[cid], s.finished_at) for cid, s in states))
    out.family("coderctl_check_runs_total", "counter", "Runs of the check, by the status they ended with.",
               [({**ids[cid], "status": status}, snap.runs.get((cid, status), 0))
                for cid, _ in states for status in STATUSES])
    out.family("coderctl_check_timeouts_total", "counter",
               "Runs abandoned because they outlasted the check's timeout.",
               ((ids[cid], snap.timeouts.get(cid, 0)) for cid, _ in states))
    out.family("coderctl_check_skipped_runs_total", "counter",
               "Runs not started because the previous run of the check was still going.",
               ((ids[cid], snap.overlaps.get(cid, 0)) for cid, _ in states))
    out.family("coderctl_check_running", "gauge", "1 while a run of the check is in progress.",
               ((ids[cid], 1.0 if cid in snap.running else 0.0) for cid, _ in states))
    active = sorted({(cid, p.code) for cid, s in states for p in s.result.problems})
    out.family("coderctl_problem_active", "gauge", "1 for each problem code a check currently raises.",
               [({"code": problem, "check": cid}, 1.0) for cid, problem in active])


def _derived(out: Exposition, snap: Snapshot, now: float) -> None:
    """Measurements some checks report in their data: the relay's round trips and certificates' lifetimes."""
    def data(cid: str) -> dict[str, object]:
        state = snap.checks.get(cid)
        if state is None or state.result.status not in (Status.OK, Status.WARN, Status.FAIL):
            return {}
        return state.result.data

    login = data("derp.login").get("ping_rtt_s")
    out.family("coderctl_derp_ping_rtt_seconds", "gauge", "Round trip of a DERP ping after login (derp.login).",
               [({}, float(login))] if isinstance(login, (int, float)) else [])
    median = data("derp.latency-check").get("median_ms")
    out.family("coderctl_derp_latency_check_seconds", "gauge",
               "Median round trip of GET /derp/latency-check (derp.latency-check).",
               [({}, float(median) / 1000)] if isinstance(median, (int, float)) else [])
    left: list[Sample] = []
    ends: list[Sample] = []
    for cid in ("tls.access-url", "tls.wildcard"):
        d = data(cid)
        not_after, days = d.get("not_after"), d.get("days_left")
        if isinstance(not_after, (int, float)):
            ends.append(({"check": cid}, float(not_after)))
            left.append(({"check": cid}, float(not_after) - now))
        elif isinstance(days, (int, float)):
            left.append(({"check": cid}, round(float(days) * 86400)))
    out.family("coderctl_tls_certificate_expires_in_seconds", "gauge",
               "Seconds the certificate the check was last served has left.", left)
    out.family("coderctl_tls_certificate_not_after_timestamp_seconds", "gauge",
               "The notAfter of the certificate the check was last served (like blackbox_exporter's "
               "probe_ssl_earliest_cert_expiry).", ends)


def _backup(out: Exposition, snap: Snapshot, now: float) -> None:
    b = snap.backup
    if b is None:
        return
    where = {"destination": b.destination, "directory": b.directory}
    if b.destination == "s3":
        where |= {"bucket": b.bucket, "prefix": b.prefix}
    ok = b.error is None
    out.family("coderctl_backup_directory_readable", "gauge",
               "1 if the backup directory (or bucket prefix) could be read at the last try.",
               [(where, 1.0 if ok else 0.0)])
    if not ok:
        return
    out.family("coderctl_backups", "gauge", "Complete backups (data and manifest) in the directory or prefix.",
               [(where, b.count)])
    last = [] if b.last_time is None else [(where, b.last_time)]
    out.family("coderctl_backup_last_timestamp_seconds", "gauge", "Unix time the newest backup was taken.", last)
    out.family("coderctl_backup_last_age_seconds", "gauge", "Age of the newest backup (+Inf: none).",
               [(where, now - b.last_time if b.last_time is not None else math.inf)])
    out.family("coderctl_backup_last_size_bytes", "gauge", "Size of the newest backup.",
               [] if b.last_size is None else [(where, b.last_size)])
    out.family("coderctl_backup_last_verified", "gauge",
               "1 if the newest backup was read back in full and still matches its manifest's SHA-256.",
               [(where, 1.0 if b.last_verified else 0.0)])
    out.family("coderctl_backup_last_verified_timestamp_seconds", "gauge",
               "Unix time of the newest verified backup (0: none).", [(where, b.last_verified_time or 0.0)])
    out.family("coderctl_backup_last_verified_age_seconds", "gauge", "Age of the newest verified backup (+Inf: none).",
               [(where, now - b.last_verified_time if b.last_verified_time is not None else math.inf)])


def _process(out: Exposition, snap: Snapshot) -> None:
    out.family("coderctl_watch_info", "gauge", "The watcher's version.", [({"version": __version__}, 1.0)])
    out.family("coderctl_watch_rounds_total", "counter", "Rounds: fresh views of the deployment the checks read.",
               [({}, snap.rounds)])
    times = os.times()
    out.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
               [({}, times.user + times.system)])
    out.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
               [({}, snap.started_at)])
    proc = _proc_status()
    if "VmRSS" in proc:
        out.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                   [({}, proc["VmRSS"] * 1024)])
    if "VmSize" in proc:
        out.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
                   [({}, proc["VmSize"] * 1024)])
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = -1
    if fds >= 0:
        out.family("process_open_fds", "gauge", "Number of open file descriptors.", [({}, fds)])
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        out.family("process_max_fds", "gauge", "Maximum number of open file descriptors.", [({}, soft)])
    import threading

    out.family("coderctl_watch_threads", "gauge", "Threads of the process.",
               [({}, proc.get("Threads", threading.active_count()))])


def _proc_status() -> dict[str, int]:
    """Numbers from /proc/self/status (kB for memory); empty where there is no /proc."""
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmSize", "Threads"):
                    found[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return found
