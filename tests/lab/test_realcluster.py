"""The real-cluster driver, checked against the fake API (the only cluster here) through the real kubectl."""

from __future__ import annotations

import shutil

import pytest

from lab.kubeapi import FakeKubeAPI, kube_api  # noqa: F401
from lab.realcluster import KubectlCluster

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def test_scenarios_apply_through_kubectl(kube_api: FakeKubeAPI) -> None:
    assert kube_api.kubeconfig_path is not None
    cluster = KubectlCluster(kube_api.kubeconfig_path, kube_api.values)
    cluster.apply_scenario("lb-ip-outside-pool")
    svc = kube_api.get("Service", "coder", "coder")
    assert svc is not None and svc["status"]["loadBalancer"]["ingress"][0]["ip"] == "192.168.90.5"

    cluster.apply_scenario("infisical-sync-failing")
    obj = kube_api.get("InfisicalSecret", "coder", "coder-database-secrets")
    assert obj is not None
    assert any(c["status"] == "False" for c in obj["status"]["conditions"])

    cluster.apply_scenario("infisical-token-missing")
    assert kube_api.get("Secret", "infisical-operator", "infisical-service-token") is None


def test_fake_only_scenarios_are_skipped(kube_api: FakeKubeAPI) -> None:
    assert kube_api.kubeconfig_path is not None
    cluster = KubectlCluster(kube_api.kubeconfig_path, kube_api.values)
    with pytest.raises(pytest.skip.Exception):
        cluster.apply_scenario("forbidden-pods")
