"""The pure knowledge under coderctl.facts and the fan-out helper: hosts, versions, Kubernetes readings, pods,
Cloudflare."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from coderctl.concurrent import Memo, all_results, fan_out
from coderctl.facts import cloudflare
from coderctl.facts.hosts import host_matches, host_under, is_wildcard, url_for_host, url_host, wildcard_parent
from coderctl.facts.kube import (
    condition_true,
    decoded_data,
    match_labels_selector,
    pool_contains,
    quantity,
    service_ref,
)
from coderctl.facts.pods import pod_problem, pod_trouble
from coderctl.facts.versions import bare_version, image_tag, same_version, version_tuple


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("coder.xuperson.org", "coder.xuperson.org", True),
    ("*.xuperson.org", "coderctl-probe-1a2b.xuperson.org", True),
    ("*.xuperson.org", "xuperson.org", False),
    ("*.xuperson.org", "a.b.xuperson.org", False),  # a wildcard covers exactly one label
    ("*.XUPERSON.org", "Coder.xuperson.org.", True),
    ("other.example.org", "coder.xuperson.org", False),
    ("*.xuperson.org", ".xuperson.org", False),
])
def test_host_matching_one_label(pattern: str, host: str, expected: bool) -> None:
    assert host_matches(pattern, host) is expected


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("*.example.org", "ws-1.example.org", True),
    ("*.example.org", "a.b.example.org", True),
    ("*.example.org", "example.org", False),
    ("*.example.org", "badexample.org", False),
    ("x.org", "X.org", True),
])
def test_host_matching_any_depth(pattern: str, host: str, expected: bool) -> None:
    assert host_matches(pattern, host, any_depth=True) is expected


def test_wildcard_hosts() -> None:
    assert url_host("https://*.Apps.example.test:8443/x") == "*.apps.example.test"
    assert url_host("*.xuperson.org") == "*.xuperson.org"
    assert is_wildcard("*.xuperson.org") and is_wildcard("ws-*.xuperson.org")
    assert not is_wildcard("coder.xuperson.org") and not is_wildcard("*")
    assert wildcard_parent("*.coder.xuperson.org") == "coder.xuperson.org"
    assert host_under("*.xuperson.org", "probe") == "probe.xuperson.org"
    assert host_under("coder.xuperson.org", "probe") == "coder.xuperson.org"


@pytest.mark.parametrize(("access", "expected"), [
    ("https://coder.xuperson.org", "https://probe.xuperson.org/healthz"),
    ("https://coder.xuperson.org:443/", "https://probe.xuperson.org/healthz"),
    ("https://127.0.0.1:8443", "https://probe.xuperson.org:8443/healthz"),
    ("http://coder.lab:80", "http://probe.xuperson.org/healthz"),
])
def test_url_for_host(access: str, expected: str) -> None:
    assert url_for_host(access, "probe.xuperson.org", "/healthz") == expected


def test_versions() -> None:
    assert image_tag("ghcr.io/coder/coder:v2.18.1") == "v2.18.1"
    assert image_tag("registry:5000/ingress-nginx/controller:v1.12.1@sha256:abc") == "v1.12.1"
    assert image_tag("registry:5000/coder@sha256:abc") == "sha256:abc"
    assert image_tag("postgres") == "latest"
    assert bare_version(" v2.18.1+abc ") == "2.18.1"
    assert same_version("v2.18.1", "2.18.1+devel") and not same_version("2.18.1", "2.18.2")
    assert version_tuple("v1.11.4-rc1") == (1, 11, 4)
    assert version_tuple("latest") is None


def test_kube_readings() -> None:
    assert quantity("250m") == Decimal("0.25") and quantity("512Mi") == 536870912 and quantity("1x") is None
    assert pool_contains(["192.168.80.100-192.168.80.110"], "192.168.80.101")
    assert pool_contains(["10.0.0.0/24"], "10.0.0.9") and not pool_contains(["10.0.0.0/24", "bad"], "10.0.1.9")
    assert service_ref("coder-db", "coder") == ("coder-db", "coder")
    assert service_ref("coder-db.db.svc.cluster.local", "coder") == ("coder-db", "db")
    assert service_ref("db.example.org", "coder") is None and service_ref("10.0.0.1", "coder") is None
    assert condition_true({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Nope"}]}},
                          "Ready") == (False, "Nope")
    assert match_labels_selector({"spec": {"selector": {"matchLabels": {"b": "2", "a": "1"}}}}) == "a=1,b=2"
    assert match_labels_selector({}) == ""
    assert decoded_data({"data": {"a": "cDRzcw==", "b": "/w==", "c": "!"}}) == {"a": "p4ss", "b": "", "c": ""}


def _pod(state: dict[str, Any], last: dict[str, Any] | None = None, ready: bool = False) -> dict[str, Any]:
    status = {"name": "coder", "ready": ready, "restartCount": 3, "state": state,
              "lastState": {"terminated": last} if last else {}}
    return {"status": {"phase": "Running", "containerStatuses": [status]}}


def test_pod_problems() -> None:
    problem, facts = pod_problem(_pod({"waiting": {"reason": "CrashLoopBackOff"}},
                                      {"reason": "OOMKilled", "exitCode": 137}), "coder")
    assert problem == "CrashLoopBackOff; last terminated: OOMKilled (exit code 137)"
    assert facts == {"phase": "Running", "restarts": 3, "waiting": "CrashLoopBackOff", "last_reason": "OOMKilled",
                     "last_exit_code": 137}
    assert pod_trouble(facts) == "oomkilled"
    problem, facts = pod_problem(_pod({"waiting": {"reason": "ErrImagePull", "message": "not found"}}), "coder")
    assert problem == "ErrImagePull; not found" and pod_trouble(facts) == "image-pull"
    _, facts = pod_problem(_pod({"waiting": {"reason": "CrashLoopBackOff"}}, {"reason": "Error", "exitCode": 1}),
                           "coder")
    assert pod_trouble(facts) == "crashloop"
    assert pod_problem(_pod({"running": {}}, ready=True), "coder")[0] is None
    assert pod_problem(_pod({"running": {}}), "coder")[0] == "Running, not ready"
    pending = {"status": {"phase": "Pending", "conditions": [{"status": "False", "reason": "Unschedulable"}]}}
    problem, facts = pod_problem(pending, "coder")
    assert problem == "Pending (Unschedulable)" and pod_trouble(facts) == "not-ready"


def test_universal_ssl_covers_one_level() -> None:
    assert cloudflare.universal_ssl_gap("xuperson.org", "xuperson.org") is None
    gap = cloudflare.universal_ssl_gap("coder.xuperson.org", "xuperson.org")
    assert gap is not None and "2 levels below the zone xuperson.org" in gap
    assert cloudflare.levels_below("a.b.example.org", "example.org") == 2


def test_cloudflare_recognition() -> None:
    assert cloudflare.tunnel_id("6ff42ae2-765d-4adf-8112-31c55c1551ef.cfargotunnel.com.") == \
        "6ff42ae2-765d-4adf-8112-31c55c1551ef"
    assert cloudflare.tunnel_id("cfargotunnel.com") is None
    assert cloudflare.tunnel_id("x.y.cfargotunnel.com") is None
    assert cloudflare.is_cloudflare_address("104.16.1.1") and cloudflare.is_cloudflare_address("2606:4700::1")
    assert not cloudflare.is_cloudflare_address("192.168.80.101")
    assert not cloudflare.is_cloudflare_address("not-an-ip")


def test_fan_out_keeps_order_and_failures() -> None:
    def square(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        time.sleep(0.05 * (5 - n))
        return n * n

    results = fan_out(square, [1, 2, 3, 4])
    assert results[:2] == [1, 4] and results[3] == 16
    assert isinstance(results[2], ValueError)
    with pytest.raises(ValueError, match="three"):
        all_results(results)
    assert all_results(fan_out(square, [0, 1])) == [0, 1]


def test_fan_out_deadline() -> None:
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    start = time.monotonic()
    results = fan_out(nap, [0.0, 5.0], deadline=start + 0.3)
    assert time.monotonic() - start < 2
    assert results[0] == 0.0 and isinstance(results[1], TimeoutError)


def test_memo_computes_once_remembers_failures_until_clear() -> None:
    memo = Memo()
    calls: list[int] = []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.05)
        return len(calls)

    assert fan_out(lambda _: memo.get("k", slow), range(5)) == [1] * 5
    attempts: list[int] = []

    def failing() -> int:
        attempts.append(1)
        raise ValueError("down")

    for _ in range(2):
        with pytest.raises(ValueError, match="down"):
            memo.get("bad", failing)
    assert attempts == [1]
    memo.clear()
    assert memo.get("bad", lambda: 7) == 7 and memo.get("k", slow) == 2
