"""Durable operations against the fake API: the record after every step, the Lease, the way back, and a
process killed (SIGKILL) between steps that another process resumes or rolls back."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from lab.kubeapi import FakeKubeAPI, kube_api  # noqa: F401

from coderctl.context import App
from coderctl.errors import ExitCode
from coderctl.ops.journal import StepFailed
from coderctl.ops.lock import LEASE_NAME, OperationLock
from coderctl.ops.operation import Action, Executor, OperationBlocked, Run
from coderctl.ops.record import Record
from coderctl.ops.recordstore import RecordStore, configmap_name, local_dir
from coderctl.profile import load_settings

NS = "coder"
BOARD = "toy-board"


def make_app(api: FakeKubeAPI) -> App:
    return App(settings=load_settings(flags={"kubeconfig": str(api.kubeconfig_path), "timeout": 3}, environ={}))


def board(api: FakeKubeAPI) -> dict[str, str]:
    cm = api.get("ConfigMap", NS, BOARD)
    return dict((cm or {}).get("data") or {})


def _set(api_app: App, key: str, value: str | None) -> None:
    from coderctl.clients.kube import CONFIGMAPS

    api_app.kube().patch(CONFIGMAPS, BOARD, NS, {"data": {key: value}})


def toy_actions(*, fail_at: str = "", undo_fails: str = "", kill_at: str = "") -> list[Action]:
    """Three steps that each write a key of a ConfigMap; undo removes it."""

    def step(key: str) -> Action:
        def do(run: Run) -> str:
            if key == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            _set(run.app, key, "1")
            run.state[key] = "set"
            if key == fail_at:
                raise StepFailed(f"{key} failed on purpose")
            return f"{key} set"

        def done(run: Run) -> bool:
            cm = run.app.kube().get_or_none(_cm(), BOARD, NS) or {}
            return (cm.get("data") or {}).get(key) == "1"

        def undo(run: Run) -> str:
            if key == undo_fails:
                raise StepFailed(f"undo of {key} failed on purpose")
            _set(run.app, key, None)
            return f"{key} removed"

        return Action(key, f"set {key}", do, done, undo, by_hand=lambda run: f"kubectl -n {NS} edit cm {BOARD}")

    return [step("a"), step("b"), step("c")]


def _cm() -> Any:
    from coderctl.clients.kube import CONFIGMAPS

    return CONFIGMAPS


@pytest.fixture
def api(kube_api: FakeKubeAPI) -> Iterator[FakeKubeAPI]:  # noqa: F811
    kube_api.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": BOARD, "namespace": NS},
                  "data": {}})
    yield kube_api


def cluster_record(api: FakeKubeAPI, op_id: str) -> Record:
    cm = api.get("ConfigMap", NS, configmap_name(op_id))
    assert cm is not None
    return Record.from_json(cm["data"]["record.json"])


def lease_holder(api: FakeKubeAPI) -> str:
    lease = api.get("Lease", NS, LEASE_NAME) or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def test_a_run_records_every_step_and_releases_the_lease(api: FakeKubeAPI) -> None:
    app = make_app(api)
    record, outcome = Executor(app, "toy", toy_actions()).start({"what": "toy"})
    assert outcome.code == ExitCode.OK
    assert board(api) == {"a": "1", "b": "1", "c": "1"}
    saved = cluster_record(api, record.id)
    assert saved.status == "done"
    assert [s.status for s in saved.steps] == ["done", "done", "done"]
    assert saved.state == {"a": "set", "b": "set", "c": "set"}
    assert json.loads((local_dir() / f"{record.id}.json").read_text())["status"] == "done"
    assert lease_holder(api) == ""


def test_a_failed_step_is_undone_in_reverse(api: FakeKubeAPI) -> None:
    app = make_app(api)
    ex = Executor(app, "toy", toy_actions(fail_at="b"))
    record, outcome = ex.start({})
    assert outcome.code == ExitCode.PROBLEMS
    assert board(api) == {}
    assert [r.name for r in outcome.steps] == ["a", "b", "undo b", "undo a"]
    saved = cluster_record(api, record.id)
    assert saved.status == "rolled-back"
    assert [s.status for s in saved.steps] == ["undone", "undone", "pending"]
    assert "b failed on purpose" in saved.message


def test_a_failed_undo_needs_a_person_and_blocks_the_next_operation(api: FakeKubeAPI) -> None:
    app = make_app(api)
    record, outcome = Executor(app, "toy", toy_actions(fail_at="c", undo_fails="a")).start({})
    assert outcome.code == ExitCode.NEEDS_PERSON
    assert f"kubectl -n {NS} edit cm {BOARD}" in outcome.message
    assert f"--rollback {record.id}" in outcome.message
    assert cluster_record(api, record.id).status == "needs-person"
    with pytest.raises(OperationBlocked, match=record.id):
        Executor(make_app(api), "toy", toy_actions()).start({})
    _, again = Executor(make_app(api), "toy", toy_actions()).rollback(record.id)
    assert again.code == ExitCode.OK
    assert board(api) == {}
    assert cluster_record(api, record.id).status == "rolled-back"


def _run_and_die(kubeconfig: str, home: str, kill_at: str) -> None:
    os.environ["HOME"] = home
    app = App(settings=load_settings(flags={"kubeconfig": kubeconfig, "timeout": 3}, environ={}))
    Executor(app, "toy", toy_actions(kill_at=kill_at), lease_s=2).start({})


@pytest.mark.parametrize("kill_at", ["a", "b", "c"])
def test_killed_between_steps_then_resumed_from_another_process(api: FakeKubeAPI, kill_at: str,
                                                                 tmp_path: Any) -> None:
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_run_and_die, args=(str(api.kubeconfig_path), str(tmp_path), kill_at))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    app = make_app(api)
    store = RecordStore(app.kube(), NS)
    [left] = store.unfinished()
    assert left.status == "running" and left.current == kill_at
    with pytest.raises(OperationBlocked, match=f"--resume {left.id}"):
        Executor(app, "toy", toy_actions()).start({})
    _, outcome = Executor(app, "toy", toy_actions()).resume(left.id)
    assert outcome.code == ExitCode.OK, outcome.message
    assert board(api) == {"a": "1", "b": "1", "c": "1"}
    assert cluster_record(api, left.id).status == "done"


def test_killed_then_rolled_back(api: FakeKubeAPI, tmp_path: Any) -> None:
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_run_and_die, args=(str(api.kubeconfig_path), str(tmp_path), "c"))
    child.start()
    child.join(30)
    app = make_app(api)
    [left] = RecordStore(app.kube(), NS).unfinished()
    assert board(api) == {"a": "1", "b": "1"}
    _, outcome = Executor(app, "toy", toy_actions()).rollback(left.id)
    assert outcome.code == ExitCode.OK
    assert board(api) == {}
    assert RecordStore(app.kube(), NS).unfinished() == []


def test_a_live_lease_of_another_operation_refuses_naming_its_holder(api: FakeKubeAPI) -> None:
    app = make_app(api)
    other = OperationLock(app.kube(), NS, holder="alice@laptop:42", operation="restore-x", duration_s=60)
    other.acquire()
    try:
        with pytest.raises(OperationBlocked, match="alice@laptop:42") as info:
            Executor(make_app(api), "toy", toy_actions()).start({})
        assert f"kubectl -n {NS} delete lease {LEASE_NAME}" in str(info.value)
        assert board(api) == {}
    finally:
        other.release()


def test_an_expired_lease_is_taken_over(api: FakeKubeAPI) -> None:
    app = make_app(api)
    stale = datetime(2020, 1, 1, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api.put({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": LEASE_NAME, "namespace": NS,
                          "annotations": {"coderctl.dev/operation": "restore-gone"}},
             "spec": {"holderIdentity": "bob@gone:1", "leaseDurationSeconds": 60, "renewTime": stale}})
    _, outcome = Executor(app, "toy", toy_actions()).start({})
    assert outcome.code == ExitCode.OK


def test_a_lease_taken_over_midway_stops_before_the_next_step(api: FakeKubeAPI) -> None:
    app = make_app(api)

    def steal(run: Run) -> str:
        api.patch("Lease", NS, LEASE_NAME, {"spec": {"holderIdentity": "mallory@elsewhere:7"}})
        return "stolen"

    def renew_now(run: Run) -> str:
        assert ex.lock is not None
        ex.lock.renew()
        return "renewed"

    actions = [Action("steal", "take the lease away", steal), Action("renew", "renew", renew_now),
               *toy_actions()]
    ex = Executor(app, "toy", actions)
    _, outcome = ex.start({})
    assert outcome.code == ExitCode.PROBLEMS
    assert "taken over" in outcome.message
    assert outcome.result["status"] == "taken-over"
    assert board(api) == {}


def test_every_step_sees_the_cluster_as_the_steps_before_left_it(api: FakeKubeAPI) -> None:
    """A step that changes the cluster makes the run's snapshot stale: the executor refreshes it after every
    step, so the next step (and the verification that ends an operation) reads what is there now."""
    from coderctl.clients.kube import DEPLOYMENTS
    from coderctl.snapshot import snapshot

    api.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coder", "namespace": NS},
             "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "coder"}}}})
    app = make_app(api)

    def replicas(run: Run) -> int:
        return int(snapshot(run.app).coder_deployment["spec"]["replicas"])

    def scale(run: Run) -> str:
        run.state["before"] = replicas(run)
        run.app.kube().patch(DEPLOYMENTS, "coder", NS, {"spec": {"replicas": 3}})
        return "scaled"

    def look(run: Run) -> str:
        run.state["after"] = replicas(run)
        return "looked"

    record, outcome = Executor(app, "toy", [Action("scale", "scale", scale), Action("look", "look", look)]).start({})
    assert outcome.code == ExitCode.OK
    assert record.state == {"before": 1, "after": 3}
