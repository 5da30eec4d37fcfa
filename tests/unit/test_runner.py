from __future__ import annotations

import threading
import time

import pytest

from coderctl.checks.base import Check, Outcome, Status, fail, ok
from coderctl.checks.runner import run_checks
from coderctl.context import App
from coderctl.errors import ConfigError
from coderctl.profile import load_settings


@pytest.fixture
def app() -> App:
    return App(settings=load_settings(environ={}))


def make(cid: str, fn, needs: tuple[str, ...] = ()) -> Check:  # type: ignore[no-untyped-def]
    return Check(cid, "cluster", cid, fn, needs)


def sleeper(seconds: float, outcome: Outcome | None = None):  # type: ignore[no-untyped-def]
    def fn(app: App) -> Outcome:
        time.sleep(seconds)
        return outcome or ok("slept")
    return fn


def test_checks_run_concurrently(app: App) -> None:
    checks = [make(f"c{i}", sleeper(0.4)) for i in range(6)]
    start = time.monotonic()
    results = run_checks(checks, app, check_timeout=5, deadline=10)
    elapsed = time.monotonic() - start
    assert [r.status for r in results] == [Status.OK] * 6
    assert elapsed < 0.4 * 1.5, elapsed


def test_results_keep_the_given_order_and_timing(app: App) -> None:
    checks = [make("slow", sleeper(0.2)), make("fast", sleeper(0.0))]
    results = run_checks(checks, app, check_timeout=5, deadline=10)
    assert [r.id for r in results] == ["slow", "fast"]
    assert results[0].duration_s >= 0.2


def test_exception_becomes_error_with_message(app: App) -> None:
    def boom(app: App) -> Outcome:
        raise RuntimeError("kaput\nsecond line")

    (result,) = run_checks([make("boom", boom)], app, check_timeout=5, deadline=10)
    assert result.status is Status.ERROR and result.detail == "RuntimeError: kaput"


def test_usage_errors_propagate(app: App) -> None:
    def bad(app: App) -> Outcome:
        raise ConfigError("kubeconfig x does not exist")

    with pytest.raises(ConfigError):
        run_checks([make("bad", bad)], app, check_timeout=5, deadline=10)


def test_dependents_are_skipped_with_the_reason_without_waiting_for_them(app: App) -> None:
    release = threading.Event()

    def slow_dependent(app: App) -> Outcome:
        release.wait(10)
        return ok("ran")

    checks = [make("root", sleeper(0.05, fail("down"))), make("child", slow_dependent, needs=("root",)),
              make("grandchild", sleeper(0), needs=("child",))]
    start = time.monotonic()
    root, child, grandchild = run_checks(checks, app, check_timeout=5, deadline=10)
    release.set()
    assert time.monotonic() - start < 1.0
    assert root.status is Status.FAIL
    assert child.status is Status.SKIP and child.detail == "skipped: root fail"
    assert grandchild.status is Status.SKIP and grandchild.detail == "skipped: child skip"


def test_dependencies_cost_no_wall_time(app: App) -> None:
    checks = [make("child", sleeper(0.3), needs=("root",)), make("root", sleeper(0.3)),
              make("grandchild", sleeper(0.3), needs=("child",))]
    start = time.monotonic()
    results = run_checks(checks, app, check_timeout=5, deadline=10)
    assert time.monotonic() - start < 0.3 * 1.5
    assert all(r.status is Status.OK for r in results)


def test_a_result_waits_for_its_needs_to_pass(app: App) -> None:
    published: list[str] = []
    checks = [make("child", sleeper(0), needs=("root",)), make("root", sleeper(0.2))]
    run_checks(checks, app, check_timeout=5, deadline=10, on_result=lambda r: published.append(r.id))
    assert published == ["root", "child"]


def test_per_check_timeout_and_overall_deadline(app: App) -> None:
    hang = threading.Event()

    def forever(app: App) -> Outcome:
        hang.wait(30)
        return ok("never")

    checks = [make("hung", forever), make("quick", sleeper(0)), make("after", sleeper(0), needs=("hung",))]
    start = time.monotonic()
    hung, quick, after = run_checks(checks, app, check_timeout=0.3, deadline=5)
    assert time.monotonic() - start < 1.0
    assert hung.status is Status.ERROR and "timed out after 0.3s" in hung.detail
    assert quick.status is Status.OK
    assert after.status is Status.SKIP

    start = time.monotonic()
    (late,) = run_checks([make("hung2", forever)], app, check_timeout=60, deadline=0.3)
    assert time.monotonic() - start < 1.0
    assert late.status is Status.ERROR and "deadline" in late.detail
    hang.set()


def test_details_are_redacted(app: App) -> None:
    app.redact.add("sup3rsecret")
    (r,) = run_checks([make("leaky", lambda a: fail("password is sup3rsecret", "use sup3rsecret"))], app,
                      check_timeout=5, deadline=10)
    assert "sup3rsecret" not in r.detail and "sup3rsecret" not in (r.remediation or "")


def test_on_result_reports_each_result_once(app: App) -> None:
    seen: list[str] = []
    run_checks([make("a", sleeper(0)), make("b", sleeper(0.05))], app, check_timeout=5, deadline=10,
               on_result=lambda r: seen.append(r.id))
    assert sorted(seen) == ["a", "b"]
