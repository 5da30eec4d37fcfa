"""The whole lab as one deployment: the fake cluster seeded with the reference deployment, the real
PostgreSQL behind it, the fake Coder behind the real nginx, a fake Infisical holding the managed Secret's
values (the InfisicalSecret's hostAPI points at it), all on loopback.

`lab` is what integration tests use: it knows the command-line options that point coderctl at the lab
(never at the built-in defaults, which name the real deployment), and every secret value of the run so
tests can search all output for them.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from lab.coder import FakeCoder
from lab.dns import LabDNS, reference_zones
from lab.infisical import FakeInfisical
from lab.infisical_operator import REFERENCE_KEY_MAP, VERSION_ANNOTATION, compute_etag
from lab.kube.runtime import PodRuntime
from lab.kubeapi import FakeKubeAPI, lab_values, load_manifests
from lab.nginx import ACCESS_HOST, WILDCARD_DOMAIN, LabNginx
from lab.postgres import LabPostgres
from lab.realcluster import KubectlCluster
from lab.tls import LabCA

MANIFESTS = Path(__file__).parent / "manifests" / "reference.yaml"
REAL_CLUSTER_ENV = "CODERCTL_LAB_KUBECONFIG"
MANAGED_SECRET = ("coder", "coder-database-secrets")
INFISICAL_SECRET = ("coder", "coder-database-secrets")


@dataclass
class Ingress:
    """The fake Coder behind nginx, shared by the tests of a session."""

    coder: FakeCoder
    nginx: LabNginx
    ca: LabCA
    dns: LabDNS

    @property
    def access_url(self) -> str:
        return f"https://{ACCESS_HOST}:{self.nginx.port}"

    @property
    def wildcard_url(self) -> str:
        return f"*.{WILDCARD_DOMAIN}:{self.nginx.port}"

    def net_args(self) -> list[str]:
        port = self.nginx.port
        return ["--resolve", f"{ACCESS_HOST}:{port}:127.0.0.1", "--resolve", f"*.{WILDCARD_DOMAIN}:{port}:127.0.0.1",
                "--ca-file", str(self.ca.ca_file), "--nameserver", self.dns.nameserver]


@dataclass
class Lab:
    kube: FakeKubeAPI
    postgres: LabPostgres
    ingress: Ingress
    values: dict[str, str]
    kubeconfig: Path
    runtimes: list[PodRuntime] = field(default_factory=list)
    infisical: FakeInfisical | None = None
    """Seeded with the managed Secret's values, the lab's INFISICAL_TOKEN registered (None on a real cluster)."""

    def enable_runtime(self, **options: Any) -> PodRuntime:
        """Pods that start, log in to the lab's PostgreSQL and roll out step by step (lab/kube/runtime.py);
        the PostgreSQL Services lead to the lab's server. Stopped with the lab."""
        backend = (self.postgres.host, self.postgres.port)
        backends = {"coder/coder-coder-postgresql": backend, "coder/coder-coder-postgresql-hl": backend,
                    **options.pop("backends", {})}
        runtime = PodRuntime(backends=backends, **options).attach(self.kube)
        self.runtimes.append(runtime)
        # The PostgreSQL container's own password variables now come from its spec, fixed when it starts.
        env = {k: v for k, v in bitnami_pod_env(self.postgres).items() if "PASSWORD" not in k}
        self.kube.set_exec("coder", "coder-coder-postgresql-0", env=env, path_map=bitnami_path_map(self.postgres))
        return runtime

    def stop_runtimes(self) -> None:
        while self.runtimes:
            self.runtimes.pop().stop()

    def stop(self) -> None:
        self.stop_runtimes()
        self.kube.stop()
        if self.infisical is not None:
            self.infisical.stop()

    def args(self, *more: str, timeout: float = 3.0) -> list[str]:
        """Global options pointing at the lab's cluster."""
        return ["--kubeconfig", str(self.kubeconfig), "--timeout", f"{timeout:g}", *more]

    def net_args(self) -> list[str]:
        return self.ingress.net_args()

    @property
    def access_url(self) -> str:
        return self.ingress.access_url

    def verify(self, *more: str, discover: bool = False) -> list[str]:
        """`-o json verify` against the lab; the access URL is passed unless `discover` (scenarios may change
        the Deployment's URL to a name outside the lab, which must never be looked up)."""
        url = [] if discover else ["--access-url", self.access_url]
        return [*self.args("-o", "json"), "verify", *self.net_args(), *url, *more]

    def scenario(self, name: str) -> None:
        """Apply a scenario file. Scenarios describe synced deployments: a managed Secret value they set is in
        Infisical too (sync_infisical)."""
        self.kube.apply_scenario(name)
        self.sync_infisical()

    def sync_infisical(self) -> None:
        """The state after a change made in Infisical and synced by the operator: the managed Secret's values
        in the lab's Infisical, and its version annotation the operator's ETag of its data."""
        if self.infisical is None:
            return
        secret = self.kube.get("Secret", *MANAGED_SECRET)
        if secret is None:
            return
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        for name, key in REFERENCE_KEY_MAP.items():
            if key in data and self._infisical_value(name) != data[key].decode():
                self.infisical.set_secret(name, data[key].decode())
        etag = compute_etag(data)
        if (secret["metadata"].get("annotations") or {}).get(VERSION_ANNOTATION) != etag:
            self.kube.patch("Secret", *MANAGED_SECRET, {"metadata": {"annotations": {VERSION_ANNOTATION: etag}}},
                            reconcile=False)

    def _infisical_value(self, name: str) -> str | None:
        assert self.infisical is not None
        try:
            return self.infisical.get_secret(name)
        except KeyError:
            return None

    def secret_values(self) -> list[str]:
        """Every secret of the run, raw and URL-encoded, for leak searches."""
        raw = [v for k, v in self.values.items() if "PASSWORD" in k or "TOKEN" in k or k == "DATABASE_URL"]
        raw += [self.postgres.admin_password, self.postgres.user_password]
        if self.infisical is not None and self.infisical.seed is not None:
            raw += [self.infisical.seed.service_token, self.infisical.seed.client_secret]
        return sorted({form for v in raw for form in (v, quote(v, safe=""))})

    def assert_no_secrets(self, *texts: str) -> None:
        for text in texts:
            for secret in self.secret_values():
                assert secret not in text, "a secret value leaked into the output"


