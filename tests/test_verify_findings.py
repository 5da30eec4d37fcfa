"""The remaining failure and warning branches of verify's checks, each on a deployment broken for it.

Scenario files cover the runbook's failures (test_verify_scenarios.py); these smaller breakages are made
in code, by changing the fake cluster's objects the way an operator's mistake would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from clirun import run_cli
from lab.deployment import Lab

pytestmark = pytest.mark.fake_only

Obj = dict[str, Any]


def change(lab: Lab, kind: str, ns: str, name: str, fn: Callable[[Obj], None]) -> None:
    obj = lab.kube.get(kind, ns, name)
    assert obj is not None, (kind, ns, name)
    fn(obj)
    lab.kube.put(obj, reconcile=False)


def coder_container(dep: Obj) -> Obj:
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "coder")


def set_env(name: str, value: str | None) -> Callable[[Obj], None]:
    def apply(dep: Obj) -> None:
        env = [e for e in coder_container(dep)["env"] if e["name"] != name]
        if value is not None:
            env.append({"name": name, "value": value})
        coder_container(dep)["env"] = env
    return apply


def secret_key(key: str, value: str | None) -> Callable[[Obj], None]:
    import base64

    def apply(secret: Obj) -> None:
        data = secret.setdefault("data", {})
        data.pop(key, None)
        secret.pop("stringData", None)
        if value is not None:
            data[key] = base64.b64encode(value.encode()).decode()
    return apply


@dataclass
class Case:
    name: str
    kind: str
    ns: str
    obj: str
    fn: Callable[[Obj], None]
    check: str
    status: str
    says: tuple[str, ...]
    also: frozenset[str] = frozenset()


def _root(dep: Obj) -> None:
    coder_container(dep)["securityContext"] = {"runAsNonRoot": False, "runAsUser": 0,
                                               "allowPrivilegeEscalation": True, "readOnlyRootFilesystem": True}


def _writable_root(dep: Obj) -> None:
    coder_container(dep)["securityContext"]["readOnlyRootFilesystem"] = False


def _small_limit(dep: Obj) -> None:
    coder_container(dep)["resources"]["limits"]["memory"] = "2Gi"
    coder_container(dep)["resources"]["requests"]["cpu"] = "0.25"  # equal to 250m: not a finding


def _old_image(dep: Obj) -> None:
    coder_container(dep)["image"] = "ghcr.io/coder/coder:v2.24.1"


def _restarts(pod: Obj) -> None:
    pod["status"]["containerStatuses"][0]["restartCount"] = 5
    pod["status"]["containerStatuses"][0]["lastState"] = {
        "terminated": {"reason": "Error", "exitCode": 1, "startedAt": "2026-11-26T10:00:00Z",
                       "finishedAt": "2026-11-26T10:00:31Z"}}


def _other_ip(svc: Obj) -> None:
    svc["status"]["loadBalancer"]["ingress"] = [{"ip": "192.168.80.120"}]


def _local_path(pvc: Obj) -> None:
    pvc["spec"]["storageClassName"] = "local-path"


def _suspended(hr: Obj) -> None:
    hr["spec"]["suspend"] = True


def _no_body_size(ing: Obj) -> None:
    ing["metadata"]["annotations"].pop("nginx.ingress.kubernetes.io/proxy-body-size", None)


def _wrong_port(ing: Obj) -> None:
    for rule in ing["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            path["backend"]["service"]["port"] = {"number": 8443}


def _universal_auth(obj: Obj) -> None:
    obj["spec"]["authentication"] = {"universalAuth": {
        "credentialsRef": {"secretName": "infisical-operator-identity", "secretNamespace": "coder"},
        "secretsScope": {"projectSlug": "coder", "envSlug": "prod", "secretsPath": "/"}}}


CASES = [
    Case("security-context-root", "Deployment", "coder", "coder", _root, "coder.security-context", "fail",
         ("runAsNonRoot is not true", "runAsUser is 0", "allowPrivilegeEscalation is not false")),
    Case("writable-root-filesystem", "Deployment", "coder", "coder", _writable_root, "coder.security-context",
         "warn", ("readOnlyRootFilesystem",)),
    Case("memory-limit-differs", "Deployment", "coder", "coder", _small_limit, "coder.resources", "warn",
         ("memory limit 2Gi, expected 4Gi",)),
    Case("image-version-differs", "Deployment", "coder", "coder", _old_image, "coder.deployment", "warn",
         ("v2.24.1", "expected v2.25.0")),
    Case("wildcard-url-unset", "Deployment", "coder", "coder", set_env("CODER_WILDCARD_ACCESS_URL", None),
         "coder.env", "fail", ("CODER_WILDCARD_ACCESS_URL is not set",),
         frozenset({"ingress.wildcard", "http.wildcard", "tls.wildcard", "dns.wildcard"})),
    Case("access-url-http", "Deployment", "coder", "coder",
         set_env("CODER_ACCESS_URL", "http://coder.xuperson.org"), "coder.env", "fail", ("is not https",)),
    Case("restarts-high", "Pod", "coder", "coder-6c8d7f9b5d-x7k2p", _restarts, "coder.pods", "warn",
         ("restarted 5 times",)),
    Case("lb-unexpected-ip", "Service", "coder", "coder", _other_ip, "service.coder", "fail",
         ("192.168.80.120", "expected 192.168.80.105")),
    Case("pvc-other-class", "PersistentVolumeClaim", "coder", "data-coder-coder-postgresql-0", _local_path,
         "postgres.pvc", "warn", ("storage class local-path, expected longhorn",)),
    Case("helmrelease-suspended", "HelmRelease", "coder", "coder", _suspended, "flux.ready", "fail",
         ("suspended",)),
    Case("no-body-size", "Ingress", "coder", "coder", _no_body_size, "ingress.timeouts", "warn",
         ("proxy-body-size",)),
    Case("ingress-wrong-port", "Ingress", "coder", "coder", _wrong_port, "ingress.access", "fail",
         ("port 8443",)),
    Case("secret-key-missing", "Secret", "coder", "coder-database-secrets",
         secret_key("coder-user-password", None), "secret.database", "fail", ("missing coder-user-password",)),
    Case("url-password-unencoded", "Secret", "coder", "coder-database-secrets",
         secret_key("database-url", "postgresql://coder:a?b@coder-coder-postgresql:5432/coder?sslmode=disable"),
         "secret.consistency", "fail", ("does not parse", "percent-encoded"),
         frozenset({"database.connect", "database.url"})),
    Case("url-password-differs", "Secret", "coder", "coder-database-secrets",
         secret_key("coder-user-password", "something-else-entirely"), "secret.consistency", "fail",
         ("differs from coder-user-password",)),
    Case("url-port-wrong", "Secret", "coder", "coder-database-secrets",
         secret_key("database-url", "postgresql://coder:x@coder-coder-postgresql.coder.svc.cluster.local:5433/coder"
                                    "?sslmode=disable"),
         "secret.consistency", "fail", ("port 5433 is not a port of Service coder/coder-coder-postgresql",),
         frozenset({"database.connect"})),
    Case("universal-auth-credentials-missing", "InfisicalSecret", "coder", "coder-database-secrets",
         _universal_auth, "infisical.token", "fail", ("infisical-operator-identity", "not found")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_breakage_is_found(lab: Lab, case: Case) -> None:
    change(lab, case.kind, case.ns, case.obj, case.fn)
    r = run_cli(*lab.verify())
    lab.assert_no_secrets(r.stdout, r.stderr)
    checks = {c["id"]: c for c in json.loads(r.stdout)["checks"]}
    got = checks[case.check]
    assert got["status"] == case.status, got
    for needle in case.says:
        assert needle in got["detail"], (needle, got["detail"])
    assert got["remediation"], got
    unexpected = {cid: c["detail"] for cid, c in checks.items()
                  if c["status"] in ("fail", "error") and cid != case.check and cid not in case.also}
    assert unexpected == {}
