"""The fake Infisical operator loop against an in-memory Kubernetes store and the fake Infisical API."""

from __future__ import annotations

import base64
import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lab.infisical import TOKEN_EXPIRED_MESSAGE, FakeInfisical, fake_infisical  # noqa: F401
from lab.infisical_operator import (
    COND_AUTO_REDEPLOY,
    COND_LOADED,
    COND_READY,
    NOT_MODIFIED_LOG,
    REFERENCE_KEY_MAP,
    SYNC_FAILED_PREFIX,
    VERSION_ANNOTATION,
    FakeInfisicalOperator,
    compute_etag,
    infisical_operator,  # noqa: F401
    install_service_token,
    managed_secret_annotation_key,
    render_template,
    url_mapper,
)

STAMP = managed_secret_annotation_key("coder-database-secrets")


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class MemoryKube:
    """The four store methods the operator uses, with resourceVersion bookkeeping and write counts."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._rv = 100
        self.writes: dict[str, int] = {}
        for obj in objects:
            self.put(obj)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get((kind, namespace or "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(o) for (k, ns, _), o in sorted(self._objects.items())
                    if k == kind and (namespace is None or ns == namespace)]

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            new = copy.deepcopy(obj)
            meta = new.setdefault("metadata", {})
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            meta.setdefault("uid", f"uid-{self._rv}")
            self._objects[(new["kind"], meta.get("namespace", ""), meta["name"])] = new
            self.writes[new["kind"]] = self.writes.get(new["kind"], 0) + 1
            return copy.deepcopy(new)

    def patch(self, kind: str, namespace: str | None, name: str, merge_patch: dict[str, Any]) -> dict[str, Any]:
        current = self.get(kind, namespace, name)
        if current is None:
            raise KeyError(f"{kind} {namespace}/{name} not found")
        return self.put(_merge(current, merge_patch))


def reference_objects(token: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "infisical-service-token", "namespace": "infisical-operator"},
         "data": {"infisicalToken": base64.b64encode(token.encode()).decode()}},
        {"apiVersion": "secrets.infisical.com/v1alpha1", "kind": "InfisicalSecret",
         "metadata": {"name": "coder-database-secrets", "namespace": "coder"},
         "spec": {
             "hostAPI": "https://app.infisical.com/api",
             "resyncInterval": 60,
             "authentication": {"serviceToken": {
                 "serviceTokenSecretReference": {"secretName": "infisical-service-token",
                                                 "secretNamespace": "infisical-operator"},
                 "secretsScope": {"envSlug": "prod", "secretsPath": "/"}}},
             "managedSecretReference": {"secretName": "coder-database-secrets", "secretNamespace": "coder",
                                        "creationPolicy": "Owner"},
         }},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coder", "namespace": "coder",
                      "annotations": {"secrets.infisical.com/auto-reload": "true"}},
         "spec": {"template": {"metadata": {"labels": {"app": "coder"}}, "spec": {"containers": [{
             "name": "coder", "env": [{"name": "CODER_PG_CONNECTION_URL", "valueFrom": {"secretKeyRef": {
                 "name": "coder-database-secrets", "key": "database-url"}}}]}]}}}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "other", "namespace": "coder"},
         "spec": {"template": {"spec": {"containers": [{
             "name": "other", "envFrom": [{"secretRef": {"name": "coder-database-secrets"}}]}]}}}},
    ]


@pytest.fixture
def kube_api(fake_infisical: FakeInfisical) -> MemoryKube:
    """Stands in for the fake Kubernetes API's store (`lab.kubeapi`), seeded with the reference objects."""
    assert fake_infisical.seed is not None
    return MemoryKube(reference_objects(fake_infisical.seed.service_token))


@pytest.fixture
def make_operator(kube_api: MemoryKube, fake_infisical: FakeInfisical
                  ) -> Iterator[Callable[..., FakeInfisicalOperator]]:
    started: list[FakeInfisicalOperator] = []

    def make(**kwargs: Any) -> FakeInfisicalOperator:
        kwargs.setdefault("interval", 0.05)
        kwargs.setdefault("key_map", REFERENCE_KEY_MAP)
        op = FakeInfisicalOperator(kube_api, url_mapper(fake_infisical.url), **kwargs)
        started.append(op)
        return op

    yield make
    for op in started:
        op.stop()


def managed(kube: MemoryKube) -> dict[str, str]:
    secret = kube.get("Secret", "coder", "coder-database-secrets")
    assert secret is not None
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def condition(kube: MemoryKube, ctype: str) -> dict[str, Any]:
    obj = kube.get("InfisicalSecret", "coder", "coder-database-secrets")
    assert obj is not None
    return next(c for c in obj["status"]["conditions"] if c["type"] == ctype)


