"""doctor on the lab: each of the issue's diagnoses from a broken deployment (a scenario file, a breakage
made in code, or an ingress broken for it), the right root cause first with a fix naming the real objects
and the consequences folded; the healthy lab gives no finding; two independent faults give two findings,
the more severe first."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from clirun import run_cli
from coderctl.doctor.evidence import LOG_LINES
from envelope_schema import validate_envelope
from lab.coder import FakeCoder
from lab.deployment import Lab
from lab.dns import DEFAULT_TUNNEL_ID, TUNNEL_ZONE, ZONE, LabDNS, external_dns_txt, reference_zones
from lab.nginx import ACCESS_HOST, WILDCARD_DOMAIN, LabNginx
from test_rotate_layout import ACTING, login_role
from test_verify_findings import _other_host, change, delete, set_env

pytestmark = [pytest.mark.fake_only, pytest.mark.flaky(reruns=2)]  # exec streams can fail to open under load

Obj = dict[str, Any]
WARN_OR_ABOVE = {"critical", "fail", "error", "warn"}


class Ingress:
    """A fake Coder behind an nginx of its own, broken as a test asks (the session's ingress stays healthy)."""

    def __init__(self, lab: Lab, make_dns: Callable[[dict[str, str]], LabDNS] | None = None) -> None:
        self.lab = lab
        self.make_dns = make_dns
        self.coder: FakeCoder | None = None
        self.nginx: LabNginx | None = None
        self.dns: LabDNS | None = None

    def use_dns(self, zones: dict[str, str]) -> None:
        assert self.make_dns is not None
        self.dns = self.make_dns(zones)

    @property
    def nameserver(self) -> str:
        return (self.dns or self.lab.ingress.dns).nameserver

    def start(self, *, mode: str = "normal", expired: bool = False, expires_in_days: float | None = None,
              **nginx: Any) -> None:
        ca = self.lab.ingress.ca
        hosts = [ACCESS_HOST, f"*.{WILDCARD_DOMAIN}"]
        not_after = dt.datetime.now(dt.UTC) + dt.timedelta(days=expires_in_days) if expires_in_days else None
        cert = ca.issue(hosts, name=f"doctor-{id(self)}", expired=expired, not_after=not_after)
        self.coder = FakeCoder().start()
        self.coder.mode = mode  # type: ignore[assignment]
        self.nginx = LabNginx(self.coder.port, cert=cert, **nginx).start()

    def args(self) -> list[str]:
        port = self.nginx.port if self.nginx is not None else self.lab.ingress.nginx.port
        return ["--resolve", f"{ACCESS_HOST}:{port}:127.0.0.1", "--resolve", f"*.{WILDCARD_DOMAIN}:{port}:127.0.0.1",
                "--ca-file", str(self.lab.ingress.ca.ca_file), "--nameserver", self.nameserver,
                "--access-url", f"https://{ACCESS_HOST}:{port}"]

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        if self.coder is not None:
            self.coder.stop()


@pytest.fixture
def ingress(lab: Lab, make_dns: Callable[[dict[str, str]], LabDNS]) -> Iterator[Ingress]:
    made = Ingress(lab, make_dns)
    yield made
    made.stop()


def run_doctor(lab: Lab, ingress: Ingress, *more: str, env: dict[str, str] | None = None) -> tuple[int, Obj]:
    r = run_cli(*lab.args("-o", "json"), "doctor", *ingress.args(), *more, env=env)
    lab.assert_no_secrets(r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    validate_envelope(doc)
    return r.code, doc


Setup = Callable[[Lab, Ingress], None]


def scenario(*names: str) -> Setup:
    def apply(lab: Lab, ingress: Ingress) -> None:
        for name in names:
            lab.scenario(name)
    return apply


def broken_ingress(**options: Any) -> Setup:
    def apply(lab: Lab, ingress: Ingress) -> None:
        ingress.start(**options)
    return apply


def breakage(kind: str, ns: str, name: str, fn: Callable[[Obj], None]) -> Setup:
    def apply(lab: Lab, ingress: Ingress) -> None:
        change(lab, kind, ns, name, fn)
    return apply


def both(*setups: Setup) -> Setup:
    def apply(lab: Lab, ingress: Ingress) -> None:
        for setup in setups:
            setup(lab, ingress)
    return apply


def zones(**options: Any) -> Setup:
    def apply(lab: Lab, ingress: Ingress) -> None:
        ingress.use_dns(reference_zones(**options))
    return apply


def _deeper_wildcard(lab: Lab, ingress: Ingress) -> None:
    """Workspace apps under *.apps.xuperson.org: Ingress, setting and ExternalDNS record all agree, but the
    zone is behind a Cloudflare tunnel and Universal SSL covers one level below the zone only."""
    port = lab.ingress.nginx.port
    change(lab, "Deployment", "coder", "coder", set_env("CODER_WILDCARD_ACCESS_URL", f"*.apps.{ZONE}:{port}"))

    def host(ing: Obj) -> None:
        for rule in ing["spec"]["rules"]:
            rule["host"] = f"*.apps.{ZONE}"
        for tls in ing["spec"].get("tls") or []:
            tls["hosts"] = [f"*.apps.{ZONE}"]

    change(lab, "Ingress", "coder", "coder-workspaces-wildcard", host)
    found = reference_zones()
    found[ZONE] += (f"*.apps          CNAME  {DEFAULT_TUNNEL_ID}.{TUNNEL_ZONE}.\n"
                    f"cname-*.apps    TXT    {external_dns_txt('ingress/coder/coder-workspaces-wildcard')}\n")
    ingress.use_dns(found)


def _old_image(dep: Obj) -> None:
    next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "coder")["image"] = \
        "ghcr.io/coder/coder:v2.24.1"


def _suspended(hr: Obj) -> None:
    hr["spec"]["suspend"] = True


@dataclass
class Diagnosis:
    name: str
    setup: Setup
    code: str
    fix_names: tuple[str, ...]
    checks: frozenset[str] = frozenset()
    consequences: frozenset[str] = frozenset()
    evidence: tuple[str, ...] = ()
    chain: str = ""


NETWORK_503 = frozenset({"http.healthz", "http.buildinfo", "http.wildcard", "derp.relay", "derp.upgrade",
                         "derp.websocket", "derp.latency-check", "derp.verdict", "ws.upgrade"})

DIAGNOSES = [
    # 1. the database URL host is a Service that does not exist: names the one that does
    Diagnosis("db-wrong-host", scenario("db-wrong-host"), "DATABASE-HOST-WRONG",
              ("coder-coder-postgresql", "infisical secrets set CODER_DATABASE_URL", "deployment/coder"),
              frozenset({"secret.consistency"})),
    Diagnosis("db-wrong-host-whole-chain",
              both(scenario("db-wrong-host-crashloop"), broken_ingress(mode="unavailable")), "DATABASE-HOST-WRONG",
              ("coder-coder-postgresql",), frozenset({"secret.consistency"}),
              NETWORK_503 | {"coder.pods", "coder.deployment"},
              ("no such host", "BackOff", "0 ready addresses"), "503"),
    # 2. sslmode: ?sslmode=disable, set in Infisical
    Diagnosis("db-sslmode-missing", scenario("db-sslmode-missing"), "DATABASE-SSL-MISMATCH",
              ("sslmode=disable", "Infisical", "infisical secrets set CODER_DATABASE_URL"),
              frozenset({"database.url"})),
    # 3. password drift: rotate-secrets or the one ALTER ROLE, and why Bitnami
    Diagnosis("db-password-drift", scenario("db-password-drift"), "DATABASE-PASSWORD-DRIFT",
              ("coderctl rotate-secrets", "ALTER ROLE", "coder-coder-postgresql-0"), frozenset({"database.connect"}),
              chain="Bitnami"),
    # 4. Infisical sync failing: the token Secret and how to renew it
    Diagnosis("infisical-token-expired", scenario("infisical-token-expired"), "INFISICAL-TOKEN-EXPIRED",
              ("infisical-operator", "infisical-service-token", "infisicalsecret coder-database-secrets"),
              frozenset({"infisical.sync"}), evidence=("Your token has expired",)),
    Diagnosis("infisical-sync-failing", scenario("infisical-sync-failing"), "INFISICAL-SYNC-BROKEN",
              ("infisicalsecret coder-database-secrets", "infisical-service-token"), frozenset({"infisical.sync"})),
    Diagnosis("infisical-token-missing", scenario("infisical-token-missing"), "INFISICAL-TOKEN-EXPIRED",
              ("infisical-operator", "infisical-service-token"), frozenset({"infisical.token", "infisical.sync"})),
    # 5. Upgrade: DERP blocked while WebSocket works
    Diagnosis("derp-upgrade-stripped", broken_ingress(variant="websocket-only"), "DERP-UPGRADE-STRIPPED",
              ("CODER_DERP_FORCE_WEBSOCKETS=true", "ingress-nginx-controller"),
              frozenset({"derp.upgrade", "derp.verdict"})),
    # 6. WebSocket upgrades blocked
    Diagnosis("websocket-blocked", broken_ingress(variant="no-upgrade"), "WEBSOCKET-BLOCKED",
              ("Upgrade $http_upgrade", "ingress-nginx-controller"), frozenset({"ws.upgrade", "derp.verdict"}),
              frozenset({"derp.upgrade", "derp.websocket"})),
    # 7. proxy read timeout of 60 s
    Diagnosis("ingress-short-timeouts", scenario("ingress-short-timeouts"), "PROXY-TIMEOUT-SHORT",
              ("ingress coder", "proxy-read-timeout=3600", "proxy-send-timeout=3600"), frozenset({"ingress.timeouts"})),
    # 8. wildcard missing
    Diagnosis("wildcard-ingress-deleted", breakage("Ingress", "coder", "coder-workspaces-wildcard", delete),
              "WILDCARD-MISSING", ("coder-workspaces-wildcard",), frozenset({"ingress.wildcard"}),
              frozenset({"ingress.timeouts"})),
    Diagnosis("wildcard-not-served", broken_ingress(wildcard=False), "WILDCARD-MISSING",
              ("coder-workspaces-wildcard", "xuperson.org"), frozenset({"http.wildcard"})),
    Diagnosis("wildcard-record-missing", zones(wildcard=False), "WILDCARD-MISSING",
              ("dig +short '*.xuperson.org'",), frozenset({"dns.wildcard"})),
    Diagnosis("wildcard-too-deep", _deeper_wildcard, "WILDCARD-TOO-DEEP", ("*.xuperson.org", "*.apps.xuperson.org"),
              frozenset({"tls.wildcard"}), frozenset({"http.wildcard"})),
    # 9. OOMKilled: the memory limit
    Diagnosis("coder-crashloop-oom", scenario("coder-crashloop-oom"), "CODER-OOMKILLED",
              ("deployment/coder", "--limits=memory=4Gi"), frozenset({"coder.pods"}), frozenset({"coder.deployment"})),
    Diagnosis("coder-oom-observed-usage", scenario("coder-crashloop-oom", "coder-oom-node-event"), "CODER-OOMKILLED",
              ("--limits=memory=4Gi", "observed usage when it was killed: 4.0Gi"), frozenset({"coder.pods"}),
              evidence=("OOMKilling", "anon-rss:4187112kB")),
    # 10. PVC Pending: the storage class / provisioner
    Diagnosis("postgres-pvc-pending", scenario("postgres-pvc-pending"), "POSTGRES-VOLUME-PENDING",
              ("data-coder-coder-postgresql-0", "storageclass longhorn"), frozenset({"postgres.pvc"}),
              frozenset({"postgres.statefulset", "database.url", "database.connect"})),
    # 11. LoadBalancer pending, or outside the MetalLB pool
    Diagnosis("lb-pending", scenario("lb-pending"), "LOADBALANCER-PENDING", ("service coder", "metallb-system"),
              frozenset({"service.coder"})),
    Diagnosis("lb-ip-outside-pool", scenario("lb-ip-outside-pool"), "LOADBALANCER-OUTSIDE-POOL",
              ("service coder", "192.168.80.105"), frozenset({"service.coder"})),
    # 12. access URL mismatch: host not served by the Ingress, or http behind TLS
    Diagnosis("access-url-mismatch", scenario("access-url-mismatch"), "ACCESS-URL-MISMATCH",
              ("CODER_ACCESS_URL", "helmrelease coder"), frozenset({"coder.env"})),
    Diagnosis("access-url-http", breakage("Deployment", "coder", "coder",
                                          set_env("CODER_ACCESS_URL", "http://coder.xuperson.org")),
              "ACCESS-URL-MISMATCH", ("CODER_ACCESS_URL", "https://"), frozenset({"coder.env"})),
    Diagnosis("access-host-not-routed",
              both(breakage("Ingress", "coder", "coder", _other_host),
                   broken_ingress(access_host=f"elsewhere.{ZONE}", wildcard=False)),
              "ACCESS-HOST-NOT-ROUTED", ("ingress coder", "coder.xuperson.org"),
              frozenset({"coder.env", "ingress.access"}), NETWORK_503 - {"http.wildcard"},
              ("default backend",)),
    # 13. certificate expired or expiring
    Diagnosis("certificate-expired", broken_ingress(expired=True), "CERTIFICATE-EXPIRED", ("certificate",),
              frozenset({"tls.access-url", "tls.wildcard"}), NETWORK_503 | {"http.healthz"}),
    Diagnosis("certificate-expiring", broken_ingress(expires_in_days=3), "CERTIFICATE-EXPIRING", ("renew",),
              frozenset({"tls.access-url", "tls.wildcard"})),
    # 14. Flux HelmRelease not Ready or suspended
    Diagnosis("flux-not-ready", scenario("flux-not-ready"), "FLUX-RELEASE-FAILED",
              ("helmrelease coder", "flux reconcile"), frozenset({"flux.ready"})),
    Diagnosis("flux-suspended", breakage("HelmRelease", "coder", "coder", _suspended), "FLUX-RELEASE-FAILED",
              ("flux resume helmrelease coder -n coder",), frozenset({"flux.ready"})),
    # 15. Coder running another image than expected
    Diagnosis("coder-old-image", breakage("Deployment", "coder", "coder", _old_image), "CODER-VERSION-UNEXPECTED",
              ("v2.25.0", "helmrelease coder"), frozenset({"coder.deployment"})),
]


@pytest.mark.parametrize("case", DIAGNOSES, ids=lambda d: d.name)
def test_diagnosis(lab: Lab, ingress: Ingress, case: Diagnosis) -> None:
    case.setup(lab, ingress)
    code, doc = run_doctor(lab, ingress)
    findings = doc["findings"]
    assert code == 1
    assert [f["code"] for f in findings if f["severity"] in WARN_OR_ABOVE] == [case.code], findings
    first = findings[0]
    fix = "\n".join(first["fix"])
    for needle in case.fix_names:
        assert needle in fix, (needle, first["fix"])
    assert case.checks <= set(first["checks"]), first
    assert case.consequences <= set(first["consequences"]), first
    evidence = "\n".join(first["evidence"])
    for needle in case.evidence:
        assert needle in evidence, (needle, first["evidence"])
    assert case.chain in first["chain"]
    failing = {c["id"] for c in doc["checks"] if c["status"] in ("warn", "fail", "error")}
    assert failing <= set(first["checks"]) | set(first["consequences"]), failing


def test_healthy_lab_has_no_finding(lab: Lab, ingress: Ingress) -> None:
    code, doc = run_doctor(lab, ingress)
    assert (code, doc["findings"]) == (0, [])
    assert doc["summary"]["fail"] == 0 and doc["summary"]["error"] == 0


@dataclass
class Double:
    name: str
    setup: Setup
    codes: tuple[str, str]
    also: frozenset[str] = field(default_factory=frozenset)


DOUBLES = [
    Double("wrong-host+wildcard-missing", both(scenario("db-wrong-host"),
                                               breakage("Ingress", "coder", "coder-workspaces-wildcard", delete)),
           ("DATABASE-HOST-WRONG", "WILDCARD-MISSING")),
    Double("sync-failing+short-timeouts", scenario("infisical-sync-failing", "ingress-short-timeouts"),
           ("INFISICAL-SYNC-BROKEN", "PROXY-TIMEOUT-SHORT")),
    Double("oom+lb-outside-pool", scenario("lb-ip-outside-pool", "coder-crashloop-oom"),
           ("CODER-OOMKILLED", "LOADBALANCER-OUTSIDE-POOL")),
    Double("pvc-pending+flux-not-ready", scenario("flux-not-ready", "postgres-pvc-pending"),
           ("POSTGRES-VOLUME-PENDING", "FLUX-RELEASE-FAILED")),
    Double("password-drift+derp-stripped",
           both(scenario("db-password-drift"), broken_ingress(variant="websocket-only")),
           ("DATABASE-PASSWORD-DRIFT", "DERP-UPGRADE-STRIPPED")),
    Double("expired-cert+token-expired", both(scenario("infisical-token-expired"), broken_ingress(expired=True)),
           ("CERTIFICATE-EXPIRED", "INFISICAL-TOKEN-EXPIRED")),
]


@pytest.mark.parametrize("case", DOUBLES, ids=lambda d: d.name)
def test_two_faults_give_two_findings_more_severe_first(lab: Lab, ingress: Ingress, case: Double) -> None:
    case.setup(lab, ingress)
    code, doc = run_doctor(lab, ingress)
    assert code == 1
    assert tuple(f["code"] for f in doc["findings"]) == case.codes, doc["findings"]


def test_a_failed_release_explains_the_stale_version(lab: Lab, ingress: Ingress) -> None:
    """A consequence that looks like another fault (an old image left by a failed upgrade) is one finding."""
    lab.scenario("flux-not-ready")
    change(lab, "Deployment", "coder", "coder", _old_image)
    _, doc = run_doctor(lab, ingress)
    assert [f["code"] for f in doc["findings"]] == ["FLUX-RELEASE-FAILED"]
    assert "coder.deployment" in doc["findings"][0]["consequences"]


def test_coder_health_codes_become_evidence_and_findings(lab: Lab, ingress: Ingress) -> None:
    ingress.start(variant="websocket-only")
    assert ingress.coder is not None
    ingress.coder.health_problems = {"derp": [("EDERP01", "Websocket fallback used: upgrade DERP is blocked")],
                                     "provisioner_daemons": [("EPD01", "No active provisioner daemons found!")]}
    token = ingress.coder.session_token
    code, doc = run_doctor(lab, ingress, env={"CODER_SESSION_TOKEN": token})
    codes = [f["code"] for f in doc["findings"]]
    assert codes == ["DERP-UPGRADE-STRIPPED", "CODER-EPD01"], doc["findings"]
    assert any("EDERP01" in line for line in doc["findings"][0]["evidence"])
    assert token not in json.dumps(doc)


def test_text_output_leads_with_the_finding(lab: Lab, ingress: Ingress) -> None:
    lab.scenario("db-wrong-host")
    r = run_cli(*lab.args(), "doctor", *ingress.args())
    lab.assert_no_secrets(r.stdout, r.stderr)
    assert r.code == 1
    first = r.stdout.splitlines()[0]
    assert "DATABASE-HOST-WRONG" in first and "CRITICAL" in first
    assert "fix:" in r.stdout and "coder-coder-postgresql" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1].startswith("checks: ")


