"""The remaining failure and warning branches of verify's checks, each on a deployment broken for it.

Scenario files cover the runbook's failures (test_verify_scenarios.py); these smaller breakages are made
in code, by changing the fake cluster's objects the way an operator's mistake would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clirun import run_cli
from lab.deployment import Lab

pytestmark = pytest.mark.fake_only

Obj = dict[str, Any]


def delete(obj: Obj) -> None:
    """Marks a case whose breakage is the object's deletion."""
    raise AssertionError("not called")


def change(lab: Lab, kind: str, ns: str, name: str, fn: Callable[[Obj], None]) -> None:
    if fn is delete:
        assert lab.kube.get(kind, ns, name) is not None, (kind, ns, name)
        lab.kube.delete(kind, ns, name)
        return
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
    codes: frozenset[str] = frozenset()  # the codes of the problems the check reports, exactly


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


def _traefik_class(ing: Obj) -> None:
    ing["spec"]["ingressClassName"] = "traefik"


def _missing_headers(ing: Obj) -> None:
    ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-set-headers"] = "ingress-nginx/gone"


def _cluster_ip(svc: Obj) -> None:
    svc["spec"]["type"] = "ClusterIP"
    svc["status"] = {}


def _no_replicas(sts: Obj) -> None:
    sts["spec"]["replicas"] = 0


def _privileged(dep: Obj) -> None:
    coder_container(dep)["securityContext"]["privileged"] = True


def _no_cpu_limit(dep: Obj) -> None:
    del coder_container(dep)["resources"]["limits"]["cpu"]


def _small_claim(pvc: Obj) -> None:
    pvc["status"]["capacity"]["storage"] = "10Gi"


def _map_without_derp(cm: Obj) -> None:
    cm["data"]["http-snippet"] = "map $http_upgrade $connection_upgrade {\n    default upgrade;\n    '' close;\n}\n"


def _unknown_auth(obj: Obj) -> None:
    obj["spec"]["authentication"] = {"kubernetesAuth": {"identityId": "x", "serviceAccountRef": {"name": "coder"}}}


def _no_token_name(obj: Obj) -> None:
    obj["spec"]["authentication"]["serviceToken"]["serviceTokenSecretReference"].pop("secretName")


def _crashing(pod: Obj) -> None:
    status = pod["status"]["containerStatuses"][0]
    status.update(ready=False, restartCount=4, state={"waiting": {"reason": "CrashLoopBackOff"}},
                  lastState={"terminated": {"reason": "Error", "exitCode": 1}})


def _not_ready(pod: Obj) -> None:
    pod["status"]["containerStatuses"][0]["ready"] = False
    for cond in pod["status"]["conditions"]:
        if cond["type"] in ("Ready", "ContainersReady"):
            cond["status"] = "False"