def version_of(kube: MemoryKube) -> str:
    secret = kube.get("Secret", "coder", "coder-database-secrets")
    assert secret is not None
    return str(secret["metadata"]["annotations"][VERSION_ANNOTATION])


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
    return time.monotonic() - start


def test_first_sync_creates_the_managed_secret(kube_api: MemoryKube, fake_infisical: FakeInfisical,
                                               make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    op = make_operator()
    results = op.sync_once()
    assert [(r.ok, r.secrets, r.written) for r in results] == [(True, 3, True)]
    assert fake_infisical.seed is not None
    values = fake_infisical.seed.values
    assert managed(kube_api) == {REFERENCE_KEY_MAP[k]: v for k, v in values.items()}

    secret = kube_api.get("Secret", "coder", "coder-database-secrets")
    assert secret is not None
    assert version_of(kube_api).startswith('W/"secrets-')
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "InfisicalSecret"
    assert secret["type"] == "Opaque"

    ready = condition(kube_api, COND_READY)
    assert (ready["status"], ready["reason"]) == ("True", "OK")
    assert ready["message"].endswith("synced 3 secrets") and ready["lastTransitionTime"]
    assert condition(kube_api, COND_LOADED)["status"] == "True"
    assert "SERVICE_TOKEN" in condition(kube_api, COND_LOADED)["message"]
    assert condition(kube_api, COND_AUTO_REDEPLOY)["message"].startswith("Infisical has found 1 deployments")

    coder = kube_api.get("Deployment", "coder", "coder")
    other = kube_api.get("Deployment", "coder", "other")
    assert coder is not None and other is not None
    assert coder["spec"]["template"]["metadata"]["annotations"][STAMP] == version_of(kube_api)
    assert coder["metadata"]["annotations"][STAMP] == version_of(kube_api)
    assert "annotations" not in other["spec"]["template"].get("metadata", {})


def test_change_in_infisical_reaches_the_secret_within_interval_plus_delay(
        kube_api: MemoryKube, fake_infisical: FakeInfisical,
        make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    op = make_operator(interval=0.1, delay=0.2).start()
    wait_for(lambda: kube_api.get("Secret", "coder", "coder-database-secrets") is not None)
    first_version = version_of(kube_api)
    assert op.wait_synced(2)

    fake_infisical.set_secret("CODER_USER_PASSWORD", "rotated-password")
    elapsed = wait_for(lambda: managed(kube_api)["coder-user-password"] == "rotated-password")
    assert 0.2 <= elapsed <= 0.1 + 0.2 + 0.5
    assert version_of(kube_api) != first_version
    coder = kube_api.get("Deployment", "coder", "coder")
    assert coder is not None
    wait_for(lambda: kube_api.get("Deployment", "coder", "coder")["spec"]["template"]["metadata"]  # type: ignore[index]
             ["annotations"][STAMP] == version_of(kube_api))


def test_a_client_write_reaches_the_managed_secret_and_a_held_one_does_not(
        kube_api: MemoryKube, fake_infisical: FakeInfisical,
        make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    from coderctl.clients.infisical import InfisicalApprovalRequired, InfisicalAuth, InfisicalClient

    assert fake_infisical.seed is not None
    client = InfisicalClient(fake_infisical.url + "/api", InfisicalAuth(
        "universal-auth", fake_infisical.seed.client_id, fake_infisical.seed.client_secret), timeout=3)
    where: dict[str, Any] = {"project_id": fake_infisical.project_id, "environment": "prod", "path": "/"}
    op = make_operator(interval=0.05, delay=0.2).start()
    assert op.wait_synced(2)

    written = client.set_secret("CODER_USER_PASSWORD", "written by coderctl", **where)
    assert written.version == 2
    elapsed = wait_for(lambda: managed(kube_api)["coder-user-password"] == "written by coderctl")
    assert elapsed >= 0.2

    fake_infisical.add_approval_policy("/")
    with pytest.raises(InfisicalApprovalRequired):
        client.set_secret("CODER_USER_PASSWORD", "held for review", **where)
    assert op.wait_synced(2) and op.wait_synced(2)
    time.sleep(0.3)
    assert managed(kube_api)["coder-user-password"] == "written by coderctl"


def test_unchanged_values_cause_no_write(kube_api: MemoryKube,
                                         make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    op = make_operator()
    op.sync_once()
    secret_writes, deploy_writes, cr_writes = (kube_api.writes["Secret"], kube_api.writes["Deployment"],
                                               kube_api.writes["InfisicalSecret"])
    rv = kube_api.get("Secret", "coder", "coder-database-secrets")["metadata"]["resourceVersion"]  # type: ignore[index]
    for _ in range(3):
        assert [r.written for r in op.sync_once()] == [False]
    assert kube_api.writes["Secret"] == secret_writes
    assert kube_api.writes["Deployment"] == deploy_writes
    assert kube_api.writes["InfisicalSecret"] == cr_writes
    assert kube_api.get("Secret", "coder", "coder-database-secrets")["metadata"]["resourceVersion"] == rv  # type: ignore[index]
    assert op.log.count(NOT_MODIFIED_LOG) == 3
    assert op.writes == 1


def test_drift_in_the_managed_secret_is_kept_until_infisical_changes(
        kube_api: MemoryKube, fake_infisical: FakeInfisical,
        make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    old_op = make_operator()
    old_op.sync_once()
    kube_api.patch("Secret", "coder", "coder-database-secrets",
                   {"data": {"coder-user-password": base64.b64encode(b"hand-edited").decode()}})
    old_op.sync_once()
    assert managed(kube_api)["coder-user-password"] == "hand-edited"
    assert fake_infisical.seed is not None
    make_operator(always_update=True).sync_once()
    assert managed(kube_api)["coder-user-password"] == fake_infisical.seed.values["CODER_USER_PASSWORD"]


def test_wrong_token_sets_ready_false(kube_api: MemoryKube, fake_infisical: FakeInfisical,
                                      make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    op = make_operator()
    op.sync_once()
    install_service_token(kube_api, "st.aaaaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.cccc")
    results = op.sync_once()
    assert not results[0].ok
    ready = condition(kube_api, COND_READY)
    assert (ready["status"], ready["reason"]) == ("False", "Error")
    assert ready["message"].startswith(SYNC_FAILED_PREFIX)
    assert "Service token with ID 'aaaaaaaaaaaaaaaaaaaaaaaa' not found" in ready["message"]
    assert condition(kube_api, COND_LOADED)["status"] == "True"
    assert condition(kube_api, COND_AUTO_REDEPLOY)["reason"] == "Stopped"
    assert fake_infisical.seed is not None
    assert managed(kube_api)["coder-user-password"] == fake_infisical.seed.values["CODER_USER_PASSWORD"]

    install_service_token(kube_api, "not-a-service-token")
    op.sync_once()
    assert "invalid service token entered" in condition(kube_api, COND_READY)["message"]


def test_expired_token_sets_ready_false_and_recovers(kube_api: MemoryKube, fake_infisical: FakeInfisical,
                                                     make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    op = make_operator()
    fake_infisical.token_expired = True
    assert op.wait_synced() is False
    ready = condition(kube_api, COND_READY)
    assert ready["status"] == "False" and TOKEN_EXPIRED_MESSAGE in ready["message"]
    assert "403" in ready["message"] and "TokenError" in ready["message"]
    assert kube_api.get("Secret", "coder", "coder-database-secrets") is None

    fake_infisical.token_expired = False
    assert op.wait_synced() is True
    assert condition(kube_api, COND_READY)["status"] == "True"


def test_unknown_host_api_fails_like_dns(kube_api: MemoryKube,
                                         make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    kube_api.patch("InfisicalSecret", "coder", "coder-database-secrets",
                   {"spec": {"hostAPI": "https://infisical.wrong.example"}})
    make_operator().sync_once()
    ready = condition(kube_api, COND_READY)
    assert ready["status"] == "False"
    assert "lookup infisical.wrong.example" in ready["message"] and "no such host" in ready["message"]


def test_missing_token_secret_fails_to_load(kube_api: MemoryKube,
                                            make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    kube_api.patch("InfisicalSecret", "coder", "coder-database-secrets", {"spec": {"authentication": {
        "serviceToken": {"serviceTokenSecretReference": {"secretName": "missing"}}}}})
    make_operator().sync_once()
    loaded = condition(kube_api, COND_LOADED)
    assert loaded["status"] == "False" and "no authentication method provided" in loaded["message"]
    assert condition(kube_api, COND_READY)["status"] == "False"


def test_templates_in_managed_kube_secret_references(kube_api: MemoryKube, fake_infisical: FakeInfisical,
                                                     make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    kube_api.patch("InfisicalSecret", "coder", "coder-database-secrets", {"spec": {
        "managedSecretReference": None,
        "managedKubeSecretReferences": [{
            "secretName": "coder-database-secrets", "secretNamespace": "coder",
            "template": {"includeAllSecrets": False, "data": {
                "coder-user-password": "{{ .CODER_USER_PASSWORD.Value }}",
                "database-url": "{{- .CODER_DATABASE_URL.Value -}}",
                "note": "user={{ .CODER_USER_PASSWORD.SecretPath }} missing=[{{ .NOPE.Value }}]",
            }}}]}})
    make_operator(key_map={}).sync_once()
    assert fake_infisical.seed is not None
    assert managed(kube_api) == {
        "coder-user-password": fake_infisical.seed.values["CODER_USER_PASSWORD"],
        "database-url": fake_infisical.seed.values["CODER_DATABASE_URL"],
        "note": "user=/ missing=[]",
    }
    secret = kube_api.get("Secret", "coder", "coder-database-secrets")
    assert secret is not None and "ownerReferences" not in secret["metadata"]


def test_render_template_errors() -> None:
    assert render_template("a {{ .K.Value }} b", {"K": ("v", "/")}) == "a v b"
    assert render_template("a {{- .K.Value -}} b", {"K": ("v", "/")}) == "avb"
    with pytest.raises(ValueError, match="unsupported action"):
        render_template("{{ .K.Value | b64enc }}", {})


def test_etag_depends_on_values() -> None:
    assert compute_etag({"a": b"1"}) == compute_etag({"a": b"1"})
    assert compute_etag({"a": b"1"}) != compute_etag({"a": b"2"})
    assert managed_secret_annotation_key("x" * 60).startswith("secrets.infisical.com/managed-secret.xxx")
    assert len(managed_secret_annotation_key("x" * 60).split("/", 1)[1]) == 63


def test_universal_auth_login_is_cached_like_old_operators(
        kube_api: MemoryKube, fake_infisical: FakeInfisical,
        make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    assert fake_infisical.seed is not None
    kube_api.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ua", "namespace": "coder"},
                  "data": {"clientId": base64.b64encode(fake_infisical.seed.client_id.encode()).decode(),
                           "clientSecret": base64.b64encode(fake_infisical.seed.client_secret.encode()).decode()}})
    kube_api.patch("InfisicalSecret", "coder", "coder-database-secrets", {"spec": {"authentication": {
        "serviceToken": None,
        "universalAuth": {"credentialsRef": {"secretName": "ua", "secretNamespace": "coder"},
                          "secretsScope": {"projectSlug": "coder", "envSlug": "prod", "secretsPath": "/"}}}}})
    op = make_operator()
    assert op.wait_synced()
    assert "UNIVERSAL_MACHINE_IDENTITY" in condition(kube_api, COND_LOADED)["message"]

    fake_infisical.expire_access_tokens()
    assert not op.wait_synced()
    assert TOKEN_EXPIRED_MESSAGE in condition(kube_api, COND_READY)["message"]
    assert not op.wait_synced()

    op.restart()
    op.stop()
    assert op.wait_synced()

    fixed = make_operator(relogin_on_expiry=True)
    fixed.sync_once()
    fake_infisical.expire_access_tokens()
    assert fixed.wait_synced()


def test_paused_operator_does_not_sync(kube_api: MemoryKube, fake_infisical: FakeInfisical,
                                       make_operator: Callable[..., FakeInfisicalOperator]) -> None:
    op = make_operator()
    op.paused = True
    op.start()
    assert op.wait_synced(0.3) is False
    assert kube_api.get("Secret", "coder", "coder-database-secrets") is None
    op.paused = False
    assert op.wait_synced(2)
    assert kube_api.get("Secret", "coder", "coder-database-secrets") is not None


def test_fixture_wires_the_reference_deployment(infisical_operator: FakeInfisicalOperator,
                                                kube_api: MemoryKube, fake_infisical: FakeInfisical) -> None:
    assert infisical_operator.wait_synced(3)
    assert fake_infisical.seed is not None
    assert managed(kube_api)["database-url"] == fake_infisical.seed.values["CODER_DATABASE_URL"]
    fake_infisical.set_secret("CODER_DATABASE_URL", "postgresql://changed")
    wait_for(lambda: managed(kube_api)["database-url"] == "postgresql://changed")
    assert ("GET", "/api/v2/service-token", 200) in fake_infisical.request_log


def test_url_mapper_maps_the_cloud_hosts_and_the_fakes_own_url() -> None:
    mapper = url_mapper("http://127.0.0.1:1234")
    for host in ("https://app.infisical.com/api", "https://eu.infisical.com", "http://127.0.0.1:1234/api",
                 "http://127.0.0.1:1234/"):
        assert mapper(host) == "http://127.0.0.1:1234", host
    assert mapper("https://infisical.example.org/api") is None
    assert mapper("http://127.0.0.1:4321/api") is None
