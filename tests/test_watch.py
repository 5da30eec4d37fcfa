"""coderctl watch without Prometheus: the scheduler against a server that never answers, the backup
directory's metrics, the exposition format, the shipped alerting rules (promtool), and usage errors."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clirun import ROOT, run_cli
from coderctl.checks.base import Check, CheckResult, Outcome, Status, ok
from coderctl.context import App
from coderctl.problems import Problem, Severity
from coderctl.profile import load_settings
from coderctl.watch import metrics
from coderctl.watch.backups import BackupWatcher
from coderctl.watch.state import State
from coderctl.watch.watcher import Watcher, WatchOptions

DEPLOY = ROOT / "deploy" / "watch"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A loopback server that accepts connections and never answers; closing them at teardown ends any
    reader still waiting."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        thread.join(1)
        for conn in accepted:
            conn.close()
        listener.close()


def plain_app() -> App:
    return App(settings=load_settings(flags={"timeout": 1}, environ={}))


def wait_for(condition, timeout: float, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


def test_a_hanging_check_neither_delays_the_others_nor_stacks_up(silent_server: tuple[str, int]) -> None:
    release = threading.Event()

    def hang(app: App) -> Outcome:
        # a client without a timeout: the run only ends when the server closes the connection
        with socket.create_connection(silent_server) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.recv(1)
        release.set()
        return ok("answered")

    def quick(app: App) -> Outcome:
        return ok("fine")

    checks = [Check("test.hang", "network", "hangs", hang, uses_cluster=False),
              Check("test.quick", "network", "answers", quick, uses_cluster=False)]
    watcher = Watcher(plain_app(), checks, WatchOptions(interval=0.2, check_timeout=0.5, workers=2, seed=1))
    before = threading.active_count()
    watcher.start()
    try:
        time.sleep(2.5)
        snap = watcher.snapshot()
        quick_runs = snap.runs.get(("test.quick", "ok"), 0)
        assert quick_runs >= 10, snap.runs  # every 0.2 s while the other hangs: not delayed by it
        assert time.time() - snap.checks["test.quick"].finished_at < 0.5
        hung = snap.checks["test.hang"].result
        assert hung.status is Status.ERROR and "timed out after 0.5s" in hung.detail
        assert snap.timeouts == {"test.hang": 1}  # abandoned once, never started again while still running
        assert snap.overlaps["test.hang"] >= 8
        assert snap.running.keys() == {"test.hang"} or snap.running.keys() == {"test.hang", "test.quick"}
        # two workers, one replacement for the stuck one, the dispatcher: nothing more
        assert threading.active_count() - before <= 4
        text = metrics.render(snap)
        assert 'coderctl_check_status{id="test.hang",category="network",status="error"} 1' in text
        assert 'coderctl_check_timeouts_total{id="test.hang",category="network"} 1' in text
        assert 'coderctl_check_running{id="test.hang",category="network"} 1' in text
    finally:
        assert watcher.stop(0.5) is False  # the hanging run is abandoned, not waited for
    assert not release.is_set()


def test_a_check_runs_again_once_its_hung_run_returns(silent_server: tuple[str, int]) -> None:
    calls: list[float] = []
    done = threading.Event()

    def slow(app: App) -> Outcome:
        calls.append(time.monotonic())
        if len(calls) == 1:
            done.wait(5)
        return ok("returned")

    watcher = Watcher(plain_app(), [Check("test.slow", "network", "slow once", slow, uses_cluster=False)],
                      WatchOptions(interval=0.1, check_timeout=0.3, workers=1, seed=2))
    watcher.start()
    try:
        assert wait_for(lambda: watcher.snapshot().timeouts.get("test.slow"), 2)
        assert len(calls) == 1
        done.set()
        assert wait_for(lambda: watcher.snapshot().runs.get(("test.slow", "ok"), 0) >= 2, 2)
        assert watcher.snapshot().checks["test.slow"].result.status is Status.OK
    finally:
        watcher.stop(0.5)


def test_a_check_is_skipped_while_what_it_needs_fails() -> None:
    state = {"up": False}

    def base(app: App) -> Outcome:
        return ok("up") if state["up"] else Outcome(Status.FAIL, "down")

    def dependent(app: App) -> Outcome:
        return ok("ran")

    checks = [Check("test.base", "cluster", "base", base, uses_cluster=False),
              Check("test.dependent", "cluster", "dependent", dependent, needs=("test.base",), uses_cluster=False)]
    watcher = Watcher(plain_app(), checks, WatchOptions(interval=0.1, check_timeout=1, seed=3))
    watcher.start()
    try:
        assert wait_for(lambda: (s := watcher.snapshot().checks.get("test.dependent"))
                        and s.result.status is Status.SKIP, 2)
        assert watcher.snapshot().checks["test.dependent"].result.detail == "skipped: test.base fail"
        state["up"] = True
        assert wait_for(lambda: watcher.snapshot().checks["test.dependent"].result.status is Status.OK, 2)
    finally:
        watcher.stop(0.5)


def test_rounds_share_one_app_then_replace_it() -> None:
    apps: list[int] = []

    def record(app: App) -> Outcome:
        apps.append(id(app._cache))
        return ok("seen")

    checks = [Check(f"test.c{i}", "network", "c", record, uses_cluster=False) for i in range(3)]
    watcher = Watcher(plain_app(), checks, WatchOptions(interval=0.4, check_timeout=1, jitter=0.05, seed=4))
    watcher.start()
    try:
        assert wait_for(lambda: len(apps) >= 9, 3)
    finally:
        watcher.stop(0.5)
    first_round = set(apps[:3])
    assert len(first_round) == 1  # checks that start together read one snapshot
    assert len(set(apps)) >= 3  # and each round reads afresh
    assert watcher.rounds.count >= 3


# --- the backup directory ----------------------------------------------------------------------------------


def make_backup(directory: Path, when: datetime, *, verified: bool, content: bytes = b"PGDMP data") -> Path:
    from coderctl.ops import manifest as mf

    path = directory / mf.backup_name("coder", when, "custom")
    path.write_bytes(content)
    record = mf.Manifest(file=path.name, created_at=mf.format_time(when), duration_s=1.0, via="exec",
                         format="custom", database="coder", size=len(content),
                         sha256=hashlib.sha256(content).hexdigest(),
                         verification=mf.Verification("ok" if verified else "skipped", "read back"))
    mf.write(path, record)
    return path


def test_backup_reading_newest_and_newest_verified(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    old = make_backup(tmp_path, now - timedelta(hours=30), verified=True)
    make_backup(tmp_path, now - timedelta(hours=1), verified=False)
    watcher = BackupWatcher(tmp_path)
    reading = watcher.read()
    assert reading.error is None and reading.count == 2
    assert reading.last_time == (now - timedelta(hours=1)).timestamp()
    assert reading.last_verified is False
    assert reading.last_verified_time == (now - timedelta(hours=30)).timestamp()

    newest = make_backup(tmp_path, now, verified=True)
    reading = watcher.read()
    assert reading.last_verified is True and reading.last_verified_time == now.timestamp()

    newest.write_bytes(b"PGDMP dat!")  # same size, different bytes: no longer what its manifest says
    reading = watcher.read()
    assert reading.last_verified is False and reading.last_verified_time == (now - timedelta(hours=30)).timestamp()

    old.unlink()
    state = State()
    state.record_backup(watcher.read())
    text = metrics.render(state.snapshot(overlaps={}, running={}, rounds=0), now=now.timestamp())
    where = f'{{destination="dir",directory="{tmp_path}"}}'
    assert f"coderctl_backup_last_verified_timestamp_seconds{where} 0" in text
    assert f"coderctl_backup_last_verified_age_seconds{where} +Inf" in text
    assert f"coderctl_backups{where} 2" in text


def test_an_unreadable_backup_directory_is_a_metric_not_a_crash(tmp_path: Path) -> None:
    state = State()
    state.record_backup(BackupWatcher(tmp_path / "missing").read())
    text = metrics.render(state.snapshot(overlaps={}, running={}, rounds=0))
    assert f'coderctl_backup_directory_readable{{destination="dir",directory="{tmp_path / "missing"}"}} 0' in text
    assert "coderctl_backups" not in text


# --- the exposition ----------------------------------------------------------------------------------------


def sample_state() -> State:
    state = State()
    problem = Problem("DERP-UPGRADE-BLOCKED", Severity.FAIL, 'refused "by" \\ nginx\nsecond line')
    state.record(CheckResult("derp.upgrade", "network", "DERP", Status.FAIL, "refused", problems=[problem, problem],
                             duration_s=0.25))
    state.record(CheckResult("derp.login", "network", "login", Status.OK, "fine", data={"ping_rtt_s": 0.0123}))
    state.record(CheckResult("tls.access-url", "network", "tls", Status.OK, "fine",
                             data={"days_left": 10.5, "host": "coder.example.org"}))
    state.record(CheckResult("tls.wildcard", "network", "tls", Status.OK, "fine",
                             data={"days_left": 30.0, "not_after": 2_000_000_000, "host": "x.example.org"}))
    from coderctl.watch.backups import BackupReading

    state.record_backup(BackupReading("/backups", count=2, last_time=100.0, last_size=10, last_verified=True,
                                      last_verified_time=100.0))
    return state


def test_status_is_an_enum_and_problems_are_listed_once() -> None:
    text = metrics.render(sample_state().snapshot(overlaps={"derp.upgrade": 2}, running={}, rounds=3),
                          now=1_999_000_000)
    lines = text.splitlines()
    status = [x for x in lines if x.startswith('coderctl_check_status{id="derp.upgrade"')]
    assert len(status) == 5 and sum(x.endswith(" 1") for x in status) == 1
    assert 'coderctl_check_status{id="derp.upgrade",category="network",status="fail"} 1' in status
    assert lines.count('coderctl_problem_active{code="DERP-UPGRADE-BLOCKED",check="derp.upgrade"} 1') == 1
    assert "coderctl_derp_ping_rtt_seconds 0.0123" in lines
    assert 'coderctl_tls_certificate_expires_in_seconds{check="tls.access-url"} 907200' in lines
    assert 'coderctl_tls_certificate_expires_in_seconds{check="tls.wildcard"} 1000000' in lines  # exact
    assert 'coderctl_tls_certificate_not_after_timestamp_seconds{check="tls.wildcard"} 2000000000' in lines
    assert 'coderctl_check_skipped_runs_total{id="derp.upgrade",category="network"} 2' in lines
    assert "coderctl_watch_rounds_total 3" in lines
    assert any(x.startswith("process_resident_memory_bytes ") for x in lines)
    assert any(x.startswith("process_open_fds ") for x in lines)


@needs_promtool
def test_promtool_accepts_the_exposition() -> None:
    text = metrics.render(sample_state().snapshot(overlaps={}, running={"derp.upgrade": 1.0}, rounds=1))
    result = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_shipped_rules_pass_promtool_check_and_unit_tests() -> None:
    checked = subprocess.run([str(PROMTOOL), "check", "rules", "coderctl-watch.rules.yaml"], cwd=DEPLOY,
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "6 rules found" in checked.stdout
    tested = subprocess.run([str(PROMTOOL), "test", "rules", "coderctl-watch.rules.test.yaml"], cwd=DEPLOY,
                            capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test() -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "coderctl-watch.rules.yaml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((DEPLOY / "coderctl-watch.rules.test.yaml").read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
    assert alerts == tested


def test_deployment_args_are_options_of_watch() -> None:
    import yaml

    docs = list(yaml.safe_load_all((DEPLOY / "deployment.yaml").read_text()))
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    help_text = run_cli("watch", "--help").stdout
    for arg in container["args"]:
        if arg.startswith("--"):
            assert arg in help_text, arg
    assert docs[1]["kind"] == "Service" and docs[1]["spec"]["ports"][0]["port"] == 9464


# --- usage ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "nowhere"], "expected HOST:PORT"),
    (["--check-interval", "derp.nope=5"], "not among the checks selected"),
    (["--check-interval", "derp.upgrade"], "expected ID=SECONDS"),
    (["--interval", "0"], "at least 0.1"),
])
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run_cli("watch", "--access-url", "https://coder.example.org", "--only", "network", *args)
    assert result.code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_taken_address_is_a_usage_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("-o", "json", "watch", "--access-url", "https://coder.example.org", "--only", "network",
                         "--listen", f"127.0.0.1:{port}")
    assert result.code == 2, result.output
    assert json.loads(result.stdout)["error"]["code"] == 2


def test_sigint_ends_a_watcher_whose_checks_hang_within_a_second(silent_server: tuple[str, int],
                                                                   tmp_path: Path) -> None:
    """Every network check waits on a server that never answers; the watcher still serves, reports them
    timed out, and SIGINT ends it with 0 within a second."""
    import os
    import signal
    import sys
    import urllib.request

    host, port = silent_server
    err = tmp_path / "stderr"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "coderctl", "--timeout", "30", "watch", "--only", "network", "--interval", "1",
             "--check-timeout", "1", "--listen", "127.0.0.1:0", "--access-url", f"https://coder.example.org:{port}",
             "--resolve", f"coder.example.org:{port}:{host}", "--resolve", f"*.example.org:{port}:{host}"],
            stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, "NO_COLOR": "1"}, cwd=tmp_path)
    try:
        line = wait_for(lambda: next((x for x in err.read_text().splitlines() if "serving http" in x), None), 20)
        assert line, err.read_text()
        url = line.split("serving ")[1].split("/metrics")[0]

        def timed_out() -> dict[str, str]:
            with urllib.request.urlopen(url + "/status", timeout=5) as response:
                doc = json.loads(response.read())
            return {c["id"]: c["detail"] for c in doc["checks"] if "timed out" in c["detail"]}

        hung = wait_for(lambda: len(timed_out()) >= 3 and timed_out(), 10)
        assert hung, err.read_text()
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            assert response.read() == b"ok\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0
        # the watcher's own account, from the signal to the end of serving: the interpreter's exit after it
        # is not the watcher's to speed up, and on a busy machine it alone can take a good part of a second
        stopped = next(x for x in err.read_text().splitlines() if "stopped in" in x)
        assert float(stopped.rpartition(" ")[2].rstrip("s")) < 1.0, stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert "Traceback" not in err.read_text()