def _route_elsewhere(ing: Obj) -> None:
    for rule in ing["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            path["backend"]["service"]["name"] = "somebody-else"


def _other_host(ing: Obj) -> None:
    ing["spec"]["rules"][0]["host"] = "elsewhere.xuperson.org"


def _other_database(secret: Obj) -> None:
    import base64

    url = base64.b64decode(secret["data"]["database-url"]).decode()
    secret["data"]["database-url"] = base64.b64encode(url.replace("/coder?", "/nosuchdb?").encode()).decode()


def _token_not_loaded(obj: Obj) -> None:
    for cond in obj["status"]["conditions"]:
        if cond["type"] == "secrets.infisical.com/LoadedInfisicalToken":
            cond.update(status="False", message="Failed to load Infisical Token: token expired")


def _never_reconciled(obj: Obj) -> None:
    obj["status"] = {}


def _universal_auth(obj: Obj) -> None:
    obj["spec"]["authentication"] = {"universalAuth": {
        "credentialsRef": {"secretName": "infisical-operator-identity", "secretNamespace": "coder"},
        "secretsScope": {"projectSlug": "coder", "envSlug": "prod", "secretsPath": "/"}}}


CASES = [
    Case("security-context-root", "Deployment", "coder", "coder", _root, "coder.security-context", "fail",
         ("runAsNonRoot is not true", "runAsUser is 0", "allowPrivilegeEscalation is not false"),
         codes=frozenset({"COD-SC-NOT-NON-ROOT", "COD-SC-ROOT-USER", "COD-SC-PRIVILEGE-ESCALATION"})),
    Case("writable-root-filesystem", "Deployment", "coder", "coder", _writable_root, "coder.security-context",
         "warn", ("readOnlyRootFilesystem",), codes=frozenset({"COD-SC-WRITABLE-ROOT"})),
    Case("memory-limit-differs", "Deployment", "coder", "coder", _small_limit, "coder.resources", "warn",
         ("memory limit 2Gi, expected 4Gi",), codes=frozenset({"COD-RESOURCE-DIFFERS"})),
    Case("image-version-differs", "Deployment", "coder", "coder", _old_image, "coder.deployment", "warn",
         ("v2.24.1", "expected v2.25.0"), codes=frozenset({"COD-VERSION-UNEXPECTED"})),
    Case("wildcard-url-unset", "Deployment", "coder", "coder", set_env("CODER_WILDCARD_ACCESS_URL", None),
         "coder.env", "fail", ("CODER_WILDCARD_ACCESS_URL is not set",),
         frozenset({"ingress.wildcard", "http.wildcard", "tls.wildcard", "dns.wildcard"}),
         codes=frozenset({"COD-WILDCARD-URL-UNSET"})),
    Case("access-url-http", "Deployment", "coder", "coder",
         set_env("CODER_ACCESS_URL", "http://coder.xuperson.org"), "coder.env", "fail", ("is not https",),
         codes=frozenset({"COD-ACCESS-URL-NOT-HTTPS"})),
    Case("restarts-high", "Pod", "coder", "coder-6c8d7f9b5d-x7k2p", _restarts, "coder.pods", "warn",
         ("restarted 5 times",), codes=frozenset({"POD-RESTARTS"})),
    Case("lb-unexpected-ip", "Service", "coder", "coder", _other_ip, "service.coder", "fail",
         ("192.168.80.120", "expected 192.168.80.105"), codes=frozenset({"SVC-LB-UNEXPECTED-IP"})),
    Case("pvc-other-class", "PersistentVolumeClaim", "coder", "data-coder-coder-postgresql-0", _local_path,
         "postgres.pvc", "warn", ("storage class local-path, expected longhorn",),
         codes=frozenset({"PG-PVC-CLASS-DIFFERS"})),
    Case("helmrelease-suspended", "HelmRelease", "coder", "coder", _suspended, "flux.ready", "fail",
         ("suspended",), codes=frozenset({"FLUX-SUSPENDED"})),
    Case("no-body-size", "Ingress", "coder", "coder", _no_body_size, "ingress.timeouts", "warn",
         ("proxy-body-size",), codes=frozenset({"ING-BODY-SIZE-LIMIT"})),
    Case("ingress-wrong-port", "Ingress", "coder", "coder", _wrong_port, "ingress.access", "fail",
         ("port 8443",), codes=frozenset({"ING-WRONG-PORT"})),
    Case("secret-key-missing", "Secret", "coder", "coder-database-secrets",
         secret_key("coder-user-password", None), "secret.database", "fail", ("missing coder-user-password",),
         codes=frozenset({"SECRET-KEY-MISSING"})),
    Case("url-password-unencoded", "Secret", "coder", "coder-database-secrets",
         secret_key("database-url", "postgresql://coder:a?b@coder-coder-postgresql:5432/coder?sslmode=disable"),
         "secret.consistency", "fail", ("does not parse", "percent-encoded"),
         frozenset({"database.connect", "database.url"}), codes=frozenset({"DB-URL-UNPARSABLE"})),
    Case("url-password-differs", "Secret", "coder", "coder-database-secrets",
         secret_key("coder-user-password", "something-else-entirely"), "secret.consistency", "fail",
         ("differs from coder-user-password",), codes=frozenset({"DB-PASSWORD-MISMATCH"})),
    Case("url-port-wrong", "Secret", "coder", "coder-database-secrets",
         secret_key("database-url", "postgresql://coder:x@coder-coder-postgresql.coder.svc.cluster.local:5433/coder"
                                    "?sslmode=disable"),
         "secret.consistency", "fail", ("port 5433 is not a port of Service coder/coder-coder-postgresql",),
         frozenset({"database.connect"}), codes=frozenset({"DB-PORT-NOT-SERVICE", "DB-PASSWORD-MISMATCH"})),
    Case("universal-auth-credentials-missing", "InfisicalSecret", "coder", "coder-database-secrets",
         _universal_auth, "infisical.token", "fail", ("infisical-operator-identity", "not found"),
         codes=frozenset({"INFISICAL-CREDENTIALS-MISSING"})),
    Case("ingress-other-class", "Ingress", "coder", "coder", _traefik_class, "ingress.access", "fail",
         ("ingress class is 'traefik'",), codes=frozenset({"ING-WRONG-CLASS"})),
    Case("proxy-headers-configmap-missing", "Ingress", "coder", "coder", _missing_headers, "ingress.controller",
         "fail", ("ingress-nginx/gone",), codes=frozenset({"ING-PROXY-HEADERS-MISSING"})),
    Case("service-not-loadbalancer", "Service", "coder", "coder", _cluster_ip, "service.coder", "fail",
         ("is ClusterIP, expected LoadBalancer",), codes=frozenset({"SVC-NOT-LOADBALANCER"})),
    Case("postgres-scaled-zero", "StatefulSet", "coder", "coder-coder-postgresql", _no_replicas,
         "postgres.statefulset", "fail", ("scaled to 0",), frozenset({"database.connect", "database.url"}),
         codes=frozenset({"PG-SCALED-ZERO"})),
    Case("secret-key-empty", "Secret", "coder", "coder-database-secrets", secret_key("postgres-admin-password", ""),
         "secret.database", "fail", ("empty postgres-admin-password",), codes=frozenset({"SECRET-KEY-EMPTY"})),
    Case("privileged", "Deployment", "coder", "coder", _privileged, "coder.security-context", "fail",
         ("privileged",), codes=frozenset({"COD-SC-PRIVILEGED"})),
    Case("cpu-limit-unset", "Deployment", "coder", "coder", _no_cpu_limit, "coder.resources", "warn",
         ("no cpu limit (expected 2000m)",), codes=frozenset({"COD-RESOURCE-UNSET"})),
    Case("pg-url-unset", "Deployment", "coder", "coder", set_env("CODER_PG_CONNECTION_URL", None), "coder.env",
         "fail", ("CODER_PG_CONNECTION_URL is not set",), frozenset({"database.url", "database.connect"}),
         codes=frozenset({"COD-PG-URL-UNSET"})),
    Case("wildcard-url-elsewhere", "Deployment", "coder", "coder",
         set_env("CODER_WILDCARD_ACCESS_URL", "*.apps.example.test"), "coder.env", "fail",
         ("no wildcard Ingress covers *.apps.example.test",),
         frozenset({"ingress.wildcard", "http.wildcard", "tls.wildcard", "dns.wildcard", "dns.consistency"}),
         codes=frozenset({"COD-WILDCARD-NO-INGRESS"})),
    Case("wildcard-ingress-deleted", "Ingress", "coder", "coder-workspaces-wildcard", delete, "ingress.wildcard",
         "fail", ("Ingress coder/coder-workspaces-wildcard not found",),
         frozenset({"coder.env", "ingress.timeouts", "http.wildcard", "tls.wildcard"}),
         codes=frozenset({"ING-MISSING"})),
    Case("pvc-smaller", "PersistentVolumeClaim", "coder", "data-coder-coder-postgresql-0", _small_claim,
         "postgres.pvc", "warn", ("capacity 10Gi, expected 20Gi",), codes=frozenset({"PG-PVC-TOO-SMALL"})),
    Case("pvc-deleted", "PersistentVolumeClaim", "coder", "data-coder-coder-postgresql-0", delete, "postgres.pvc",
         "fail", ("data-coder-coder-postgresql-0 not found",), codes=frozenset({"PG-PVC-MISSING"})),
    Case("statefulset-deleted", "StatefulSet", "coder", "coder-coder-postgresql", delete, "postgres.statefulset",
         "fail", ("StatefulSet coder/coder-coder-postgresql not found",),
         frozenset({"database.url", "database.connect", "postgres.pvc"}),
         codes=frozenset({"PG-STATEFULSET-MISSING"})),
    Case("controller-service-deleted", "Service", "ingress-nginx", "ingress-nginx-controller", delete,
         "service.ingress-nginx", "fail", ("Service ingress-nginx/ingress-nginx-controller not found",),
         codes=frozenset({"SVC-MISSING"})),
    Case("controller-configmap-deleted", "ConfigMap", "ingress-nginx", "ingress-nginx-controller", delete,
         "ingress.controller", "fail", ("ConfigMap ingress-nginx/ingress-nginx-controller not found",),
         codes=frozenset({"ING-CONTROLLER-CONFIGMAP-MISSING"})),
    Case("controller-deployment-deleted", "Deployment", "ingress-nginx", "ingress-nginx-controller", delete,
         "ingress.controller", "warn", ("version unknown",), codes=frozenset({"ING-CONTROLLER-MISSING"})),
    Case("upgrade-map-without-derp", "ConfigMap", "ingress-nginx", "ingress-nginx-controller", _map_without_derp,
         "ingress.controller", "warn", ("no 'derp' entry",), codes=frozenset({"ING-UPGRADE-MAP-NO-DERP"})),
    Case("infisical-auth-unknown", "InfisicalSecret", "coder", "coder-database-secrets", _unknown_auth,
         "infisical.token", "warn", ("kubernetesAuth",), frozenset({"infisical.sync"}),
         codes=frozenset({"INFISICAL-AUTH-UNKNOWN"})),
    Case("infisical-no-token-name", "InfisicalSecret", "coder", "coder-database-secrets", _no_token_name,
         "infisical.token", "fail", ("names no credentials Secret",), frozenset({"infisical.sync"}),
         codes=frozenset({"INFISICAL-NO-CREDENTIALS-REF"})),
    Case("infisical-token-empty", "Secret", "infisical-operator", "infisical-service-token",
         secret_key("infisicalToken", ""), "infisical.token", "fail", ("lacks infisicalToken",),
         frozenset({"infisical.sync"}), codes=frozenset({"INFISICAL-CREDENTIALS-INCOMPLETE"})),
    Case("coder-deployment-deleted", "Deployment", "coder", "coder", delete, "coder.deployment", "fail",
         ("Deployment coder/coder not found",),
         frozenset({"coder.pods", "database.url", "database.connect", "http.healthz", "http.buildinfo"}),
         codes=frozenset({"COD-DEPLOYMENT-MISSING"})),
    Case("access-url-unset", "Deployment", "coder", "coder", set_env("CODER_ACCESS_URL", None), "coder.env",
         "fail", ("CODER_ACCESS_URL is not set",), codes=frozenset({"COD-ACCESS-URL-UNSET"})),
    Case("pod-crashing", "Pod", "coder", "coder-6c8d7f9b5d-x7k2p", _crashing, "coder.pods", "fail",
         ("CrashLoopBackOff", "exit code 1"), frozenset({"coder.deployment"}), codes=frozenset({"POD-CRASHLOOP"})),
    Case("pod-not-ready", "Pod", "coder", "coder-6c8d7f9b5d-x7k2p", _not_ready, "coder.pods", "fail",
         ("not ready",), frozenset({"coder.deployment"}), codes=frozenset({"POD-NOT-READY"})),
    Case("postgres-pod-not-ready", "Pod", "coder", "coder-coder-postgresql-0", _not_ready, "postgres.statefulset",
         "fail", ("pod coder-coder-postgresql-0 is Running",), frozenset({"database.url", "database.connect"}),
         codes=frozenset({"PG-NOT-READY"})),
    Case("ingress-other-service", "Ingress", "coder", "coder", _route_elsewhere, "ingress.access", "fail",
         ("routes to Service somebody-else",), codes=frozenset({"ING-WRONG-SERVICE"})),
    Case("ingress-other-host", "Ingress", "coder", "coder", _other_host, "ingress.access", "fail",
         ("has no rule for the access host",), frozenset({"coder.env"}), codes=frozenset({"ING-NO-RULE"})),
    Case("database-missing", "Secret", "coder", "coder-database-secrets", _other_database, "database.connect",
         "fail", ("nosuchdb",), codes=frozenset({"DB-ROLE-OR-DATABASE-MISSING"})),
    Case("coder-pod-deleted", "Pod", "coder", "coder-6c8d7f9b5d-x7k2p", delete, "coder.pods", "fail",
         ("no pods match",), frozenset({"coder.deployment"}), codes=frozenset({"POD-NONE"})),
    Case("database-secret-deleted", "Secret", "coder", "coder-database-secrets", delete, "secret.database", "fail",
         ("Secret coder/coder-database-secrets not found",), codes=frozenset({"SECRET-MISSING"})),
    Case("infisical-token-not-loaded", "InfisicalSecret", "coder", "coder-database-secrets", _token_not_loaded,
         "infisical.sync", "fail", ("token expired",), codes=frozenset({"INFISICAL-TOKEN-NOT-LOADED"})),
    Case("infisical-never-reconciled", "InfisicalSecret", "coder", "coder-database-secrets", _never_reconciled,
         "infisical.sync", "warn", ("no ReadyToSyncSecrets condition",),
         codes=frozenset({"INFISICAL-NOT-RECONCILED"})),
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
    assert {p["code"] for p in got["problems"]} == case.codes, got["problems"]
    for problem in got["problems"]:
        assert problem["evidence"] and problem["fix"], problem
    unexpected = {cid: c["detail"] for cid, c in checks.items()
                  if c["status"] in ("fail", "error") and cid != case.check and cid not in case.also}
    assert unexpected == {}


def _checks(lab: Lab, *args: str) -> dict[str, Obj]:
    r = run_cli(*args) if args else run_cli(*lab.verify())
    lab.assert_no_secrets(r.stdout, r.stderr)
    return {c["id"]: c for c in json.loads(r.stdout)["checks"]}


def test_database_url_as_a_plain_value_warns_without_showing_it(lab: Lab) -> None:
    change(lab, "Deployment", "coder", "coder", set_env("CODER_PG_CONNECTION_URL", lab.values["DATABASE_URL"]))
    env = _checks(lab)["coder.env"]
    assert env["status"] == "warn" and "plain value" in env["detail"]
    assert [p["code"] for p in env["problems"]] == ["COD-PG-URL-PLAIN"]


def test_database_url_from_another_secret_warns(lab: Lab) -> None:
    copy = lab.kube.get("Secret", "coder", "coder-database-secrets")
    assert copy is not None
    copy["metadata"] = {"name": "coder-db-copy", "namespace": "coder"}
    lab.kube.put(copy, reconcile=False)

    def from_copy(dep: Obj) -> None:
        env = [e for e in coder_container(dep)["env"] if e["name"] != "CODER_PG_CONNECTION_URL"]
        env.append({"name": "CODER_PG_CONNECTION_URL",
                    "valueFrom": {"secretKeyRef": {"name": "coder-db-copy", "key": "database-url"}}})
        coder_container(dep)["env"] = env

    change(lab, "Deployment", "coder", "coder", from_copy)
    env = _checks(lab)["coder.env"]
    assert env["status"] == "warn" and "coder-db-copy/database-url" in env["detail"]
    assert [p["code"] for p in env["problems"]] == ["COD-PG-URL-OTHER-SECRET"]


def test_ssl_unknown_when_neither_a_login_nor_the_statefulset_tells(lab: Lab) -> None:
    lab.scenario("db-password-drift")
    change(lab, "Pod", "coder", "coder-coder-postgresql-0", lambda pod: pod["metadata"].pop("ownerReferences"))
    lab.kube.delete("StatefulSet", "coder", "coder-coder-postgresql")  # the pod stays: an orphan now
    url = _checks(lab)["database.url"]
    assert url["status"] == "warn" and "unknown" in url["detail"]
    assert [p["code"] for p in url["problems"]] == ["DB-SSL-UNKNOWN"]


def test_rejected_credentials_are_their_own_code(lab: Lab, tmp_path: Path) -> None:
    import yaml

    config = yaml.safe_load(lab.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": "not-the-lab-token"}
    bad = tmp_path / "kubeconfig"
    bad.write_text(yaml.safe_dump(config))
    checks = _checks(lab, "--kubeconfig", str(bad), "-o", "json", "verify", "--only", "cluster")
    reachable = checks["cluster.reachable"]
    assert reachable["status"] == "fail"
    assert [p["code"] for p in reachable["problems"]] == ["KUBE-UNAUTHORIZED"]