def test_healthy_text_output(lab: Lab, ingress: Ingress) -> None:
    r = run_cli(*lab.args(), "doctor", *ingress.args())
    assert r.code == 0 and "no problems found" in r.stdout


def test_since_is_validated(lab: Lab, ingress: Ingress) -> None:
    r = run_cli(*lab.args(), "doctor", "--since", "soon", *ingress.args())
    assert r.code == 2 and "duration" in r.stderr


def test_a_run_that_could_not_look_is_not_healthy(lab: Lab, ingress: Ingress) -> None:
    """Without --access-url and without leave to read the Deployment, the network and dns checks cannot look:
    that is a finding (exit 1), as verify's unchecked categories are, next to the refused read itself."""
    lab.kube.forbid("get", "deployments")
    lab.kube.forbid("list", "deployments")
    args = [a for a in ingress.args() if a != "--access-url" and not a.startswith("https://")]
    r = run_cli(*lab.args("-o", "json"), "doctor", *args)
    doc = json.loads(r.stdout)
    codes = [f["code"] for f in doc["findings"]]
    assert r.code == 1 and "NOTHING-CHECKED" in codes and "CLUSTER-ACCESS-DENIED" in codes, codes


def test_since_leaves_out_older_events_and_log_lines(lab: Lab, ingress: Ingress) -> None:
    """Events are filtered here; the log lines doctor gathers by the API server (sinceSeconds on each of its
    log requests, current and previous container)."""
    lab.scenario("db-wrong-host-crashloop")  # its BackOff event was last seen a minute ago
    start = len(lab.kube.request_log)
    _, recent = run_doctor(lab, ingress, "--since", "2h")
    middle = len(lab.kube.request_log)
    _, newer = run_doctor(lab, ingress, "--since", "20s")
    assert any("BackOff" in line for line in recent["findings"][0]["evidence"])
    assert not any("BackOff" in line for line in newer["findings"][0]["evidence"])
    assert newer["findings"][0]["code"] == "DATABASE-HOST-WRONG"
    for since, requests in (("7200", lab.kube.request_log[start:middle]), ("20", lab.kube.request_log[middle:])):
        logs = [path for method, path in requests if method == "GET" and "/log?" in path
                and f"tailLines={LOG_LINES}" in path]  # doctor's own reads (checks read a few lines of their own)
        assert any("previous=true" in path for path in logs) and any("previous" not in path for path in logs)
        assert all(f"sinceSeconds={since}" in path for path in logs), logs


