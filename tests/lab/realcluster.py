"""Driving a real cluster (kind, k3s) with the lab's scenario files, through the real kubectl.

Scenario files are plain manifests: each object is merge-patched into the cluster (its `status` through
the status subresource), created when absent, or deleted when marked `$delete: true`. What only the fake
can do (scripted logs, RBAC denials, exec faults) sits under a scenario's `fake:` key; such scenarios, and
tests marked `fake_only`, are skipped against a real cluster. Controllers on a real cluster may overwrite a
patched status at once, so the scenarios that fake pod states are only meaningful on the fake.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lab.kubeapi import load_scenario

KIND_RESOURCES = {
    "Deployment": "deployments.apps", "StatefulSet": "statefulsets.apps", "ReplicaSet": "replicasets.apps",
    "Pod": "pods", "Service": "services", "Secret": "secrets", "ConfigMap": "configmaps", "Event": "events",
    "PersistentVolumeClaim": "persistentvolumeclaims", "PersistentVolume": "persistentvolumes",
    "StorageClass": "storageclasses.storage.k8s.io", "Namespace": "namespaces",
    "Ingress": "ingresses.networking.k8s.io", "InfisicalSecret": "infisicalsecrets.secrets.infisical.com",
    "HelmRelease": "helmreleases.helm.toolkit.fluxcd.io",
    "Kustomization": "kustomizations.kustomize.toolkit.fluxcd.io",
    "IPAddressPool": "ipaddresspools.metallb.io",
}


class KubectlCluster:
    def __init__(self, kubeconfig: Path, values: dict[str, str] | None = None) -> None:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise RuntimeError("kubectl is not installed")
        self.kubectl = kubectl
        self.kubeconfig = kubeconfig
        self.values = values or {}

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.kubectl, "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def _target(self, obj: dict[str, Any]) -> list[str]:
        meta = obj.get("metadata") or {}
        target = [KIND_RESOURCES.get(obj["kind"], obj["kind"].lower()), meta["name"]]
        return target + (["-n", meta["namespace"]] if meta.get("namespace") else [])

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = {"kind": kind, "metadata": {"name": name, "namespace": namespace}}
        proc = self.run("get", *self._target(obj), "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def apply_scenario(self, name: str) -> None:
        doc = load_scenario(name, self.values)
        if doc.get("fake"):
            pytest.skip(f"scenario {name} needs the fake API ({', '.join(doc['fake'])})")
        for obj in doc.get("objects") or []:
            obj = dict(obj)
            if obj.pop("$delete", False):
                self.run("delete", *self._target(obj), "--ignore-not-found", "--wait=false")
                continue
            status = obj.pop("status", None)
            if self.get(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]) is None:
                self.run("create", "-f", "-", stdin=json.dumps(obj))
            else:
                body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
                self.run("patch", *self._target(obj), "--type", "merge", "-p", json.dumps(body))
            if status is not None:
                self.run("patch", *self._target(obj), "--subresource", "status", "--type", "merge",
                         "-p", json.dumps({"status": status}))
