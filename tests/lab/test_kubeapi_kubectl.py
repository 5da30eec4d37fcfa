"""Fidelity of the fake Kubernetes API, driven by the real ``kubectl`` binary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.kubeapi import CODER_POD, POSTGRES_POD, FakeKubeAPI, kube_api
from lab.postgres import LabPostgres, lab_postgres
from lab.tls import lab_ca

Kubectl = Callable[..., subprocess.CompletedProcess[bytes]]

pytestmark = [
    pytest.mark.fake_only,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]


@pytest.fixture(scope="module")
def kubectl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kubectl-cache")


def kubectl(api: FakeKubeAPI, cache: Path, *args: str, input: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBECACHEDIR"] = str(cache)
    result = subprocess.run(["kubectl", "--kubeconfig", str(api.kubeconfig_path), *args], input=input,
                            capture_output=True, env=env, timeout=60, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}")
    return result


@pytest.fixture
def k(kube_api: FakeKubeAPI, kubectl_cache: Path) -> Kubectl:
    def run(*args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return kubectl(kube_api, kubectl_cache, *args, input=input, check=check)
    return run


def _out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode()


# get and describe ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("resource", "expected"), [
    ("deployments", ["coder", "1/1"]),
    ("pods", [CODER_POD, POSTGRES_POD, "Running"]),
    ("services", ["coder", "LoadBalancer", "192.168.80.105", "coder-coder-postgresql-hl"]),
    ("ingresses", ["coder-workspaces-wildcard", "*.xuperson.org", "nginx"]),
    ("secrets", ["coder-database-secrets", "Opaque", "3"]),
    ("pvc", ["data-coder-coder-postgresql-0", "Bound", "20Gi", "longhorn"]),
    ("infisicalsecrets", ["coder-database-secrets"]),
    ("helmreleases", ["coder-postgresql", "True"]),
    ("statefulsets", ["coder-coder-postgresql", "1/1"]),
])
def test_get_tables(k: Kubectl, resource: str, expected: list[str]) -> None:
    out = _out(k("get", resource, "-n", "coder"))
    header = out.splitlines()[0]
    assert header.startswith("NAME")
    for text in expected:
        assert text in out


def test_get_all_namespaces_and_selectors(k: Kubectl) -> None:
    out = _out(k("get", "pods", "-A", "-l", "app.kubernetes.io/name in (coder,ingress-nginx)", "-o", "name"))
    assert out.split() == ["pod/coder-6c8d7f9b5d-x7k2p", "pod/ingress-nginx-controller-7d9f8c6b4f-q8v9w"]
    out = _out(k("get", "pods", "-A", "--field-selector", "metadata.namespace=coder", "-o", "name"))
    assert sorted(out.split()) == [f"pod/{CODER_POD}", f"pod/{POSTGRES_POD}"]
    assert "default-pool" in _out(k("get", "ipaddresspools", "-n", "metallb-system"))
    assert "apps" in _out(k("get", "kustomizations", "-A"))


def test_get_json_matches_the_store(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    deployment = json.loads(_out(k("get", "deployment", "coder", "-n", "coder", "-o", "json")))
    assert deployment == kube_api.get("Deployment", "coder", "coder")
    secret = json.loads(_out(k("get", "secret", "coder-database-secrets", "-o", "json")))
    assert set(secret["data"]) == {"postgres-admin-password", "coder-user-password", "database-url"}
    listing = json.loads(_out(k("get", "helmreleases", "-n", "coder", "-o", "json")))
    assert [i["metadata"]["name"] for i in listing["items"]] == ["coder", "coder-postgresql"]
    jsonpath = _out(k("get", "deploy", "coder", "-o",
                      "jsonpath={.spec.template.spec.containers[0].env[?(@.name=='CODER_ACCESS_URL')].value}"))
    assert jsonpath == "https://coder.xuperson.org"


@pytest.mark.parametrize(("args", "expected"), [
    (["deployment", "coder"], ["Replicas:", "1 desired | 1 updated | 1 total | 1 available",
                               "NewReplicaSet:   coder-6c8d7f9b5d", "ScalingReplicaSet"]),
    (["pod", CODER_POD], ["Status:           Running", "Controlled By:  ReplicaSet/coder-6c8d7f9b5d",
                          "Started container coder", "<set to the key 'database-url' in secret"]),
    (["service", "coder"], ["LoadBalancer Ingress:", "192.168.80.105", "Endpoints:"]),
    (["ingress", "coder"], ["coder.xuperson.org", "proxy-read-timeout: 3600", "coder:80"]),
    (["secret", "coder-database-secrets"], ["database-url:", "bytes"]),
    (["pvc", "data-coder-coder-postgresql-0"], ["Bound", "20Gi", "Used By:", POSTGRES_POD]),
    (["infisicalsecret", "coder-database-secrets"], ["synced 3 secrets", "Env Slug:"]),
    (["helmrelease", "coder"], ["InstallSucceeded", "Chart:"]),
])
def test_describe(k: Kubectl, args: list[str], expected: list[str]) -> None:
    out = _out(k("describe", "-n", "coder", *args))
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out}"


def test_errors_are_real_status_messages(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    missing = k("get", "pod", "nope", check=False)
    assert missing.returncode == 1
    assert missing.stderr.decode().strip() == 'Error from server (NotFound): pods "nope" not found'
    kube_api.apply_scenario("forbidden-pods")
    denied = k("get", "pods", "-n", "coder", check=False)
    assert denied.stderr.decode().strip() == (
        'Error from server (Forbidden): pods is forbidden: User "lab" cannot list resource "pods" in API group "" '
        'in the namespace "coder"')
    assert _out(k("auth", "can-i", "list", "pods", "-n", "coder", check=False)).strip() == "no"
    assert _out(k("auth", "can-i", "list", "pods", "-n", "ingress-nginx")).strip() == "yes"


# writes: rollout restart, scale, patch ---------------------------------------------------------------------


def test_rollout_restart(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    assert _out(k("rollout", "restart", "deployment/coder", "-n", "coder")).strip() == \
        "deployment.apps/coder restarted"
    deployment = kube_api.get("Deployment", "coder", "coder")
    assert deployment is not None
    assert "kubectl.kubernetes.io/restartedAt" in deployment["spec"]["template"]["metadata"]["annotations"]
    assert ("PATCH", "/apis/apps/v1/namespaces/coder/deployments/coder?fieldManager=kubectl-rollout") in \
        kube_api.request_log
    pods = [p["metadata"]["name"] for p in kube_api.list("Pod", "coder") if "pod-template-hash" in
            p["metadata"]["labels"]]
    assert len(pods) == 1 and pods[0] != CODER_POD
    status = k("rollout", "status", "deployment/coder", "-n", "coder", "--timeout=10s")
    assert 'deployment "coder" successfully rolled out' in _out(status)
    assert "coder" in _out(k("logs", "deployment/coder", "-n", "coder"))


def test_scale(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    k("scale", "deployment/coder", "-n", "coder", "--replicas=3")
    out = _out(k("get", "pods", "-l", "app.kubernetes.io/name=coder", "-o", "name"))
    assert len(out.split()) == 3
    assert "3/3" in _out(k("get", "deployment", "coder"))
    k("scale", "statefulset/coder-coder-postgresql", "--replicas=0")
    assert kube_api.get("Pod", "coder", POSTGRES_POD) is None
    k("scale", "statefulset/coder-coder-postgresql", "--replicas=1")
    assert kube_api.get("Pod", "coder", POSTGRES_POD) is not None


def test_patch_label_annotate_delete(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    k("annotate", "ingress", "coder", "nginx.ingress.kubernetes.io/proxy-read-timeout=60", "--overwrite")
    ingress = kube_api.get("Ingress", "coder", "coder")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "60"  # type: ignore[index]
    k("label", "secret", "coder-database-secrets", "lab=yes")
    k("patch", "service", "coder", "--type=merge", "-p", '{"spec":{"loadBalancerIP":"192.168.80.106"}}')
    assert kube_api.get("Service", "coder", "coder")["spec"]["loadBalancerIP"] == "192.168.80.106"  # type: ignore[index]
    k("patch", "configmap", "proxy-headers", "-n", "ingress-nginx", "--type=json",
      "-p", '[{"op":"remove","path":"/data/Upgrade"}]')
    assert "Upgrade" not in kube_api.get("ConfigMap", "ingress-nginx", "proxy-headers")["data"]  # type: ignore[index]
    k("delete", "pod", CODER_POD)
    replacement = [p for p in kube_api.list("Pod", "coder") if "pod-template-hash" in p["metadata"]["labels"]]
    assert len(replacement) == 1 and replacement[0]["metadata"]["name"] != CODER_POD


# logs ------------------------------------------------------------------------------------------------------


def test_logs_previous_in_crashloop(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    missing = k("logs", CODER_POD, "--previous", check=False)
    assert missing.returncode == 1
    assert f'previous terminated container "coder" in pod "{CODER_POD}" not found' in missing.stderr.decode()
    kube_api.apply_scenario("coder-crashloop-oom")
    previous = _out(k("logs", CODER_POD, "--previous"))
    assert previous.splitlines()[-1].split("  ")[0].endswith("[erro]")
    assert "CrashLoopBackOff" in _out(k("get", "pod", CODER_POD))
    assert "OOMKilled" in _out(k("describe", "pod", CODER_POD))
    tail = _out(k("logs", "deployment/coder", "--tail=1", "--timestamps"))
    assert tail.count("\n") == 1 and tail[:4].isdigit()


# exec ------------------------------------------------------------------------------------------------------


def test_exec_pg_dump_is_a_valid_archive(kube_api: FakeKubeAPI, k: Kubectl, lab_postgres: LabPostgres,
                                          tmp_path: Path) -> None:
    bindir = str(lab_postgres.bindir)
    env = {**lab_postgres.env("coder"), "PATH": f"{bindir}:/usr/bin:/bin"}
    kube_api.set_exec("coder", POSTGRES_POD, env=env,
                      path_map={"/opt/bitnami/postgresql/bin": bindir})
    dump = k("exec", "-n", "coder", POSTGRES_POD, "--", "pg_dump", "-Fc", "coder")
    archive = tmp_path / "coder.dump"
    archive.write_bytes(dump.stdout)
    assert dump.stdout[:5] == b"PGDMP"
    listing = subprocess.run([f"{bindir}/pg_restore", "-l", str(archive)], capture_output=True, timeout=30, check=False)
    assert listing.returncode == 0, listing.stderr
    assert b"TABLE" in listing.stdout
    full_path = k("exec", "-n", "coder", POSTGRES_POD, "--", "/opt/bitnami/postgresql/bin/pg_dump", "--version")
    assert b"pg_dump (PostgreSQL)" in full_path.stdout
    assert kube_api.exec_log[0]["command"] == ["pg_dump", "-Fc", "coder"]
    assert kube_api.exec_log[0]["container"] == "postgresql" and kube_api.exec_log[0]["exit_code"] == 0


def test_exec_stdin_round_trip(k: Kubectl) -> None:
    data = os.urandom(1 << 20)
    assert k("exec", "-i", CODER_POD, "--", "cat", input=data).stdout == data


def test_exec_exit_code_and_stderr(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    result = k("exec", CODER_POD, "--", "sh", "-c", "echo oops >&2; exit 3", check=False)
    assert result.returncode == 3
    assert result.stderr.decode().startswith("oops\n")
    assert kube_api.exec_log[-1]["exit_code"] == 3
    missing = k("exec", CODER_POD, "--", "no-such-binary", check=False)
    assert missing.returncode != 0
    assert b'"no-such-binary": executable file not found in $PATH' in missing.stderr


def test_exec_binary_output_is_exact(k: Kubectl, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    result = k("exec", CODER_POD, "--", "sh", "-c", f"head -c 5000000 /dev/urandom | tee {copy}")
    assert len(result.stdout) == 5_000_000
    assert result.stdout == copy.read_bytes()


def test_exec_container_env_and_path(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    kube_api.set_exec("coder", CODER_POD, env={"LAB": "yes"})
    out = _out(k("exec", CODER_POD, "--", "sh", "-c", 'echo "$CODER_PG_CONNECTION_URL|$LAB|$KUBE_POD_IP"'))
    assert out.strip() == f"{kube_api.values['DATABASE_URL']}|yes|10.42.0.17"


def test_exec_refused(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    kube_api.apply_scenario("coder-crashloop-oom")
    not_running = k("exec", CODER_POD, "--", "true", check=False)
    assert not_running.returncode == 1
    assert 'container not found ("coder")' in not_running.stderr.decode()
    kube_api.forbid("create", "pods/exec", "coder")
    denied = k("exec", POSTGRES_POD, "--", "true", check=False)
    assert denied.stderr.decode().strip().endswith(
        f'pods "{POSTGRES_POD}" is forbidden: User "lab" cannot create resource "pods/exec" in API group "" '
        'in the namespace "coder"')
    assert kube_api.exec_log == []


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def _wait_pid(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return int(text)
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written")


def test_exec_fault_drops_the_connection(kube_api: FakeKubeAPI, k: Kubectl, tmp_path: Path) -> None:
    kube_api.exec_fault = {"drop_after_bytes": 4096}
    pidfile = tmp_path / "pid"
    result = k("exec", CODER_POD, "--", "sh", "-c", f"echo $$ > {pidfile}; exec yes", check=False)
    assert len(result.stdout) == 4096
    assert result.returncode != 0
    assert kube_api.exec_log[-1]["exit_code"] is None
    assert _wait_gone(_wait_pid(pidfile))


def test_exec_client_disconnect_kills_the_command(kube_api: FakeKubeAPI, kubectl_cache: Path,
                                                  tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBECACHEDIR"] = str(kubectl_cache)
    proc = subprocess.Popen(["kubectl", "--kubeconfig", str(kube_api.kubeconfig_path), "exec", CODER_POD, "--",
                             "sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        pid = _wait_pid(pidfile)
    finally:
        proc.kill()
        proc.wait(10)
    assert _wait_gone(pid)


def test_unscheduled_pod(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    kube_api.apply_scenario("postgres-pvc-pending")
    assert "Pending" in _out(k("get", "pvc", "data-coder-coder-postgresql-0"))
    assert "ProvisioningFailed" in _out(k("describe", "pvc", "data-coder-coder-postgresql-0"))
    assert _out(k("logs", POSTGRES_POD)) == ""
    refused = k("exec", POSTGRES_POD, "--", "true", check=False)
    assert f"pod {POSTGRES_POD} does not have a host assigned" in refused.stderr.decode()


# writes with preconditions, Leases, watch ---------------------------------------------------------------------

LEASE = b"""\
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: lab-lock
  namespace: coder