def test_a_rejected_session_token_is_noted_not_fatal(lab: Lab, ingress: Ingress) -> None:
    ingress.start()
    r = run_cli(*lab.args("-o", "json"), "doctor", *ingress.args(), "--bundle", str(lab.kubeconfig.parent / "b.tgz"),
                env={"CODER_SESSION_TOKEN": "AbCdEf1234-WrongWrongWrongWrong00"})
    assert r.code == 1
    assert [f["code"] for f in json.loads(r.stdout)["findings"]] == ["WS-TOKEN-REJECTED"]  # ws.upgrade uses it too
    assert "WrongWrongWrongWrong00" not in r.stdout + r.stderr
    import tarfile

    with tarfile.open(lab.kubeconfig.parent / "b.tgz") as tar:
        member = tar.extractfile("coderctl-doctor/evidence.json")
        assert member is not None
        evidence = json.loads(member.read())
    assert any("health report: 401" in line for line in evidence["not_read"]), evidence["not_read"]


def test_doctor_only_reads(lab: Lab, ingress: Ingress, tmp_path: Any) -> None:
    lab.scenario("db-wrong-host-crashloop")
    run_doctor(lab, ingress, "--bundle", str(tmp_path / "bundle.tar.gz"))
    methods = {method for method, _ in lab.kube.request_log}
    assert methods == {"GET"}, methods


