"""The run's snapshot of the cluster against the fake API: read once, shared, typed; refresh() reads again and
forgets failures."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lab.kubeapi import FakeKubeAPI, kube_api  # noqa: F401

from coderctl import discovery
from coderctl.clients.kube import KubeNotFound
from coderctl.context import App
from coderctl.profile import load_settings
from coderctl.snapshot import snapshot

NS = "coder"


def fetched(api: FakeKubeAPI, kind: str, name: str) -> dict[str, Any]:
    obj = api.get(kind, NS, name)
    assert obj is not None
    return copy.deepcopy(obj)


def make_app(api: FakeKubeAPI) -> App:
    return App(settings=load_settings(flags={"kubeconfig": str(api.kubeconfig_path), "timeout": 3}, environ={}))


def test_objects_are_read_once_until_refresh(kube_api: FakeKubeAPI) -> None:  # noqa: F811
    app = make_app(kube_api)
    snap = snapshot(app)
    assert snapshot(app) is snap
    before = snap.coder_deployment
    assert discovery.coder_deployment(app) is before
    assert snap.coder_pods and all(p["metadata"]["name"].startswith("coder") for p in snap.coder_pods)
    dep = fetched(kube_api, "Deployment", "coder")
    dep["metadata"].setdefault("labels", {})["snapshot-test"] = "1"
    kube_api.put(dep, reconcile=False)
    assert "snapshot-test" not in (snap.coder_deployment["metadata"].get("labels") or {})
    snap.refresh()
    assert snap.coder_deployment["metadata"]["labels"]["snapshot-test"] == "1"


def test_a_failure_is_shared_and_forgotten_on_refresh(kube_api: FakeKubeAPI) -> None:  # noqa: F811
    app = make_app(kube_api)
    snap = snapshot(app)
    sts = fetched(kube_api, "StatefulSet", str(app.settings.postgres_statefulset))
    kube_api.delete("StatefulSet", NS, str(app.settings.postgres_statefulset))
    for _ in range(2):
        with pytest.raises(KubeNotFound):
            _ = snap.postgres_statefulset
    sts["metadata"].pop("resourceVersion", None)
    kube_api.put(sts, reconcile=False)
    snap.refresh()
    assert snap.postgres_statefulset["metadata"]["name"] == app.settings.postgres_statefulset


def test_managed_secret_and_infisical_secret_are_typed(kube_api: FakeKubeAPI) -> None:  # noqa: F811
    app = make_app(kube_api)
    snap = snapshot(app)
    managed = snap.managed_secret
    assert managed.name == app.settings.database_secret
    assert "database-url" in managed.keys and managed.database_url is not None
    assert managed.database_url.password and app.redact(managed.database_url.password) != managed.database_url.password
    assert snap.infisical_secret is snap.infisical_secret_object
    assert discovery.infisical_target(app).environment
    kube_api.delete("InfisicalSecret", NS, str(app.settings.infisical_secret))
    snap.refresh()
    assert snap.infisical_secret is None
