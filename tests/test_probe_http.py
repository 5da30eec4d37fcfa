"""HTTP and TLS checks (`coderctl probe http`, and the network category of verify) against the lab's nginx."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from lab.coder import FakeCoder
from lab.dns import LabDNS
from lab.nginx import ACCESS_HOST, LabNginx
from lab.tls import LabCA
from probeargs import WILDCARD, assert_coded, by_id, codes, network_args, run_json, statuses

MakeNginx = Callable[..., LabNginx]
HTTP_CHECKS = ["http.healthz", "http.buildinfo", "http.wildcard", "tls.access-url", "tls.wildcard"]


def test_healthy_lab_every_network_check_ok(
    lab_nginx: LabNginx, lab_ca: LabCA, lab_dns: LabDNS, fake_coder: FakeCoder
) -> None:
    r, doc = run_json("verify", "--only", "network", *network_args(lab_nginx, lab_ca, lab_dns))
    assert r.code == 0, r.output
    status = statuses(doc)
    assert {"http.healthz", "http.buildinfo", "tls.access-url", "http.wildcard", "tls.wildcard", "ws.upgrade",
            "derp.upgrade", "derp.websocket", "derp.latency-check"} <= set(status)
    not_ok = {cid: s for cid, s in status.items() if s != "ok"}
    assert not_ok == {"derp.hold": "skip"}  # --hold is off in verify
    assert fake_coder.errors == []


def test_probe_http_envelope(lab_nginx: LabNginx, lab_ca: LabCA, lab_dns: LabDNS) -> None:
    r, doc = run_json("probe", "http", "--wildcard-url", WILDCARD, *network_args(lab_nginx, lab_ca, lab_dns))
    assert r.code == 0, r.output
    assert doc["command"] == "probe http" and set(doc) == {"coderctl", "command", "started_at", "duration_s",
                                                           "summary", "checks"}
    assert sorted(statuses(doc)) == sorted(HTTP_CHECKS) and set(statuses(doc).values()) == {"ok"}
    tls = by_id(doc)["tls.access-url"]["data"]
    assert tls["tls_version"] in ("TLSv1.2", "TLSv1.3") and tls["days_left"] > 21
    assert by_id(doc)["http.wildcard"]["data"]["coder_version"] == "v2.25.0+abcdef1"
    assert all(c["problems"] == [] for c in doc["checks"])


@pytest.mark.parametrize(("kind", "needle", "code"), [
    ("expired", "the certificate expired 1 days ago", "TLS-CERT-EXPIRED"),
    ("wrong-host", "covers other.example.org, not coder.xuperson.org", "TLS-NAME-MISMATCH"),
])
def test_bad_certificates_fail_the_tls_checks(
    make_nginx: MakeNginx, lab_ca: LabCA, fake_coder: FakeCoder, lab_dns: LabDNS, kind: str, needle: str,
    code: str,
) -> None:
    hosts = ["other.example.org"] if kind == "wrong-host" else [ACCESS_HOST, WILDCARD]
    cert = lab_ca.issue(hosts, name=f"probe-{kind}", expired=kind == "expired")
    nginx = make_nginx(fake_coder.port, cert=cert)
    r, doc = run_json("probe", "http", *network_args(nginx, lab_ca, lab_dns))
    assert r.code == 1
    checks = by_id(doc)
    assert checks["tls.access-url"]["status"] == checks["tls.wildcard"]["status"] == "fail"
    assert needle in checks["tls.access-url"]["detail"]
    assert checks["http.healthz"]["status"] == "fail"  # the verified request fails too, naming why
    assert "TLS certificate verification failed" in checks["http.healthz"]["detail"]
    assert_coded(doc)
    assert codes(checks["tls.access-url"]) == codes(checks["tls.wildcard"]) == [code]
    evidence = checks["tls.access-url"]["problems"][0]["evidence"]
    assert "host (SNI): coder.xuperson.org" in evidence and any(e.startswith("notAfter: ") for e in evidence)
    names = "other.example.org" if kind == "wrong-host" else f"coder.xuperson.org, {WILDCARD}"
    assert f"certificate names: {names}" in evidence
    assert codes(checks["http.healthz"]) == ["HTTP-HEALTHZ-UNREACHABLE"]
    r, doc = run_json("probe", "http", "--insecure", *network_args(nginx, lab_ca, lab_dns))
    assert statuses(doc)["tls.access-url"] == "warn" and statuses(doc)["http.healthz"] == "ok"
    assert "(not failing: --insecure)" in by_id(doc)["tls.access-url"]["detail"]
    [problem] = by_id(doc)["tls.access-url"]["problems"]
    assert problem["code"] == code and problem["severity"] == "warn"
    assert_coded(doc)


@pytest.mark.parametrize(("days", "status", "code"), [(10, "warn", "TLS-CERT-EXPIRING"),
                                                     (3, "fail", "TLS-CERT-EXPIRES-SOON")])
def test_certificate_expiring_soon(
    make_nginx: MakeNginx, lab_ca: LabCA, fake_coder: FakeCoder, lab_dns: LabDNS, days: int, status: str,
    code: str,
) -> None:
    not_after = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    nginx = make_nginx(fake_coder.port, cert=lab_ca.issue([ACCESS_HOST, WILDCARD], name=f"soon-{days}",
                                                          not_after=not_after))
    r, doc = run_json("probe", "http", *network_args(nginx, lab_ca, lab_dns))
    check = by_id(doc)["tls.access-url"]
    assert check["status"] == status, check
    assert re.search(r"the certificate expires in [\d.]+ days", check["detail"])
    assert days - 1 <= check["data"]["days_left"] <= days
    assert codes(check) == [code] and check["problems"][0]["severity"] == status
    assert_coded(doc)


def test_no_wildcard_server_fails_http_wildcard(
    make_nginx: MakeNginx, lab_ca: LabCA, fake_coder: FakeCoder, lab_dns: LabDNS
) -> None:
    nginx = make_nginx(fake_coder.port, wildcard=False)
    r, doc = run_json("probe", "http", *network_args(nginx, lab_ca, lab_dns))
    check = by_id(doc)["http.wildcard"]
    assert check["status"] == "fail"
    assert "404 Not Found (Server nginx, body 'default backend - 404')" in check["detail"]
    assert "coder-workspaces-wildcard" in check["remediation"]
    assert statuses(doc)["http.healthz"] == "ok" and statuses(doc)["tls.wildcard"] == "ok"
    assert_coded(doc)
    [problem] = check["problems"]
    assert problem["code"] == "HTTP-WILDCARD-NOT-CODER"
    assert problem["evidence"][0].startswith("GET https://coderctl-probe-") and "server: nginx" in problem["evidence"]
    assert "body: 'default backend - 404'" in problem["evidence"]
    assert "kubectl -n coder get ingress coder-workspaces-wildcard -o yaml" in problem["fix"]


def test_unexpected_version_warns(lab_nginx: LabNginx, lab_ca: LabCA) -> None:
    r, doc = run_json("probe", "http", *network_args(lab_nginx, lab_ca),
                      env={"CODERCTL_EXPECTED_CODER_VERSION": "v2.24.1"})
    check = by_id(doc)["http.buildinfo"]
    assert check["status"] == "warn" and "Coder runs v2.25.0+abcdef1, expected v2.24.1" in check["detail"]
    assert r.code == 0
    assert codes(check) == ["HTTP-VERSION-MISMATCH"]
    evidence = check["problems"][0]["evidence"]
    assert "expected_coder_version: v2.24.1 (from env CODERCTL_EXPECTED_CODER_VERSION)" in evidence
    assert_coded(doc)
    assert run_json("probe", "http", "--strict", *network_args(lab_nginx, lab_ca),
                    env={"CODERCTL_EXPECTED_CODER_VERSION": "v2.24.1"})[0].code == 1


def test_without_wildcard_url_the_wildcard_checks_skip(lab_nginx: LabNginx, lab_ca: LabCA) -> None:
    r, doc = run_json("probe", "http", *network_args(lab_nginx, lab_ca), env={"CODERCTL_WILDCARD_URL": ""})
    assert statuses(doc)["http.wildcard"] == statuses(doc)["tls.wildcard"] == "skip"
    assert "--wildcard-url" in by_id(doc)["http.wildcard"]["detail"]
    assert r.code == 0
    assert by_id(doc)["http.wildcard"]["problems"] == []  # a skip is no problem


def test_malformed_wildcard_url_fails_with_its_code(lab_nginx: LabNginx, lab_ca: LabCA) -> None:
    r, doc = run_json("probe", "http", *network_args(lab_nginx, lab_ca), env={"CODERCTL_WILDCARD_URL": "xuperson.org"})
    assert r.code == 1
    for cid in ("http.wildcard", "tls.wildcard"):
        check = by_id(doc)[cid]
        assert check["status"] == "fail" and "is not of the form *.domain" in check["detail"]
        assert codes(check) == ["HTTP-WILDCARD-URL-INVALID"]
    assert_coded(doc)


def test_network_and_dns_checks_run_concurrently(
    lab_nginx: LabNginx, lab_ca: LabCA, lab_dns: LabDNS
) -> None:
    """The run takes at most 1.5 x its slowest check, or (when the checks take a few tens of milliseconds, and a
    busy machine's scheduling is most of the difference) at most half the sum of the checks, which one after
    the other would take. Everything here is on loopback and CPU-bound in one process, so the best of three
    runs is taken to keep a busy machine from deciding the outcome."""
    args = ["verify", "--only", "network", "--only", "dns", *network_args(lab_nginx, lab_ca, lab_dns)]
    run_json(*args)  # warm up: imports, the CA file, nginx's first worker connections
    ratios = []
    for _ in range(3):
        r, doc = run_json(*args)
        assert r.code == 0, r.output
        durations = {c["id"]: c["duration_s"] for c in doc["checks"]}
        slowest = max(durations, key=durations.__getitem__)
        ratio, of_sum = doc["duration_s"] / durations[slowest], doc["duration_s"] / sum(durations.values())
        ratios.append((ratio, of_sum))
        print(f"healthy: run {doc['duration_s']:.3f}s, slowest check {durations[slowest]:.3f}s ({slowest}), "
              f"sum of checks {sum(durations.values()):.3f}s, ratio {ratio:.2f}, of the sum {of_sum:.2f}")
        if ratio <= 1.5 or of_sum <= 0.5:
            break
    assert any(ratio <= 1.5 or of_sum <= 0.5 for ratio, of_sum in ratios), ratios
