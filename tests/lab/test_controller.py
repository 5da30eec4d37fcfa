"""The pod runtime of the fake cluster (lab/kube/runtime.py): step-by-step rollouts, containers whose environment
is fixed when they start, Secret volumes that follow after a delay, and Coder pods that log in to the lab's
PostgreSQL with the URL they started with."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.deployment import Lab
from lab.kube.coder_login import PqError, parse_url
from lab.kube.runtime import PodRuntime
from lab.kubeapi import CODER_POD, FakeKubeAPI, database_url, kube_api

pytestmark = pytest.mark.fake_only
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

RESTART = "kubectl.kubernetes.io/restartedAt"


def web(name: str = "web", replicas: int = 3, *, env: list[dict[str, Any]] | None = None,
        strategy: dict[str, Any] | None = None, **pod_spec: Any) -> dict[str, Any]:
    container = {"name": name, "image": "registry.lab/web:1", "env": env or []}
    container.update(pod_spec.pop("container", {}))
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "coder"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "strategy": strategy or {"type": "RollingUpdate"},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [container], **pod_spec}}},
    }


def restart(api: FakeKubeAPI, name: str) -> None:
    api.patch("Deployment", "coder", name,
              {"spec": {"template": {"metadata": {"annotations": {RESTART: time.strftime("%H:%M:%S")
                                                                  + str(time.monotonic())}}}}})


def ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pods_of(api: FakeKubeAPI, prefix: str) -> list[dict[str, Any]]:
    return [p for p in api.list("Pod", "coder") if p["metadata"]["name"].startswith(prefix + "-")]


def by_hash(api: FakeKubeAPI, prefix: str) -> dict[str, list[bool]]:
    found: dict[str, list[bool]] = {}
    for pod in pods_of(api, prefix):
        found.setdefault(pod["metadata"]["labels"]["pod-template-hash"], []).append(ready(pod))
    return found


def container_status(pod: dict[str, Any]) -> dict[str, Any]:
    return ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]


def wait(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def deployment(api: FakeKubeAPI, name: str) -> dict[str, Any]:
    found = api.get("Deployment", "coder", name)
    assert found is not None
    return found


def settled(api: FakeKubeAPI, name: str, replicas: int) -> bool:
    status = (api.get("Deployment", "coder", name) or {}).get("status") or {}
    reason = next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None)
    return (status.get("updatedReplicas") == replicas and status.get("availableReplicas") == replicas
            and status.get("replicas") == replicas and reason == "NewReplicaSetAvailable")


@pytest.fixture
def runtime(kube_api: FakeKubeAPI) -> Iterator[PodRuntime]:
    with PodRuntime(tick=0.1, progress_deadline=30.0).attach(kube_api) as rt:
        yield rt
    assert not rt.errors, rt.errors


def kubectl(target: FakeKubeAPI | Lab, *args: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    config = Path(str(target.kubeconfig if isinstance(target, Lab) else target.kubeconfig_path))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBECACHEDIR"] = str(config.parent / "kubectl-cache")
    result = subprocess.run(["kubectl", "--kubeconfig", str(config), "-n", "coder", *args],
                            capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


# rollouts -------------------------------------------------------------------------------------------------


def test_runtime_is_opt_in(kube_api: FakeKubeAPI) -> None:
    """Without a runtime, pods appear Running and Ready at once, as before."""
    kube_api.put(web(replicas=2))
    assert [ready(p) for p in pods_of(kube_api, "web")] == [True, True]


def test_rollout_advances_pod_by_pod(kube_api: FakeKubeAPI, runtime: PodRuntime) -> None:
    kube_api.put(web(replicas=3, strategy={"type": "RollingUpdate",
                                           "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}))
    wait(lambda: settled(kube_api, "web", 3), what="the first rollout")
    (old_hash,) = by_hash(kube_api, "web")
    restart(kube_api, "web")
    seen: list[dict[str, list[bool]]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not settled(kube_api, "web", 3):
        state = by_hash(kube_api, "web")
        if not seen or seen[-1] != state:
            seen.append(state)
        time.sleep(0.005)
    assert settled(kube_api, "web", 3)
    (new_hash,) = by_hash(kube_api, "web")
    assert new_hash != old_hash
    # maxSurge 25% of 3 rounds up to 1, maxUnavailable rounds down to 0: one extra pod at a time, never fewer
    # than 3 Ready, and a surge pod of the new ReplicaSet while all the old pods still run.
    assert {new_hash: [False], old_hash: [True, True, True]} in seen
    assert all(sum(len(v) for v in s.values()) <= 4 for s in seen)
    assert all(sum(sum(v) for v in s.values()) >= 3 for s in seen)
    old_counts = [len(s.get(old_hash, [])) for s in seen]
    assert old_counts == sorted(old_counts, reverse=True) and set(old_counts) >= {3, 2, 1}

    rs = kube_api.get("ReplicaSet", "coder", f"web-{new_hash}")
    assert rs is not None and rs["metadata"]["labels"]["pod-template-hash"] == new_hash
    dep = kube_api.get("Deployment", "coder", "web")
    assert dep is not None
    assert rs["metadata"]["ownerReferences"][0]["uid"] == dep["metadata"]["uid"]
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert RESTART in rs["spec"]["template"]["metadata"]["annotations"]
    status = dep["status"]
    assert status["observedGeneration"] == dep["metadata"]["generation"] == 2
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Available": "True", "Progressing": "True"}
    old_rs = kube_api.get("ReplicaSet", "coder", f"web-{old_hash}")
    assert old_rs is not None and old_rs["spec"]["replicas"] == 0
    scaling = {e["message"] for e in kube_api.list("Event", "coder") if e["reason"] == "ScalingReplicaSet"}
    assert {f"Scaled up replica set web-{new_hash} from 0 to 1", f"Scaled down replica set web-{old_hash} from 3 to 2",
            f"Scaled down replica set web-{old_hash} from 1 to 0"} <= scaling


def test_scripted_crash_stalls_the_rollout_until_the_deadline(kube_api: FakeKubeAPI) -> None:
    with PodRuntime(tick=0.05, restart_backoff=0.1, progress_deadline=1.0).attach(kube_api) as rt:
        kube_api.put(web(replicas=2))
        wait(lambda: settled(kube_api, "web", 2), what="the first rollout")
        rt.crash_next(1, prefix="web-", exit_code=3, log="panic: boom")
        restart(kube_api, "web")
        new = wait(lambda: [p for p in pods_of(kube_api, "web") if container_status(p).get("restartCount", 0) >= 2],
                   what="a crash-looping pod")[0]
        cs = container_status(new)
        assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert cs["lastState"]["terminated"]["exitCode"] == 3
        old = [p for p in pods_of(kube_api, "web") if p["metadata"]["name"] != new["metadata"]["name"]]
        assert len(old) == 2 and all(ready(p) for p in old)
        wait(lambda: any(c.get("reason") == "ProgressDeadlineExceeded" and c["status"] == "False"
                         for c in deployment(kube_api, "web")["status"]["conditions"]),
             what="ProgressDeadlineExceeded")
        assert len(pods_of(kube_api, "web")) == 3
        backoff = [e for e in kube_api.list("Event", "coder") if e["reason"] == "BackOff"
                   and e["involvedObject"]["name"] == new["metadata"]["name"]]
        assert backoff and backoff[0]["type"] == "Warning" and backoff[0]["count"] >= 2
        assert not rt.errors


def test_a_pod_that_never_becomes_ready_holds_the_old_ones(kube_api: FakeKubeAPI, runtime: PodRuntime) -> None:
    kube_api.put(web(replicas=1))
    wait(lambda: settled(kube_api, "web", 1), what="the first rollout")
    runtime.never_ready(prefix="web-")
    restart(kube_api, "web")
    wait(lambda: len(pods_of(kube_api, "web")) == 2 and any(
        container_status(p).get("state", {}).get("running") and not ready(p) for p in pods_of(kube_api, "web")),
        what="the surge pod running")
    time.sleep(0.5)
    states = sorted(ready(p) for p in pods_of(kube_api, "web"))
    assert states == [False, True]
    status = deployment(kube_api, "web")["status"]
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (2, 1, 1)


def test_a_bare_pod_is_scheduled_and_started(kube_api: FakeKubeAPI, runtime: PodRuntime) -> None:
    container = {"name": "debug", "image": "busybox:1", "env": [{"name": "A", "value": "1"}]}
    kube_api.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug", "namespace": "coder"},
                  "spec": {"containers": [container]}})
    pod = wait(lambda: (p := kube_api.get("Pod", "coder", "debug")) is not None and ready(p) and p, what="Ready")
    assert pod["spec"]["nodeName"] and pod["status"]["podIP"] and pod["status"]["phase"] == "Running"
    assert runtime.env_of("coder", "debug", "debug") == {"HOSTNAME": "debug", "A": "1"}


def test_deleted_pod_and_scaling(kube_api: FakeKubeAPI, runtime: PodRuntime) -> None:
    kube_api.put(web(replicas=2))
    wait(lambda: settled(kube_api, "web", 2))
    kube_api.patch("Deployment", "coder", "web", {"spec": {"replicas": 0}})
    wait(lambda: not pods_of(kube_api, "web"), what="scale to 0")
    kube_api.patch("Deployment", "coder", "web", {"spec": {"replicas": 1}})
    wait(lambda: settled(kube_api, "web", 1), what="scale to 1")
    assert len(by_hash(kube_api, "web")) == 1


@needs_kubectl
def test_kubectl_rollout_restart_and_status(kube_api: FakeKubeAPI) -> None:
    with PodRuntime(tick=0.4).attach(kube_api) as rt:
        kube_api.put(web(replicas=2))
        wait(lambda: settled(kube_api, "web", 2))
        before = set(by_hash(kube_api, "web"))
        kubectl(kube_api, "rollout", "restart", "deployment/web")
        assert any(not ready(p) for p in pods_of(kube_api, "web")), "the restart starts with a new, unready pod"
        out = kubectl(kube_api, "rollout", "status", "deployment/web", "--timeout=30s").stdout
        assert "Waiting for deployment \"web\" rollout to finish" in out
        assert 'deployment "web" successfully rolled out' in out
        assert set(by_hash(kube_api, "web")).isdisjoint(before)
        history = kubectl(kube_api, "get", "rs", "-l", "app=web", "-o", "name").stdout.split()
        assert len(history) == 2
        assert not rt.errors


@needs_kubectl
def test_kubectl_rollout_status_reports_the_deadline(kube_api: FakeKubeAPI) -> None:
    with PodRuntime(tick=0.05, restart_backoff=0.1, progress_deadline=1.0).attach(kube_api) as rt:
        kube_api.put(web(replicas=1))
        wait(lambda: settled(kube_api, "web", 1))
        rt.crash_next(5, prefix="web-")
        kubectl(kube_api, "rollout", "restart", "deployment/web")
        result = kubectl(kube_api, "rollout", "status", "deployment/web", "--timeout=30s", check=False)
        assert result.returncode != 0
        assert 'deployment "web" exceeded its progress deadline' in result.stderr


# environment and volumes ----------------------------------------------------------------------------------


def _secret(api: FakeKubeAPI, token: str) -> None:
    api.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secrets", "namespace": "coder"},
             "stringData": {"token": token, "mode": "strict"}})


def _app() -> dict[str, Any]:
    return web("app", 1, env=[
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app-secrets", "key": "token"}}},
        {"name": "TOKEN_FILE", "value": "/etc/app-secrets/token"},
        {"name": "GREETING", "value": "token in $(TOKEN_FILE)"}],
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        container={"envFrom": [{"secretRef": {"name": "app-secrets"}, "prefix": "ALL_"}],
                   "volumeMounts": [{"name": "secrets", "mountPath": "/etc/app-secrets", "readOnly": True}]},
        volumes=[{"name": "secrets", "secret": {"secretName": "app-secrets"}}])


def _read(api: FakeKubeAPI, pod: str) -> str:
    script = 'printf "%s|%s|" "$TOKEN" "$ALL_token"; cat "$TOKEN_FILE"; printf "|"; cat /etc/app-secrets/token'
    return kubectl(api, "exec", pod, "--", "sh", "-c", script).stdout


@needs_kubectl
def test_env_is_fixed_at_start_while_volume_files_follow(kube_api: FakeKubeAPI) -> None:
    _secret(kube_api, "one")
    with PodRuntime(tick=0.05, volume_delay=1.5).attach(kube_api) as rt:
        kube_api.put(_app())
        wait(lambda: settled(kube_api, "app", 1))
        (pod,) = (p["metadata"]["name"] for p in pods_of(kube_api, "app"))
        assert _read(kube_api, pod) == "one|one|one|one"
        env = rt.env_of("coder", pod, "app")
        assert env is not None and env["GREETING"] == "token in /etc/app-secrets/token"
        mounted = Path(rt.mounts_of("coder", pod, "app")["/etc/app-secrets"])
        assert (mounted / "token").read_text() == "one"

        _secret(kube_api, "two")
        changed = time.monotonic()
        time.sleep(0.5)
        assert (mounted / "token").read_text() == "one", "volume files follow only after the sync delay"
        wait(lambda: (mounted / "token").read_text() == "two", timeout=5, what="the volume to follow the Secret")
        assert time.monotonic() - changed >= 1.4
        assert _read(kube_api, pod) == "one|one|two|two", "env stays as the container started; files follow"

        # a rollout restart after the Secret changed: the new pod starts with the new value, the old pod
        # (held by a new pod that never becomes Ready) keeps the old one
        rt.never_ready(prefix="app-")
        restart(kube_api, "app")
        new = wait(lambda: [p["metadata"]["name"] for p in pods_of(kube_api, "app")
                            if p["metadata"]["name"] != pod and container_status(p).get("state", {}).get("running")],
                   what="the new pod running")[0]
        assert _read(kube_api, new) == "two|two|two|two"
        assert _read(kube_api, pod) == "one|one|two|two"
        assert (rt.env_of("coder", pod, "app") or {}).get("TOKEN") == "one"
        assert not rt.errors


@needs_kubectl
def test_bitnami_password_file_follows_the_secret_in_exec(lab: Lab) -> None:
    """A script as coderctl sends to the PostgreSQL pod reads the chart's password file at its in-pod path."""
    rt = lab.enable_runtime(tick=0.05, volume_delay=0.5)
    sts = lab.kube.get("StatefulSet", "coder", "coder-coder-postgresql")
    assert sts is not None
    pod_spec = sts["spec"]["template"]["spec"]
    pod_spec["volumes"].append({"name": "postgresql-password", "secret": {
        "secretName": "coder-database-secrets",
        "items": [{"key": "coder-user-password", "path": "password"},
                  {"key": "postgres-admin-password", "path": "postgres-password"}]}})
    pod_spec["containers"][0]["volumeMounts"].append(
        {"name": "postgresql-password", "mountPath": "/opt/bitnami/postgresql/secrets"})
    before = lab.kube.get("Pod", "coder", "coder-coder-postgresql-0")
    assert before is not None
    lab.kube.put(sts)
    wait(lambda: (p := lab.kube.get("Pod", "coder", "coder-coder-postgresql-0")) is not None
         and p["metadata"]["uid"] != before["metadata"]["uid"] and ready(p), what="the new PostgreSQL pod")
    script = ('F=${POSTGRES_PASSWORD_FILE:-/opt/bitnami/postgresql/secrets/password}; unset POSTGRES_PASSWORD; '
              'PGPASSWORD=$(cat "$F") psql -X -w -tA -U coder -d coder -c "select current_user"')
    done = kubectl(lab, "exec", "coder-coder-postgresql-0", "--", "sh", "-c", script)
    assert done.stdout.strip() == "coder"

    lab.kube.patch("Secret", "coder", "coder-database-secrets",
                   {"data": {"coder-user-password": base64.b64encode(b"rotated-elsewhere").decode()}})
    wait(lambda: kubectl(lab, "exec", "coder-coder-postgresql-0", "--", "sh", "-c", script, check=False).returncode,
         timeout=10, what="the password file to follow the Secret")
    failed = kubectl(lab, "exec", "coder-coder-postgresql-0", "--", "sh", "-c", script, check=False)
    assert 'password authentication failed for user "coder"' in failed.stderr
    from_env = 'PGPASSWORD=$POSTGRES_PASSWORD psql -X -w -tA -U coder -d coder -c "select current_user"'
    still = kubectl(lab, "exec", "coder-coder-postgresql-0", "--", "sh", "-c", from_env)
    assert still.stdout.strip() == "coder", "the environment keeps the value the container started with"
    assert not rt.errors