def test_a_broken_login_role_layout(lab: Lab, ingress: Ingress) -> None:
    """The URL's user is coder_a, a member of coder without `SET role`, and owns a table it made: the layout of
    rotate-secrets --strategy alternate, broken on purpose."""
    with login_role(lab, "GRANT coder TO coder_a", "SET ROLE coder_a; CREATE TABLE public.stray (id int)"):
        code, doc = run_doctor(lab, ingress)
    assert code == 1
    assert [f["code"] for f in doc["findings"]] == ["DATABASE-ROLE-LAYOUT-BROKEN"], doc["findings"]
    first = doc["findings"][0]
    fix = "\n".join(first["fix"])
    assert first["fix"][0].startswith("make coder_a act as coder") and "database.roles" in first["checks"]
    for needle in ("coder-coder-postgresql-0", "ALTER ROLE coder_a SET role = 'coder';",
                   "REASSIGN OWNED BY coder_a TO coder;", "deployment/coder"):
        assert needle in fix, (needle, first["fix"])
    assert "TABLE public.stray" in "\n".join(first["evidence"])
    failing = {c["id"] for c in doc["checks"] if c["status"] in ("warn", "fail", "error")}
    assert failing <= set(first["checks"]) | set(first["consequences"]), failing


def test_password_drift_of_a_login_role_names_it(lab: Lab, ingress: Ingress) -> None:
    with login_role(lab, *ACTING, "ALTER ROLE coder_a PASSWORD 'drifted-away-from-the-secret'"):
        code, doc = run_doctor(lab, ingress)
    assert code == 1
    assert [f["code"] for f in doc["findings"]] == ["DATABASE-PASSWORD-DRIFT"], doc["findings"]
    fix = "\n".join(doc["findings"][0]["fix"])
    assert "-c '\\password coder_a'" in fix and "\\password coder'" not in fix
