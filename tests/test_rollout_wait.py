"""wait_for_rollout against the lab, with the pod runtime rolling Coder out step by step."""

from __future__ import annotations

import base64
import time

import pytest

from coderctl.clients.kube import DEPLOYMENTS, KubeClient, KubeNotFound
from coderctl.clients.rollout import RolloutFailed, RolloutTimeout, wait_for_rollout
from lab.deployment import Lab
from lab.kubeapi import CODER_POD, database_url

pytestmark = pytest.mark.fake_only


def restart(lab: Lab) -> None:
    lab.kube.patch("Deployment", "coder", "coder", {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": f"restart-{time.monotonic()}"}}}}})


def client(lab: Lab) -> KubeClient:
    return KubeClient(str(lab.kubeconfig), None, 5.0)


def test_waits_for_the_new_pods_not_the_old_ready_ones(lab: Lab) -> None:
    lab.enable_runtime(tick=0.1, login_retry=1.0)
    kube = client(lab)
    restart(lab)
    status = kube.get(DEPLOYMENTS, "coder", "coder")["status"]
    assert status.get("readyReplicas") == 1, "the old pod is still Ready: readyReplicas alone would stop here"
    state = wait_for_rollout(kube, "coder", "coder", time.monotonic() + 20)
    assert state.new_ready == state.replicas == 1 and state.old_pods == 0
    assert state.new_replicaset is not None and state.new_replicaset != "coder-6c8d7f9b5d"
    assert lab.kube.get("Pod", "coder", CODER_POD) is None
    pods = [p for p in lab.kube.list("Pod", "coder") if p["metadata"]["name"].startswith(state.new_replicaset)]
    assert len(pods) == 1


def test_fails_early_naming_the_crashing_new_pod(lab: Lab) -> None:
    lab.enable_runtime(tick=0.05, login_retry=0.4, login_interval=0.1, restart_backoff=0.1)
    url = database_url("not-the-password")
    lab.kube.patch("Secret", "coder", "coder-database-secrets",
                   {"data": {"database-url": base64.b64encode(url.encode()).decode()}})
    restart(lab)
    started = time.monotonic()
    with pytest.raises(RolloutFailed) as failed:
        wait_for_rollout(client(lab), "coder", "coder", started + 60)
    assert time.monotonic() - started < 15, "failed early, long before the deadline"
    err = failed.value
    assert err.reason == "CrashLoopBackOff" and err.restarts >= 1
    assert err.pod.startswith("coder-") and err.pod != CODER_POD
    assert err.pod in str(err) and "CrashLoopBackOff" in str(err) and "old pod(s) still Ready" in str(err)
    assert "last exit 1 Error" in str(err)
    old = lab.kube.get("Pod", "coder", CODER_POD)
    assert old is not None, "the old pod still serves"
    lab.assert_no_secrets(str(err))


def test_times_out_cleanly(lab: Lab) -> None:
    runtime = lab.enable_runtime(tick=0.05)
    runtime.never_ready(prefix="coder-")
    restart(lab)
    started = time.monotonic()
    with pytest.raises(RolloutTimeout) as timed_out:
        wait_for_rollout(client(lab), "coder", "coder", started + 1.0, interval=0.2)
    assert 1.0 <= time.monotonic() - started < 4
    assert "0 of 1 new pods ready" in str(timed_out.value) and "1 old pods left" in str(timed_out.value)
    assert timed_out.value.state is not None and timed_out.value.state.updated == 1


def test_a_finished_rollout_returns_at_once(lab: Lab) -> None:
    state = wait_for_rollout(client(lab), "coder", "coder", time.monotonic() + 5)
    assert (state.new_replicaset, state.new_ready, state.old_pods) == ("coder-6c8d7f9b5d", 1, 0)


def test_a_missing_deployment_is_an_api_error(lab: Lab) -> None:
    with pytest.raises(KubeNotFound):
        wait_for_rollout(client(lab), "coder", "nope", time.monotonic() + 1)


def test_an_unobserved_generation_is_not_done(lab: Lab) -> None:
    lab.kube.patch("Deployment", "coder", "coder", {"spec": {"minReadySeconds": 0}}, reconcile=False)
    with pytest.raises(RolloutTimeout, match="has not seen generation 2"):
        wait_for_rollout(client(lab), "coder", "coder", time.monotonic() + 0.5, interval=0.1)


@pytest.mark.parametrize(("scenario", "reason", "words"), [
    ("coder-crashloop-oom", "CrashLoopBackOff", ["7 restart(s)", "last exit 137 OOMKilled"]),
    ("coder-imagepull", "ImagePullBackOff", []),
    ("coder-rollout-stuck", "ProgressDeadlineExceeded", ["exceeded its progress deadline"]),
])
def test_scenarios_fail_at_once(lab: Lab, scenario: str, reason: str, words: list[str]) -> None:
    lab.scenario(scenario)
    started = time.monotonic()
    with pytest.raises(RolloutFailed) as failed:
        wait_for_rollout(client(lab), "coder", "coder", started + 10)
    assert time.monotonic() - started < 3
    assert failed.value.reason == reason
    for word in words:
        assert word in str(failed.value)