@pytest.fixture(scope="session")
def lab_ingress(lab_ca: LabCA, lab_ingress_cert: tuple[Path, Path], lab_dns: LabDNS) -> Iterator[Ingress]:
    coder = FakeCoder()
    coder.start()
    nginx = LabNginx(coder.port, cert=lab_ingress_cert)
    nginx.start()
    try:
        yield Ingress(coder, nginx, lab_ca, lab_dns)
    finally:
        nginx.stop()
        coder.stop()


def lab_database_values(pg: LabPostgres) -> dict[str, str]:
    url = f"postgresql://coder:{quote(pg.user_password, safe='')}@coder-coder-postgresql:5432/coder?sslmode=disable"
    return {"POSTGRES_ADMIN_PASSWORD": pg.admin_password, "CODER_USER_PASSWORD": pg.user_password,
            "DATABASE_URL": url}


def start_cluster(pg: LabPostgres, ingress: Ingress, ca: LabCA, workdir: Path) -> Lab:
    """A started fake cluster seeded with the reference deployment, wired to the database, the ingress and a
    started fake Infisical holding the managed Secret's values."""
    values = lab_values()
    values.update(lab_database_values(pg))
    infisical = start_infisical(values)
    api: FakeKubeAPI | None = None
    try:
        manifests = load_manifests(MANIFESTS, values)
        _point_coder_at(manifests, ingress)
        _point_operator_at(manifests, values["INFISICAL_HOST_API"])
        api = FakeKubeAPI(manifests, tls=ca.ca)
        api.values = values
        api.start()
        api.set_exec("coder", "coder-coder-postgresql-0", env=bitnami_pod_env(pg), path_map=bitnami_path_map(pg))
        kubeconfig = api.write_kubeconfig(workdir / "kubeconfig")
    except BaseException:
        if api is not None:
            api.stop()
        infisical.stop()
        raise
    return Lab(api, pg, ingress, values, kubeconfig, infisical=infisical)


def start_infisical(values: dict[str, str]) -> FakeInfisical:
    """A started fake Infisical holding the lab's database values, which accepts the lab's INFISICAL_TOKEN (the
    operator's service token); values["INFISICAL_HOST_API"] is its hostAPI."""
    fake = FakeInfisical().start()
    try:
        fake.seed_reference({"CODER_POSTGRES_ADMIN_PASSWORD": values["POSTGRES_ADMIN_PASSWORD"],
                             "CODER_USER_PASSWORD": values["CODER_USER_PASSWORD"],
                             "CODER_DATABASE_URL": values["DATABASE_URL"]})
        fake.add_service_token(values["INFISICAL_TOKEN"], name="infisical-operator")
    except BaseException:
        fake.stop()
        raise
    values["INFISICAL_HOST_API"] = f"{fake.url}/api"
    return fake