def test_missing_secret_key_is_a_container_config_error(kube_api: FakeKubeAPI, runtime: PodRuntime) -> None:
    kube_api.put(web("broken", 1, env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]))
    pod = wait(lambda: [p for p in pods_of(kube_api, "broken")
                        if container_status(p).get("state", {}).get("waiting", {}).get("reason")
                        == "CreateContainerConfigError"], what="CreateContainerConfigError")[0]
    assert container_status(pod)["state"]["waiting"]["message"] == 'secret "nope" not found'


# Coder pods log in to the lab's PostgreSQL -----------------------------------------------------------------


def test_lib_pq_url_reading() -> None:
    target = parse_url("postgresql://coder:p%2Fw%40d@coder-coder-postgresql:5432/coder?sslmode=disable")
    assert (target.host, target.port, target.user, target.password, target.dbname, target.sslmode) == \
        ("coder-coder-postgresql", 5432, "coder", "p/w@d", "coder", "disable")
    assert parse_url("postgres://coder:x@db/coder").sslmode == "require"
    with pytest.raises(PqError, match="invalid port"):
        parse_url("postgresql://coder:a?b@db:5432/coder")
    with pytest.raises(PqError, match="unsupported sslmode"):
        parse_url("postgresql://coder:x@db/coder?sslmode=prefer")