spec:
  holderIdentity: alice
  leaseDurationSeconds: 30
"""


def test_lease_create_patch_kinds_delete(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    assert _out(k("create", "-f", "-", input=LEASE)).strip() == "lease.coordination.k8s.io/lab-lock created"
    table = _out(k("get", "leases", "-n", "coder"))
    assert table.split("\n")[0].split() == ["NAME", "HOLDER", "AGE"] and "alice" in table
    k("patch", "lease", "lab-lock", "--type=merge", "-p", '{"spec":{"holderIdentity":"bob"}}')
    k("patch", "lease", "lab-lock", "--type=json", "-p", '[{"op":"replace","path":"/spec/leaseDurationSeconds",'
                                                         '"value":60}]')
    k("patch", "lease", "lab-lock", "--type=strategic", "-p", '{"metadata":{"labels":{"lab":"yes"}}}')
    lease = kube_api.get("Lease", "coder", "lab-lock")
    assert lease is not None
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseDurationSeconds"]) == ("bob", 60)
    assert lease["metadata"]["labels"] == {"lab": "yes"}
    duplicate = k("create", "-f", "-", input=LEASE, check=False)
    assert duplicate.returncode == 1
    assert duplicate.stderr.decode().strip() == \
        'Error from server (AlreadyExists): error when creating "STDIN": leases.coordination.k8s.io "lab-lock" ' \
        "already exists"
    assert _out(k("delete", "lease", "lab-lock", "--dry-run=server")).strip() == \
        'lease.coordination.k8s.io "lab-lock" deleted (server dry run)'
    assert kube_api.get("Lease", "coder", "lab-lock") is not None
    assert _out(k("delete", "lease", "lab-lock")).strip() == 'lease.coordination.k8s.io "lab-lock" deleted'
    assert kube_api.get("Lease", "coder", "lab-lock") is None


@pytest.mark.parametrize("patch_type", ["merge", "strategic"])
def test_a_stale_resource_version_is_a_conflict(kube_api: FakeKubeAPI, k: Kubectl, patch_type: str) -> None:
    k("create", "-f", "-", input=LEASE)
    patch = '{"metadata":{"resourceVersion":"1"},"spec":{"holderIdentity":"mallory"}}'
    stale = k("patch", "lease", "lab-lock", f"--type={patch_type}", "-p", patch, check=False)
    assert stale.returncode == 1
    assert stale.stderr.decode().strip() == \
        'Error from server (Conflict): Operation cannot be fulfilled on leases.coordination.k8s.io "lab-lock": ' \
        "the object has been modified; please apply your changes to the latest version and try again"
    lease = kube_api.get("Lease", "coder", "lab-lock")
    assert lease is not None and lease["spec"]["holderIdentity"] == "alice"
    stale_json = k("patch", "lease", "lab-lock", "--type=json", "-p",
                   '[{"op":"replace","path":"/metadata/resourceVersion","value":"1"}]', check=False)
    assert "(Conflict)" in stale_json.stderr.decode()


def test_replace_with_a_stale_resource_version_is_a_conflict(kube_api: FakeKubeAPI, k: Kubectl) -> None:
    created = json.loads(_out(k("create", "-f", "-", "-o", "json", input=LEASE)))
    k("patch", "lease", "lab-lock", "--type=merge", "-p", '{"spec":{"holderIdentity":"bob"}}')
    replaced = k("replace", "-f", "-", input=json.dumps(created).encode(), check=False)
    assert replaced.returncode == 1
    assert "Error from server (Conflict)" in replaced.stderr.decode()
    assert "the object has been modified" in replaced.stderr.decode()


def test_custom_resources_refuse_strategic_merge_patch(k: Kubectl) -> None:
    refused = k("patch", "infisicalsecret", "coder-database-secrets", "-p", '{"metadata":{"labels":{"a":"b"}}}',
                check=False)
    assert refused.returncode == 1
    assert "application/strategic-merge-patch+json is not supported by secrets.infisical.com/v1alpha1, " \
           "Kind=InfisicalSecret" in refused.stderr.decode()
    k("patch", "infisicalsecret", "coder-database-secrets", "--type=merge", "-p", '{"metadata":{"labels":{"a":"b"}}}')


def test_get_watch_sees_changes_until_its_timeout(kube_api: FakeKubeAPI, kubectl_cache: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBECACHEDIR"] = str(kubectl_cache)
    args = ["kubectl", "--kubeconfig", str(kube_api.kubeconfig_path), "get", "configmaps", "-n", "ingress-nginx",
            "--watch", "--output-watch-events", "-o", "custom-columns=EVENT:.type,NAME:.object.metadata.name",
            "--no-headers", "--request-timeout=4s"]
    started = time.monotonic()
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None
        first = [proc.stdout.readline().decode().split() for _ in range(2)]
        kube_api.patch("ConfigMap", "ingress-nginx", "proxy-headers", {"data": {"X-Watched": "1"}})
        third = proc.stdout.readline().decode().split()
        rest, _ = proc.communicate(timeout=20)
    assert first == [["ADDED", "ingress-nginx-controller"], ["ADDED", "proxy-headers"]]
    assert third == ["MODIFIED", "proxy-headers"]
    assert rest == b"" and proc.returncode == 0
    assert 3.5 < time.monotonic() - started < 15, "kubectl ends the watch itself at --request-timeout"
    listed = [path for _, path in kube_api.request_log if path.startswith("/api/v1/namespaces/ingress-nginx/config")]
    assert len(listed) == 2 and "watch=true" in listed[1] and "resourceVersion=" in listed[1], \
        "kubectl lists, then watches from the list's resourceVersion"