@pytest.fixture
def lab(lab_postgres: LabPostgres, lab_ingress: Ingress, lab_ca: LabCA, tmp_path: Path) -> Iterator[Lab]:
    """A fresh fake cluster per test (scenarios change it), over the session's database and ingress.

    With CODERCTL_LAB_KUBECONFIG set, the cluster is that real one instead (kind, k3s), driven by kubectl
    (lab/realcluster.py); tests marked `fake_only` are skipped then."""
    real = os.environ.get(REAL_CLUSTER_ENV)
    if real:
        yield Lab(KubectlCluster(Path(real)), lab_postgres, lab_ingress, {}, Path(real))  # type: ignore[arg-type]
        return
    built = start_cluster(lab_postgres, lab_ingress, lab_ca, tmp_path)
    try:
        yield built
    finally:
        built.stop()


@contextmanager
def standalone_lab(workdir: Path) -> Iterator[Lab]:
    """The whole lab outside pytest (benchmarks, demos): everything started here is stopped on exit."""
    with contextlib.ExitStack() as stack:
        ca = LabCA(workdir / "ca")
        pg = stack.enter_context(LabPostgres())
        coder = FakeCoder()
        coder.start()
        stack.callback(coder.stop)
        nginx = LabNginx(coder.port, cert=ca.issue([ACCESS_HOST, f"*.{WILDCARD_DOMAIN}"], name="ingress"))
        nginx.start()
        stack.callback(nginx.stop)
        dns = stack.enter_context(LabDNS(reference_zones()))
        built = start_cluster(pg, Ingress(coder, nginx, ca, dns), ca, workdir)
        stack.callback(built.stop)
        yield built


def bitnami_pod_env(pg: LabPostgres) -> dict[str, str]:
    """The environment a Bitnami PostgreSQL container has (auth.username=coder, no password files), with
    PGHOST/PGPORT standing in for the pod-local socket. No PGPASSWORD: a command must bring its credentials."""
    return {
        "PATH": f"{pg.bindir}:/usr/local/bin:/usr/bin:/bin",
        "PGHOST": pg.host, "PGPORT": str(pg.port),
        "POSTGRES_USER": "coder", "POSTGRES_DATABASE": "coder",
        "POSTGRES_PASSWORD": pg.user_password, "POSTGRES_POSTGRES_PASSWORD": pg.admin_password,
        "BITNAMI_APP_NAME": "postgresql", "HOME": "/tmp",
    }


def bitnami_path_map(pg: LabPostgres) -> dict[str, str]:
    return {"/opt/bitnami/postgresql/bin/pg_dump": str(pg.bindir / "pg_dump"),
            "/opt/bitnami/postgresql/bin/psql": str(pg.bindir / "psql")}


def _point_operator_at(manifests: list[dict[str, Any]], host_api: str) -> None:
    """The InfisicalSecret's hostAPI is the lab's fake Infisical (never a real host), and the managed Secret's
    version annotation is the operator's ETag of its data, as after a sync."""
    for obj in manifests:
        meta = obj.get("metadata") or {}
        where = (meta.get("namespace"), meta.get("name"))
        if obj.get("kind") == "InfisicalSecret" and where == INFISICAL_SECRET:
            obj["spec"]["hostAPI"] = host_api
        elif obj.get("kind") == "Secret" and where == MANAGED_SECRET:
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            data.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
            meta.setdefault("annotations", {})[VERSION_ANNOTATION] = compute_etag(data)


def _point_coder_at(manifests: list[dict[str, Any]], ingress: Ingress) -> None:
    """The lab's ingress listens on a random port, so the access URLs the seed gives Coder carry it."""
    urls = {"CODER_ACCESS_URL": ingress.access_url, "CODER_WILDCARD_ACCESS_URL": ingress.wildcard_url}
    for obj in manifests:
        if obj.get("kind") not in ("Deployment", "Pod", "ReplicaSet"):
            continue
        spec = obj.get("spec") or {}
        pod_spec = (spec.get("template") or {}).get("spec") or spec
        for container in pod_spec.get("containers") or []:
            for entry in container.get("env") or []:
                if entry.get("name") in urls:
                    entry["value"] = urls[entry["name"]]
