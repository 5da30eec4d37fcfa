"""The problem codes of the network and dns checks: registered, documented, and one per cause.

The lab tests (test_probe_derp, test_probe_dns, test_probe_http) assert the codes each breakage produces;
these cover the rules that build several problems at once and the registry itself, without a lab.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path
from types import ModuleType

import pytest
from lab.deployment import Lab
from probeargs import assert_coded, by_id, codes, run_json, statuses

from coderctl.checks import derp, dns, network, tls, websocket
from coderctl.checks.base import Status
from coderctl.clients.derp import Greeting
from coderctl.clients.http import Response
from coderctl.context import App
from coderctl.problems import CODES, Code
from coderctl.profile import load_settings

MODULES: dict[ModuleType, tuple[str, ...]] = {
    network: ("HTTP-",), tls: ("TLS-",), websocket: ("WS-",), derp: ("DERP-",), dns: ("DNS-",),
}
CODER_CODES = {"EACS01", "EACS02", "EACS03", "EACS04", "EDB01", "EDB02", "EDERP01", "EDERP02", "EWS01", "EWS02"}


def codes_of(module: ModuleType) -> list[Code]:
    return [v for v in vars(module).values() if isinstance(v, Code)]


@pytest.mark.parametrize("module", list(MODULES), ids=lambda m: m.__name__)
def test_each_module_registers_documented_codes_with_its_prefix(module: ModuleType) -> None:
    found = codes_of(module)
    assert found
    for c in found:
        assert CODES[c.code] is c
        assert c.code.startswith(MODULES[module]), c.code
        assert c.title and c.meaning and c.fix and c.evidence and c.check, c.code
        assert c.coder_code is None or c.coder_code in CODER_CODES, c.code


@pytest.mark.parametrize("module", list(MODULES), ids=lambda m: m.__name__)
def test_converted_modules_no_longer_build_prose_outcomes(module: ModuleType) -> None:
    tree = ast.parse(Path(module.__file__ or "").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "coderctl.checks.base" for alias in node.names}
    assert not imported & {"warn", "fail"}, module.__name__


def test_coder_health_codes_where_coder_has_one() -> None:
    assert CODES["HTTP-ACCESS-URL-UNSET"].coder_code == "EACS01"
    assert CODES["HTTP-HEALTHZ-UNREACHABLE"].coder_code == "EACS03"
    assert CODES["HTTP-HEALTHZ-STATUS"].coder_code == "EACS04"
    assert CODES["DERP-WEBSOCKET-ONLY"].coder_code == "EDERP01"
    assert CODES["WS-UPGRADE-REFUSED"].coder_code == "EWS01"
    assert CODES["WS-ECHO-FAILED"].coder_code == CODES["WS-ECHO-ALTERED"].coder_code == "EWS02"


def _app(**environ: str) -> App:
    return App(settings=load_settings(environ=environ))


def _served(names: list[str], days: float, version: str = "TLSv1.3") -> tls.Served:
    return tls.Served("coder.xuperson.org", names, time.time() + days * 86400, version, "Lab CA", 8443)


def test_a_certificate_with_three_faults_gives_three_problems() -> None:
    app = _app()
    served = _served(["other.example.org"], -2, "TLSv1.1")
    outcome = tls.judge(app, served, tls.certificate_problems(app, served, "the access host"))
    assert outcome.status is Status.FAIL
    assert [p.code for p in outcome.problems] == ["TLS-NAME-MISMATCH", "TLS-CERT-EXPIRED", "TLS-OLD-PROTOCOL"]
    assert outcome.detail == ("the certificate for the access host covers other.example.org, not "
                              "coder.xuperson.org; the certificate expired 2 days ago; TLSv1.1 negotiated")
    evidence = outcome.problems[0].evidence
    assert "certificate names: other.example.org" in evidence and "issuer: Lab CA" in evidence
    assert any(e.startswith("notAfter: ") and "(-2.0 days left)" in e for e in evidence)
    assert any("openssl s_client -connect coder.xuperson.org:8443" in f for f in outcome.problems[0].fix)
    assert any("ingress-nginx/ingress-nginx-controller" in f for f in outcome.problems[2].fix)


def test_insecure_reports_certificate_failures_as_warnings() -> None:
    app = _app(CODERCTL_INSECURE="true")
    served = _served(["coder.xuperson.org"], 3)
    outcome = tls.judge(app, served, tls.certificate_problems(app, served, "the access host"))
    assert outcome.status is Status.WARN and outcome.detail.endswith("(not failing: --insecure)")
    assert [(p.code, p.severity.value) for p in outcome.problems] == [("TLS-CERT-EXPIRES-SOON", "warn")]


def test_a_healthy_certificate_has_no_problems() -> None:
    app = _app()
    served = _served(["*.xuperson.org", "coder.xuperson.org"], 60)
    outcome = tls.judge(app, served, tls.certificate_problems(app, served, "the access host"))
    assert outcome.status is Status.OK and outcome.problems == []


def _greeting(header_key: str | None, version: str | None) -> Greeting:
    response = Response(101, "Switching Protocols", {}, b"", 0.01, "127.0.0.1:8443")
    return Greeting("derp", response, header_key, version, bytes(range(32)), 0.002)


def test_each_fault_in_the_derp_greeting_is_its_own_problem() -> None:
    problems = derp._greeting_problems(_greeting("ab" * 32, "1"), expect_header=True)
    assert [p.code for p in problems] == ["DERP-KEY-MISMATCH", "DERP-VERSION-UNEXPECTED"]
    assert f"ServerKey frame after 2 ms: {bytes(range(32)).hex()}" in problems[0].evidence
    assert f"Derp-Public-Key: {'ab' * 32}" in problems[0].evidence
    missing = derp._greeting_problems(_greeting(None, "2"), expect_header=True)
    assert [p.code for p in missing] == ["DERP-KEY-HEADER-MISSING"]
    assert "Derp-Public-Key: (none)" in missing[0].evidence
    malformed = derp._greeting_problems(_greeting("XYZ", "2"), expect_header=True)
    assert [p.code for p in malformed] == ["DERP-KEY-HEADER-MALFORMED"]
    assert derp._greeting_problems(_greeting(None, None), expect_header=False) == []  # over WebSocket


def test_answer_evidence_names_who_answered() -> None:
    resp = Response(426, "Upgrade Required", {"server": "nginx", "x-coder-build-version": "v2.25.0",
                                              "cf-ray": "8a1b2c3d4e5f-AMS"}, b"DERP requires connection upgrade",
                    0.01, "127.0.0.1:443")
    assert network.answer_evidence("GET", "https://coder.xuperson.org/derp", resp) == [
        "GET https://coder.xuperson.org/derp: 426 Upgrade Required", "server: nginx",
        "x-coder-build-version: v2.25.0", "cf-ray: 8a1b2c3d4e5f-AMS", "body: 'DERP requires connection upgrade'"]


def _without_env(lab: Lab, *names: str) -> None:
    deployment = lab.kube.get("Deployment", "coder", "coder")
    assert deployment is not None
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "coder")
    container["env"] = [e for e in container["env"] if e["name"] not in names]
    lab.kube.put(deployment, reconcile=False)


@pytest.mark.fake_only
def test_unset_access_and_wildcard_urls_are_coded(lab: Lab) -> None:
    _without_env(lab, "CODER_ACCESS_URL", "CODER_WILDCARD_ACCESS_URL")
    r, doc = run_json(*lab.args(), "probe", "http", *lab.net_args(), env={"CODERCTL_WILDCARD_URL": ""})
    assert r.code == 1
    assert_coded(doc)
    for check in doc["checks"]:
        assert check["status"] == "fail" and codes(check) == ["HTTP-ACCESS-URL-UNSET"], check
    problem = by_id(doc)["http.healthz"]["problems"][0]
    assert problem["coder_code"] == "EACS01" and "CODER_ACCESS_URL is not set" in problem["message"]
    assert "Deployment coder/coder container coder: no CODER_ACCESS_URL" in problem["evidence"]
    assert "kubectl -n coder set env deployment/coder --list | grep CODER_ACCESS_URL" in problem["fix"]

    r, doc = run_json(*lab.args(), "probe", "http", *lab.net_args(), "--access-url", lab.access_url,
                      env={"CODERCTL_WILDCARD_URL": ""})
    assert_coded(doc)
    for cid in ("http.wildcard", "tls.wildcard"):
        assert codes(by_id(doc)[cid]) == ["HTTP-WILDCARD-URL-UNSET"]
    assert statuses(doc)["http.healthz"] == "ok"