def _set_url(lab: Lab, url: str) -> None:
    encoded = base64.b64encode(url.encode()).decode()
    lab.kube.patch("Secret", "coder", "coder-database-secrets", {"data": {"database-url": encoded}})


def _coder_pods(lab: Lab) -> list[dict[str, Any]]:
    return [p for p in lab.kube.list("Pod", "coder") if p["metadata"]["name"].startswith("coder-")
            and not p["metadata"]["name"].startswith("coder-coder-postgresql")]


@needs_kubectl
def test_coder_pod_with_a_good_url_becomes_ready(lab: Lab) -> None:
    rt = lab.enable_runtime(tick=0.05, login_retry=1.0)
    restart(lab.kube, "coder")
    wait(lambda: settled(lab.kube, "coder", 1) and [p["metadata"]["name"] for p in _coder_pods(lab)] != [CODER_POD],
         what="the Coder rollout")
    (pod,) = _coder_pods(lab)
    assert ready(pod) and container_status(pod)["restartCount"] == 0
    logs = kubectl(lab, "logs", pod["metadata"]["name"]).stdout
    assert "database migrations complete" in logs and "retrying" not in logs
    assert not rt.errors


@pytest.mark.parametrize(("case", "expected"), [
    pytest.param("wrong-host", 'error="dial tcp: lookup coder-postgresql on 10.43.0.10:53: no such host"',
                 id="wrong-host"),
    pytest.param("wrong-password", 'error="pq: password authentication failed for user \\"coder\\""',
                 id="wrong-password"),
    pytest.param("no-sslmode", 'error="pq: SSL is not enabled on the server"', id="no-sslmode"),
])
@needs_kubectl
def test_coder_pod_with_a_bad_url_crash_loops(lab: Lab, case: str, expected: str) -> None:
    good, password = lab.values["DATABASE_URL"], lab.postgres.user_password
    url = {"wrong-host": database_url(password, host="coder-postgresql"),
           "wrong-password": database_url("not-the-password"),
           "no-sslmode": database_url(password, query="")}[case]
    assert good == database_url(password)
    rt = lab.enable_runtime(tick=0.05, login_retry=0.5, login_interval=0.1, restart_backoff=0.1)
    _set_url(lab, url)
    restart(lab.kube, "coder")
    crashing = wait(lambda: [p for p in _coder_pods(lab) if container_status(p).get("restartCount", 0) >= 2],
                    timeout=20, what="restartCount 2")[0]
    name = crashing["metadata"]["name"]
    assert name != CODER_POD
    cs = container_status(crashing)
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert "waiting" in cs["state"] or "running" in cs["state"]
    old = lab.kube.get("Pod", "coder", CODER_POD)
    assert old is not None and ready(old), "the old pod keeps serving"

    previous = kubectl(lab, "logs", name, "--previous").stdout
    assert "ping postgres: retrying  " + expected in previous
    assert "connect to postgres failed" in previous
    assert previous.rstrip().splitlines()[-1].startswith("error: connect to postgres: unable to connect after ")
    lab.assert_no_secrets(previous)
    table = kubectl(lab, "get", "pod", name).stdout
    assert "CrashLoopBackOff" in table or "Running" in table

    # the Secret is fixed: the next start of the same pod's container logs in and the rollout completes
    _set_url(lab, good)
    wait(lambda: settled(lab.kube, "coder", 1) and lab.kube.get("Pod", "coder", CODER_POD) is None,
         timeout=20, what="the rollout to finish once the URL is right")
    assert not rt.errors
