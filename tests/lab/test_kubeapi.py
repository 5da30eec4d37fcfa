"""The fake Kubernetes API: store, patches, selectors, scenarios, and the official Python client against it."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.kube.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from lab.kube.selectors import matcher, parse_label_selector
from lab.kubeapi import (
    CODER_POD,
    REFERENCE_MANIFESTS,
    FakeKubeAPI,
    kube_api,
    lab_values,
    load_manifests,
    scenario_names,
    substitute,
)
from lab.tls import lab_ca

pytestmark = pytest.mark.fake_only

REQUIRED_SCENARIOS = {
    "coder-crashloop-oom", "coder-scaled-zero", "coder-rollout-stuck", "coder-imagepull", "postgres-pvc-pending",
    "lb-pending", "lb-ip-outside-pool", "ingress-short-timeouts", "db-wrong-host", "db-sslmode-missing",
    "infisical-sync-failing", "infisical-token-missing", "access-url-mismatch", "forbidden-pods",
    "flux-not-ready", "ingress-vulnerable-controller",
}


@pytest.fixture
def store_api() -> FakeKubeAPI:
    """The reference deployment without a server (store-level tests)."""
    return FakeKubeAPI.reference()


def _secret(api: FakeKubeAPI, ns: str, name: str) -> dict[str, str]:
    data = api.secret_data(ns, name)
    assert data is not None
    return data


# values and manifests ------------------------------------------------------------------------------------


def test_lab_values_are_random_and_url_safe() -> None:
    first, second = lab_values(), lab_values()
    assert first["CODER_USER_PASSWORD"] != second["CODER_USER_PASSWORD"]
    password = first["CODER_USER_PASSWORD"]
    assert set("/?#@+=") <= set(password)
    url = urllib.parse.urlsplit(first["DATABASE_URL"])
    assert (url.scheme, url.hostname, url.port, url.path, url.query) == (
        "postgresql", "coder-coder-postgresql", 5432, "/coder", "sslmode=disable")
    assert urllib.parse.unquote(url.password or "") == password
    assert first["INFISICAL_TOKEN"].startswith("st.") and first["INFISICAL_TOKEN"].count(".") == 3


def test_lab_values_override_follows_into_database_url() -> None:
    values = lab_values(CODER_USER_PASSWORD="a/b?c")
    assert values["DATABASE_URL"].startswith("postgresql://coder:a%2Fb%3Fc@")


def test_substitute_placeholders() -> None:
    values = {"PW": "p@ss/word"}
    out = substitute({"a": ["${PW}", "x${PW|urlencode}y"], "t": "${NOW-1d}", "n": 3}, values)
    assert out["a"] == ["p@ss/word", "xp%40ss%2Fwordy"]
    assert out["t"].endswith("Z") and len(out["t"]) == 20
    assert out["n"] == 3
    with pytest.raises(KeyError, match="MISSING"):
        substitute("${MISSING}", values)


def test_reference_seed(store_api: FakeKubeAPI) -> None:
    values = store_api.values
    assert _secret(store_api, "coder", "coder-database-secrets") == {
        "postgres-admin-password": values["POSTGRES_ADMIN_PASSWORD"],
        "coder-user-password": values["CODER_USER_PASSWORD"],
        "database-url": values["DATABASE_URL"],
    }
    assert _secret(store_api, "infisical-operator", "infisical-service-token") == {
        "infisicalToken": values["INFISICAL_TOKEN"]}
    secret = store_api.get("Secret", "coder", "coder-database-secrets")
    infisical = store_api.get("InfisicalSecret", "coder", "coder-database-secrets")
    assert secret is not None and infisical is not None
    assert "stringData" not in secret
    assert secret["metadata"]["ownerReferences"][0]["uid"] == infisical["metadata"]["uid"]
    pod = store_api.get("Pod", "coder", CODER_POD)
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert [e["reason"] for e in store_api.list("Event", "coder")
            if e["involvedObject"]["name"] == CODER_POD] == ["Scheduled", "Pulled", "Created", "Started"]
    assert all(e["involvedObject"].get("uid") for e in store_api.list("Event"))
    names = {(o["kind"], o["metadata"]["name"]) for o in load_manifests(REFERENCE_MANIFESTS, lab_values())}
    for expected in [("Deployment", "coder"), ("StatefulSet", "coder-coder-postgresql"),
                     ("PersistentVolumeClaim", "data-coder-coder-postgresql-0"),
                     ("Service", "coder-coder-postgresql-hl"),
                     ("Ingress", "coder-workspaces-wildcard"), ("ConfigMap", "proxy-headers"),
                     ("IPAddressPool", "default-pool"), ("Kustomization", "apps"), ("HelmRelease", "coder-postgresql")]:
        assert expected in names


# store semantics -------------------------------------------------------------------------------------------


def test_store_bookkeeping(store_api: FakeKubeAPI) -> None:
    created = store_api.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "coder"},
                             "data": {"a": "1"}})
    meta = created["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    replaced = store_api.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "coder"},
                              "data": {"a": "2"}})
    assert replaced["metadata"]["uid"] == meta["uid"]
    assert int(replaced["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    replaced["data"]["a"] = "mutated"
    assert store_api.get("ConfigMap", "coder", "x")["data"] == {"a": "2"}  # type: ignore[index]
    store_api.delete("ConfigMap", "coder", "x")
    assert store_api.get("ConfigMap", "coder", "x") is None
    store_api.delete("ConfigMap", "coder", "x")  # missing is fine


def test_generation_bumps_on_spec_change_only(store_api: FakeKubeAPI) -> None:
    gen = store_api.get("Ingress", "coder", "coder")["metadata"]["generation"]  # type: ignore[index]
    store_api.patch("Ingress", "coder", "coder", {"metadata": {"labels": {"x": "y"}}})
    assert store_api.get("Ingress", "coder", "coder")["metadata"]["generation"] == gen  # type: ignore[index]
    store_api.patch("Ingress", "coder", "coder", {"spec": {"ingressClassName": "other"}})
    assert store_api.get("Ingress", "coder", "coder")["metadata"]["generation"] == gen + 1  # type: ignore[index]


def test_patch_missing_object_raises(store_api: FakeKubeAPI) -> None:
    with pytest.raises(KeyError):
        store_api.patch("Secret", "coder", "nope", {"data": {}})


def test_delete_cascades_to_owned_objects(store_api: FakeKubeAPI) -> None:
    store_api.delete("Deployment", "coder", "coder")
    assert store_api.get("ReplicaSet", "coder", "coder-6c8d7f9b5d") is None
    assert store_api.get("Pod", "coder", CODER_POD) is None
    store_api.delete("Namespace", None, "ingress-nginx")
    assert store_api.list("ConfigMap", "ingress-nginx") == []


def test_controller_runs_on_template_change(store_api: FakeKubeAPI) -> None:
    store_api.set_logs("coder", CODER_POD, "coder", "hello\n")
    store_api.patch("Deployment", "coder", "coder",
                    {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}})
    pods = store_api.list("Pod", "coder")
    coder_pods = [p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/name") == "coder"]
    assert len(coder_pods) == 1 and coder_pods[0]["metadata"]["name"] != CODER_POD
    deployment = store_api.get("Deployment", "coder", "coder")
    assert deployment is not None
    assert deployment["status"]["observedGeneration"] == deployment["metadata"]["generation"] == 2
    store_api.patch("Deployment", "coder", "coder", {"spec": {"replicas": 3}})
    assert len([p for p in store_api.list("Pod", "coder") if "pod-template-hash" in p["metadata"]["labels"]]) == 3


def test_unknown_kind_is_rejected(store_api: FakeKubeAPI) -> None:
    with pytest.raises(ValueError, match="DaemonSet"):
        store_api.list("DaemonSet")


# patches and selectors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "patch", "result"), [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_rfc7386_examples(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


def test_strategic_merge_patch_merges_named_lists() -> None:
    target = {"spec": {"containers": [{"name": "a", "image": "x:1", "env": [{"name": "K", "value": "1"}]},
                                      {"name": "b", "image": "y:1"}]}}
    patch = {"spec": {"containers": [{"name": "a", "image": "x:2"}, {"name": "b", "$patch": "delete"}],
                      "$setElementOrder/containers": [{"name": "a"}]}}
    assert strategic_merge_patch(target, patch) == {
        "spec": {"containers": [{"name": "a", "image": "x:2", "env": [{"name": "K", "value": "1"}]}]}}


def test_json_patch_operations() -> None:
    doc = {"metadata": {"labels": {"a": "1"}}, "list": [1, 2]}
    out = json_patch(doc, [
        {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
        {"op": "replace", "path": "/list/0", "value": 9},
        {"op": "add", "path": "/list/-", "value": 3},
        {"op": "remove", "path": "/metadata/labels/a"},
        {"op": "copy", "from": "/list", "path": "/copy"},
        {"op": "move", "from": "/copy", "path": "/moved"},
        {"op": "test", "path": "/moved/2", "value": 3},
    ])
    assert out == {"metadata": {"labels": {"b/c": "2"}}, "list": [9, 2, 3], "moved": [9, 2, 3]}
    assert doc["list"] == [1, 2]
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "test", "path": "/list/0", "value": 5}])
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=coder", True), ("app==coder", True), ("app!=coder", False), ("app in (coder, x)", True),
    ("app notin (coder)", False), ("tier", False), ("!tier", True), ("app=coder,role in (db,web)", True),
    ("app=coder,role=db", False), ("", True),
])
def test_label_selectors(selector: str, expected: bool) -> None:
    assert parse_label_selector(selector)({"app": "coder", "role": "web"}) is expected


def test_field_selectors() -> None:
    event = {"metadata": {"name": "e"}, "involvedObject": {"name": "p", "kind": "Pod"}}
    assert matcher(None, "involvedObject.name=p,involvedObject.kind=Pod")(event)
    assert not matcher(None, "involvedObject.kind!=Pod")(event)
    assert matcher(None, "metadata.name=e")(event)


# scenarios -------------------------------------------------------------------------------------------------


def test_all_required_scenarios_exist() -> None:
    assert set(scenario_names()) >= REQUIRED_SCENARIOS


@pytest.mark.parametrize("name", sorted(REQUIRED_SCENARIOS))
def test_scenario_applies(name: str) -> None:
    api = FakeKubeAPI.reference()
    api.apply_scenario(name)
    for obj in api.list("Event"):
        assert obj["involvedObject"].get("uid"), obj["metadata"]["name"]


def test_scenario_crashloop(store_api: FakeKubeAPI) -> None:
    store_api.apply_scenario("coder-crashloop-oom")
    status = store_api.get("Pod", "coder", CODER_POD)["status"]["containerStatuses"][0]  # type: ignore[index]
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["lastState"]["terminated"] == {**status["lastState"]["terminated"], "reason": "OOMKilled",
                                                 "exitCode": 137}
    assert status["restartCount"] == 7 and status["ready"] is False
    deployment = store_api.get("Deployment", "coder", "coder")["status"]  # type: ignore[index]
    assert "availableReplicas" not in deployment
    assert {c["type"]: c["status"] for c in deployment["conditions"]}["Available"] == "False"


def test_scenario_database_urls(store_api: FakeKubeAPI) -> None:
    password = store_api.values["CODER_USER_PASSWORD"]
    store_api.apply_scenario("db-wrong-host")
    url = urllib.parse.urlsplit(_secret(store_api, "coder", "coder-database-secrets")["database-url"])
    assert url.hostname == "coder-postgresql" and urllib.parse.unquote(url.password or "") == password
    store_api.apply_scenario("db-sslmode-missing")
    url = urllib.parse.urlsplit(_secret(store_api, "coder", "coder-database-secrets")["database-url"])
    assert url.hostname == "coder-coder-postgresql" and url.query == ""
    assert _secret(store_api, "coder", "coder-database-secrets")["coder-user-password"] == password


def test_scenario_deletes_and_storage(store_api: FakeKubeAPI) -> None:
    store_api.apply_scenario("infisical-token-missing")
    assert store_api.get("Secret", "infisical-operator", "infisical-service-token") is None
    store_api.apply_scenario("postgres-pvc-pending")
    pvc = store_api.get("PersistentVolumeClaim", "coder", "data-coder-coder-postgresql-0")
    assert pvc is not None and pvc["status"] == {"phase": "Pending"}
    assert store_api.get("StorageClass", None, "longhorn") is None
    warnings = [e for e in store_api.list("Event", "coder") if e["reason"] == "ProvisioningFailed"]
    assert warnings[0]["message"] == 'storageclass.storage.k8s.io "longhorn" not found'
    assert warnings[0]["type"] == "Warning"


def test_scenario_from_path(store_api: FakeKubeAPI, tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(json.dumps({
        "description": "custom",
        "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new", "namespace": "coder"},
                     "data": {"token": "${INFISICAL_TOKEN}"}}],
        "fake": {"logs": [{"namespace": "coder", "pod": CODER_POD, "container": "coder", "current": "x"}]},
    }))
    store_api.apply_scenario(path)
    assert store_api.get("ConfigMap", "coder", "new")["data"]["token"] == store_api.values["INFISICAL_TOKEN"]  # type: ignore[index]


# the official Python client ----------------------------------------------------------------------------------


@pytest.fixture
def k8s(kube_api: FakeKubeAPI) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kube_api.kubeconfig_path))
    yield client
    client.close()


def test_python_client_reads_the_deployment(kube_api: FakeKubeAPI, k8s: Any) -> None:
    from kubernetes import client

    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    deployment = apps.read_namespaced_deployment("coder", "coder")
    container = deployment.spec.template.spec.containers[0]
    assert container.image == "ghcr.io/coder/coder:v2.25.0"
    env = {e.name: e for e in container.env}
    assert env["CODER_ACCESS_URL"].value == "https://coder.xuperson.org"
    assert env["CODER_PG_CONNECTION_URL"].value_from.secret_key_ref.key == "database-url"
    assert container.security_context.run_as_user == 1000
    assert deployment.status.available_replicas == 1
    pods = core.list_namespaced_pod("coder", label_selector="app.kubernetes.io/name=coder")
    assert [p.metadata.name for p in pods.items] == [CODER_POD]
    assert pods.items[0].status.container_statuses[0].ready is True
    secret = core.read_namespaced_secret("coder-database-secrets", "coder")
    assert base64.b64decode(secret.data["database-url"]).decode() == kube_api.values["DATABASE_URL"]
    events = core.list_namespaced_event("coder", field_selector=f"involvedObject.name={CODER_POD}")
    assert len(events.items) == 4


def test_python_client_lists_every_kind(k8s: Any) -> None:
    """Every seeded object deserialises with client-side validation on (required fields present)."""
    from kubernetes import client

    core, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    calls = [core.list_pod_for_all_namespaces, core.list_service_for_all_namespaces,
             core.list_secret_for_all_namespaces, core.list_config_map_for_all_namespaces,
             core.list_event_for_all_namespaces, core.list_endpoints_for_all_namespaces,
             core.list_persistent_volume_claim_for_all_namespaces, core.list_persistent_volume,
             core.list_namespace, core.list_service_account_for_all_namespaces,
             apps.list_deployment_for_all_namespaces, apps.list_stateful_set_for_all_namespaces,
             apps.list_replica_set_for_all_namespaces, client.NetworkingV1Api(k8s).list_ingress_for_all_namespaces,
             client.NetworkingV1Api(k8s).list_ingress_class, client.StorageV1Api(k8s).list_storage_class,
             client.EventsV1Api(k8s).list_event_for_all_namespaces]
    for call in calls:
        assert call().items, call.__name__


def test_python_client_custom_objects(k8s: Any) -> None:
    from kubernetes import client

    custom = client.CustomObjectsApi(k8s)
    infisical = custom.get_namespaced_custom_object(
        "secrets.infisical.com", "v1alpha1", "coder", "infisicalsecrets", "coder-database-secrets")
    conditions = {c["type"]: c for c in infisical["status"]["conditions"]}
    assert conditions["secrets.infisical.com/ReadyToSyncSecrets"]["status"] == "True"
    assert infisical["spec"]["authentication"]["serviceToken"]["secretsScope"] == {"envSlug": "prod",
                                                                                   "secretsPath": "/"}
    releases = custom.list_namespaced_custom_object("helm.toolkit.fluxcd.io", "v2", "coder", "helmreleases")
    assert sorted(r["metadata"]["name"] for r in releases["items"]) == ["coder", "coder-postgresql"]
    pool = custom.get_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system", "ipaddresspools",
                                               "default-pool")
    assert pool["spec"]["addresses"] == ["192.168.80.100-192.168.80.150"]
    custom.patch_namespaced_custom_object_status(
        "secrets.infisical.com", "v1alpha1", "coder", "infisicalsecrets", "coder-database-secrets",
        {"status": {"conditions": []}})
    assert custom.get_namespaced_custom_object(
        "secrets.infisical.com", "v1alpha1", "coder", "infisicalsecrets",
        "coder-database-secrets")["status"] == {"conditions": []}


def test_python_client_errors(kube_api: FakeKubeAPI, k8s: Any) -> None:
    from kubernetes import client

    core = client.CoreV1Api(k8s)
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_pod("nope", "coder")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'pods "nope" not found'
    with pytest.raises(client.ApiException) as no_namespace:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "x"}})
    assert json.loads(no_namespace.value.body)["message"] == 'namespaces "nowhere" not found'
    core.create_namespaced_config_map("coder", {"metadata": {"name": "again"}})
    with pytest.raises(client.ApiException) as conflict:
        core.create_namespaced_config_map("coder", {"metadata": {"name": "again"}})
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "AlreadyExists"
    kube_api.forbid("list", "pods", "coder")
    with pytest.raises(client.ApiException) as denied:
        core.list_namespaced_pod("coder")
    assert denied.value.status == 403
    assert json.loads(denied.value.body)["message"] == (
        'pods is forbidden: User "lab" cannot list resource "pods" in API group "" in the namespace "coder"')
    with pytest.raises(client.ApiException):
        core.list_pod_for_all_namespaces()
    assert core.list_namespaced_pod("ingress-nginx").items


def test_python_client_bad_token(kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    from kubernetes import client, config

    kube_api.token = "wrong"
    path = kube_api.write_kubeconfig(tmp_path / "bad")
    api = config.new_client_from_config(config_file=str(path))
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(api).list_namespace()
    assert err.value.status == 401
    api.close()


def test_python_client_scale_and_patch(kube_api: FakeKubeAPI, k8s: Any) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(k8s)
    apps.patch_namespaced_deployment_scale("coder", "coder", {"spec": {"replicas": 2}})
    pods = [p for p in kube_api.list("Pod", "coder")
            if p["metadata"]["labels"].get("app.kubernetes.io/name") == "coder"]
    assert len(pods) == 2
    assert apps.read_namespaced_deployment_status("coder", "coder").status.ready_replicas == 2
    apps.patch_namespaced_deployment("coder", "coder", {"metadata": {"annotations": {"x": "y"}},
                                                        "status": {"replicas": 99}})
    assert kube_api.get("Deployment", "coder", "coder")["status"]["replicas"] == 2  # type: ignore[index]
    client.CoreV1Api(k8s).patch_namespaced_secret(
        "coder-database-secrets", "coder", [{"op": "replace", "path": "/data/database-url",
                                             "value": base64.b64encode(b"postgresql://x").decode()}])
    assert kube_api.secret_data("coder", "coder-database-secrets")["database-url"] == "postgresql://x"  # type: ignore[index]


def test_python_client_logs(kube_api: FakeKubeAPI, k8s: Any) -> None:
    from kubernetes import client

    core = client.CoreV1Api(k8s)
    assert "Started HTTP listener at http://0.0.0.0:8080" in core.read_namespaced_pod_log(CODER_POD, "coder")
    assert core.read_namespaced_pod_log(CODER_POD, "coder", tail_lines=1).count("\n") == 1
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod_log(CODER_POD, "coder", previous=True)
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == (
        f'previous terminated container "coder" in pod "{CODER_POD}" not found')


def test_python_client_exec(kube_api: FakeKubeAPI, k8s: Any) -> None:
    from kubernetes import client
    from kubernetes.stream import stream

    core = client.CoreV1Api(k8s)
    ws = stream(core.connect_get_namespaced_pod_exec, CODER_POD, "coder",
                command=["sh", "-c", "printf out; printf err >&2; exit 4"], stdout=True, stderr=True,
                stdin=False, tty=False, _preload_content=False, binary=True)
    ws.run_forever(timeout=10)
    assert ws.returncode == 4
    assert (ws.read_stdout(), ws.read_stderr()) == (b"out", b"err")
    ws = stream(core.connect_get_namespaced_pod_exec, CODER_POD, "coder", command=["cat"], stdout=True,
                stderr=True, stdin=True, tty=False, _preload_content=False, binary=True)
    assert ws.subprotocol == "v5.channel.k8s.io"
    ws.write_stdin(b"\x00\xffbinary")
    ws.close_channel(0)
    ws.run_forever(timeout=10)
    assert ws.returncode == 0 and ws.read_stdout() == b"\x00\xffbinary"
    assert kube_api.exec_log[-1] == {"namespace": "coder", "pod": CODER_POD, "container": "coder",
                                     "command": ["cat"], "exit_code": 0}
    env = stream(core.connect_get_namespaced_pod_exec, CODER_POD, "coder", command=["printenv",
                 "CODER_PG_CONNECTION_URL"], stdout=True, stderr=True, stdin=False, tty=False)
    assert env.strip() == kube_api.values["DATABASE_URL"]


def test_python_client_access_review_and_watch(kube_api: FakeKubeAPI, k8s: Any) -> None:
    from kubernetes import client, watch

    auth = client.AuthorizationV1Api(k8s)

    def allowed(verb: str, resource: str, ns: str) -> bool:
        body = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(verb=verb, resource=resource, namespace=ns)))
        return bool(auth.create_self_subject_access_review(body).status.allowed)

    kube_api.forbid("get", "secrets", "coder")
    assert allowed("list", "pods", "coder") and not allowed("get", "secrets", "coder")
    assert allowed("get", "secrets", "flux-system")
    core = client.CoreV1Api(k8s)
    watcher = watch.Watch()
    seen: list[tuple[str, str]] = []
    for event in watcher.stream(core.list_namespaced_config_map, "ingress-nginx", timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            kube_api.patch("ConfigMap", "ingress-nginx", "proxy-headers", {"data": {"X-Lab": "1"}})
        if len(seen) == 3:
            watcher.stop()
    assert seen == [("ADDED", "ingress-nginx-controller"), ("ADDED", "proxy-headers"),
                    ("MODIFIED", "proxy-headers")]


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "channel.k8s.io"])
def test_exec_older_channel_protocols(kube_api: FakeKubeAPI, protocol: str, tmp_path: Path) -> None:
    """v4 (Status JSON on channel 3) and v1 (plain text on channel 3), as older clients speak them."""
    import websocket

    ca = tmp_path / "ca.pem"
    kube_api.tls.cert_pem.write_to_path(str(ca))  # type: ignore[union-attr]
    url = (kube_api.url.replace("https://", "wss://") + f"/api/v1/namespaces/coder/pods/{CODER_POD}/exec?"
           + urllib.parse.urlencode([("command", "sh"), ("command", "-c"), ("command", "printf hi; exit 2"),
                                     ("stdout", "true"), ("stderr", "true")]))
    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {kube_api.token}"],
                                     subprotocols=[protocol], sslopt={"ca_certs": str(ca)}, timeout=10)
    frames: dict[int, bytes] = {}
    try:
        assert ws.subprotocol == protocol
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            if data:
                frames[data[0]] = frames.get(data[0], b"") + data[1:]
    finally:
        ws.close()
    assert frames[1] == b"hi"
    if protocol == "v4.channel.k8s.io":
        status = json.loads(frames[3])
        assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "2"
    else:
        assert frames[3] == b"command terminated with non-zero exit code: exit status 2"


def test_plain_http_without_tls(tmp_path: Path) -> None:
    from kubernetes import client, config

    with FakeKubeAPI.reference() as api:
        assert api.url.startswith("http://127.0.0.1:")
        k8s = config.new_client_from_config(config_file=str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        assert len(client.CoreV1Api(k8s).list_namespace().items) == 7
        k8s.close()
    assert api.request_log[-1] == ("GET", "/api/v1/namespaces")


# watch history, 410 Gone, bookmarks, preconditions, Leases ----------------------------------------------------


def test_store_history_is_bounded_and_compactable() -> None:
    from lab.kube.store import Store

    store = Store(history_limit=3)
    start = int(store.resource_version())
    for i in range(5):
        store.put({"kind": "ConfigMap", "metadata": {"name": f"h{i}", "namespace": "coder"}})
    assert store.events_since(start) is None, "the first two changes fell out of the history"
    tail = store.events_since(start + 2)
    assert [(t, o["metadata"]["name"], p) for t, o, p in tail or []] == [
        ("ADDED", "h2", None), ("ADDED", "h3", None), ("ADDED", "h4", None)]
    assert store.events_since(start + 5) == []
    store.delete("ConfigMap", "coder", "h4")
    assert [(t, p["metadata"]["name"]) for t, _, p in store.events_since(start + 5) or [] if p] == [
        ("DELETED", "h4")]
    store.compact()
    assert store.events_since(int(store.resource_version())) is None, "every position handed out is gone"
    items, rv = store.snapshot("ConfigMap", "coder")
    assert len(items) == 4 and rv == int(store.resource_version())


def test_store_delete_preconditions(store_api: FakeKubeAPI) -> None:
    from lab.kube.store import ApiError

    store = store_api._state.store
    cm = store.put({"kind": "ConfigMap", "metadata": {"name": "p", "namespace": "coder"}})
    with pytest.raises(ApiError) as stale:
        store.delete("ConfigMap", "coder", "p", resource_version="1")
    assert (stale.value.code, stale.value.reason) == (409, "Conflict")
    assert stale.value.message == (f"Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in "
                                   f"object meta: {cm['metadata']['resourceVersion']}")
    with pytest.raises(ApiError, match="UID in precondition: nope"):
        store.delete("ConfigMap", "coder", "p", uid="nope")
    store.delete("ConfigMap", "coder", "p", uid=cm["metadata"]["uid"],
                 resource_version=cm["metadata"]["resourceVersion"])
    assert store.get("ConfigMap", "coder", "p") is None


def _raw(kube_api: FakeKubeAPI, k8s: Any, method: str, path: str, body: Any = None,
         content_type: str = "application/json") -> tuple[int, list[Any]]:
    """One request through the official client's connection pool; the body's JSON lines."""
    headers = {"Authorization": f"Bearer {kube_api.token}", "Content-Type": content_type}
    response = k8s.rest_client.pool_manager.request(
        method, kube_api.url + path, headers=headers, body=None if body is None else json.dumps(body), timeout=10)
    lines = [json.loads(line) for line in response.data.splitlines() if line.strip()]
    return response.status, lines


def test_watch_resumes_from_a_resource_version(kube_api: FakeKubeAPI, k8s: Any) -> None:
    rv = kube_api._state.store.resource_version()
    kube_api.patch("ConfigMap", "ingress-nginx", "proxy-headers", {"data": {"A": "1"}})
    kube_api.patch("ConfigMap", "ingress-nginx", "proxy-headers", {"data": {"A": "2"}})
    kube_api.delete("ConfigMap", "ingress-nginx", "proxy-headers")
    status, events = _raw(kube_api, k8s, "GET", f"/api/v1/namespaces/ingress-nginx/configmaps?watch=true&"
                                               f"resourceVersion={rv}&timeoutSeconds=1&allowWatchBookmarks=true")
    assert status == 200
    assert [(e["type"], e["object"]["data"].get("A") if e["type"] != "BOOKMARK" else None) for e in events] == [
        ("MODIFIED", "1"), ("MODIFIED", "2"), ("DELETED", "2"), ("BOOKMARK", None)]
    bookmark = events[-1]["object"]
    assert bookmark == {"kind": "ConfigMap", "apiVersion": "v1",
                        "metadata": {"resourceVersion": events[2]["object"]["metadata"]["resourceVersion"]}}


def test_watch_from_a_compacted_resource_version_is_gone(kube_api: FakeKubeAPI, k8s: Any) -> None:
    rv = kube_api._state.store.resource_version()
    kube_api.compact_watch_history()
    path = f"/api/v1/namespaces/coder/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=5"
    status, events = _raw(kube_api, k8s, "GET", path)
    assert status == 200 and len(events) == 1
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"] == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                   "message": f"too old resource version: {rv} ({int(rv) + 1})",
                                   "reason": "Expired", "code": 410}
    kube_api.watch_expired_http = True
    status, body = _raw(kube_api, k8s, "GET", path)
    assert status == 410 and body[0]["reason"] == "Expired"


def test_watch_sees_a_change_made_between_list_and_watch(kube_api: FakeKubeAPI, k8s: Any) -> None:
    from kubernetes import client, watch

    core = client.CoreV1Api(k8s)
    listed = core.list_namespaced_config_map("ingress-nginx")
    kube_api.patch("ConfigMap", "ingress-nginx", "proxy-headers", {"data": {"Between": "1"}})
    watcher = watch.Watch()
    for event in watcher.stream(core.list_namespaced_config_map, "ingress-nginx",
                                resource_version=listed.metadata.resource_version, timeout_seconds=5):
        assert event["type"] == "MODIFIED" and event["object"].data["Between"] == "1"
        watcher.stop()
        break
    else:
        pytest.fail("the change made before the watch started was lost")


def test_leases_are_served(kube_api: FakeKubeAPI, k8s: Any) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    coordination = client.CoordinationV1Api(k8s)
    body = client.V1Lease(metadata=client.V1ObjectMeta(name="lab-lock"),
                          spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15))
    made = coordination.create_namespaced_lease("coder", body)
    assert made.spec.holder_identity == "a" and made.metadata.resource_version
    made.spec.holder_identity = "b"
    replaced = coordination.replace_namespaced_lease("lab-lock", "coder", made)
    assert replaced.spec.holder_identity == "b"
    with pytest.raises(ApiException) as stale:
        coordination.replace_namespaced_lease("lab-lock", "coder", made)  # made's resourceVersion is stale
    status = json.loads(stale.value.body)
    assert (stale.value.status, status["reason"], status["details"]) == (
        409, "Conflict", {"name": "lab-lock", "group": "coordination.k8s.io", "kind": "leases"})
    assert status["message"] == ('Operation cannot be fulfilled on leases.coordination.k8s.io "lab-lock": the object '
                                 "has been modified; please apply your changes to the latest version and try again")
    with pytest.raises(ApiException) as precondition:
        coordination.delete_namespaced_lease("lab-lock", "coder", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=made.metadata.resource_version)))
    assert precondition.value.status == 409
    assert [lease.metadata.name for lease in coordination.list_namespaced_lease("coder").items] == ["lab-lock"]
    coordination.delete_namespaced_lease("lab-lock", "coder", body=client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid=made.metadata.uid)))
    assert kube_api.get("Lease", "coder", "lab-lock") is None


def test_custom_resources_refuse_strategic_merge_patch(kube_api: FakeKubeAPI, k8s: Any) -> None:
    path = "/apis/secrets.infisical.com/v1alpha1/namespaces/coder/infisicalsecrets/coder-database-secrets"
    status, body = _raw(kube_api, k8s, "PATCH", path, {"metadata": {"labels": {"x": "y"}}},
                        "application/strategic-merge-patch+json")
    assert (status, body[0]["reason"]) == (415, "UnsupportedMediaType")
    assert "application/strategic-merge-patch+json" not in body[0]["message"]
    status, body = _raw(kube_api, k8s, "PATCH", path, {"metadata": {"labels": {"x": "y"}}},
                        "application/merge-patch+json")
    assert status == 200 and body[0]["metadata"]["labels"]["x"] == "y"


def test_delete_dry_run_keeps_the_object(kube_api: FakeKubeAPI, k8s: Any) -> None:
    status, body = _raw(kube_api, k8s, "DELETE", "/api/v1/namespaces/ingress-nginx/configmaps/proxy-headers",
                        {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]})
    assert status == 200 and body[0]["metadata"]["name"] == "proxy-headers"
    assert kube_api.get("ConfigMap", "ingress-nginx", "proxy-headers") is not None


def test_the_official_client_reads_the_410_error_event(kube_api: FakeKubeAPI, k8s: Any) -> None:
    from kubernetes import client, watch
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(k8s)
    rv = core.list_namespaced_config_map("coder").metadata.resource_version
    kube_api.compact_watch_history()
    with pytest.raises(ApiException) as gone:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, "coder", resource_version=rv,
                                      timeout_seconds=5):
            pass
    assert gone.value.status == 410 and "too old resource version" in str(gone.value.reason)


def test_watch_with_a_selector_sees_objects_enter_and_leave_it(kube_api: FakeKubeAPI, k8s: Any) -> None:
    rv = kube_api._state.store.resource_version()
    kube_api.patch("ConfigMap", "ingress-nginx", "proxy-headers", {"metadata": {"labels": {"lab": "in"}}})
    kube_api.patch("ConfigMap", "ingress-nginx", "proxy-headers", {"data": {"A": "1"}})
    left = kube_api.patch("ConfigMap", "ingress-nginx", "proxy-headers", {"metadata": {"labels": {"lab": "out"}}})
    kube_api.patch("ConfigMap", "ingress-nginx", "proxy-headers", {"data": {"A": "2"}})
    status, events = _raw(kube_api, k8s, "GET", f"/api/v1/namespaces/ingress-nginx/configmaps?watch=true&"
                                               f"resourceVersion={rv}&timeoutSeconds=1&labelSelector=lab%3Din")
    assert status == 200
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    deleted = events[2]["object"]
    assert deleted["metadata"]["labels"] == {"lab": "in"}, "the last content that matched"
    assert deleted["metadata"]["resourceVersion"] == left["metadata"]["resourceVersion"]
