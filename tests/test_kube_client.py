"""KubeClient writes and waits against the fake API: watch across 410 Gone, wait_for, the three patch kinds with
resourceVersion preconditions, create/replace/delete, Leases, and the errors each maps to."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coderctl.clients.kube import (
    CONFIGMAPS,
    DEPLOYMENTS,
    LEASES,
    PODS,
    KubeAlreadyExists,
    KubeClient,
    KubeConflict,
    KubeForbidden,
    KubeNotFound,
    KubeWaitTimeout,
)
from coderctl.clients.kube_lease import LeaseInfo, lease_object, released, renewed, with_holder
from coderctl.clients.kube_watch import WatchEvent
from lab.kubeapi import CODER_POD, FakeKubeAPI, kube_api
from lab.tls import lab_ca

pytestmark = pytest.mark.fake_only

NS = "coder"


@pytest.fixture
def kube(kube_api: FakeKubeAPI) -> KubeClient:
    return KubeClient(str(kube_api.kubeconfig_path), None, timeout=5)


def _cm(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": data}


def _later(seconds: float, action: Any) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


# watch ---------------------------------------------------------------------------------------------------


def test_watch_lists_first_then_streams_changes(kube_api: FakeKubeAPI, kube: KubeClient) -> None:
    events = kube.watch(CONFIGMAPS, NS, deadline=time.monotonic() + 10, label_selector="lab=watch")
    kube_api.put(_cm("w1") | {"metadata": {"name": "w1", "namespace": NS, "labels": {"lab": "watch"}}})
    first = next(events)
    assert first == WatchEvent("ADDED", first.object) and first.object["metadata"]["name"] == "w1"
    kube_api.patch("ConfigMap", NS, "w1", {"data": {"k": "v"}})
    second = next(events)
    assert (second.type, second.object["data"]) == ("MODIFIED", {"k": "v"})
    kube_api.delete("ConfigMap", NS, "w1")
    assert next(events).type == "DELETED"
    events.close()


def test_watch_resumes_across_a_forced_410_without_losing_or_repeating(kube_api: FakeKubeAPI,
                                                                      kube: KubeClient) -> None:
    for name in ("keep", "change", "remove"):
        kube_api.put(_cm(f"gone-{name}", v="0"))
    items, rv = kube.list_with_version(CONFIGMAPS, NS)
    events = kube.watch(CONFIGMAPS, NS, deadline=time.monotonic() + 10, resource_version=rv, known=items)
    kube_api.patch("ConfigMap", NS, "gone-change", {"data": {"v": "1"}})
    seen = [next(events)]
    assert (seen[0].type, seen[0].object["metadata"]["name"]) == ("MODIFIED", "gone-change")

    before = len(kube_api.request_log)
    kube_api.compact_watch_history()  # every position handed out so far is gone; open watches end
    kube_api.patch("ConfigMap", NS, "gone-change", {"data": {"v": "2"}})
    kube_api.delete("ConfigMap", NS, "gone-remove")
    kube_api.put(_cm("gone-new", v="n"))
    for _ in range(3):
        seen.append(next(events))
    got = sorted((e.type, e.object["metadata"]["name"]) for e in seen[1:])
    assert got == [("ADDED", "gone-new"), ("DELETED", "gone-remove"), ("MODIFIED", "gone-change")]
    assert next(e for e in seen[1:] if e.type == "MODIFIED").object["data"] == {"v": "2"}
    after = [path for _, path in kube_api.request_log[before:] if path.startswith("/api/v1/namespaces/coder/config")]
    assert "watch=true" in after[0] and f"resourceVersion={seen[0].object['metadata']['resourceVersion']}&" in after[0]
    assert "watch=true" not in after[1], "410 Gone: the client listed again"
    # after the re-list it watches from the new position: the next change arrives once
    kube_api.patch("ConfigMap", NS, "gone-keep", {"data": {"v": "3"}})
    event = next(events)
    assert (event.type, event.object["metadata"]["name"], event.object["data"]) == ("MODIFIED", "gone-keep",
                                                                                    {"v": "3"})
    events.close()
    relisted = [path for _, path in kube_api.request_log[before:] if path.startswith("/api/v1/namespaces/coder/config")]
    assert len(relisted) == 3 and "watch=true" in relisted[2]


def test_watch_handles_410_as_an_http_status_too(kube_api: FakeKubeAPI, kube: KubeClient) -> None:
    kube_api.watch_expired_http = True
    kube_api.put(_cm("http-gone", v="0"))
    items, rv = kube.list_with_version(CONFIGMAPS, NS)
    kube_api.compact_watch_history()
    kube_api.patch("ConfigMap", NS, "http-gone", {"data": {"v": "1"}})
    events = kube.watch(CONFIGMAPS, NS, deadline=time.monotonic() + 10, resource_version=rv, known=items)
    event = next(events)
    assert (event.type, event.object["data"]) == ("MODIFIED", {"v": "1"})
    events.close()


def test_watch_moves_on_bookmarks_and_ends_at_the_deadline(kube_api: FakeKubeAPI, kube: KubeClient) -> None:
    start = time.monotonic()
    events = list(kube.watch(CONFIGMAPS, NS, deadline=start + 1.5, name="nothing-here"))
    assert events == []
    assert 1.4 < time.monotonic() - start < 4
    watch_requests = [path for _, path in kube_api.request_log if "watch=true" in path]
    assert watch_requests and all("allowWatchBookmarks=true" in p for p in watch_requests)

    items, rv = kube.list_with_version(CONFIGMAPS, NS)
    moved = kube_api.put(_cm("unrelated", v="x"))["metadata"]["resourceVersion"]
    before = len(kube_api.request_log)
    events_iter = kube.watch(CONFIGMAPS, NS, deadline=time.monotonic() + 5, name="bookmarked",
                             resource_version=rv, known=items)
    timers = [_later(0.3, kube_api.send_watch_bookmarks), _later(0.6, kube_api.end_watches),
              _later(1.0, lambda: kube_api.put(_cm("bookmarked", v="1")))]
    try:
        event = next(events_iter)
    finally:
        for timer in timers:
            timer.join()
    assert (event.type, event.object["metadata"]["name"]) == ("ADDED", "bookmarked")
    events_iter.close()
    resumed = [path for _, path in kube_api.request_log[before:] if "watch=true" in path]
    assert f"resourceVersion={rv}&" in resumed[0]
    assert f"resourceVersion={moved}&" in resumed[1], "the second watch resumes from the bookmark's position"


# wait_for ------------------------------------------------------------------------------------------------


def test_wait_for_returns_the_object_that_satisfied_it(kube_api: FakeKubeAPI, kube: KubeClient) -> None:
    timer = _later(0.3, lambda: kube_api.patch("Deployment", NS, "coder", {"metadata": {"labels": {"ok": "yes"}}},
                                               reconcile=False))
    obj = kube.wait_for(DEPLOYMENTS, NS, "coder",
                        lambda d: d["metadata"].get("labels", {}).get("ok") == "yes", time.monotonic() + 10)
    timer.join()
    assert obj["metadata"]["labels"]["ok"] == "yes"
    already = kube.wait_for(DEPLOYMENTS, NS, "coder", lambda d: True, time.monotonic() + 5)
    assert already["metadata"]["name"] == "coder"


def test_wait_for_times_out_saying_what_it_last_saw(kube: KubeClient) -> None:
    start = time.monotonic()
    with pytest.raises(KubeWaitTimeout) as caught:
        kube.wait_for(DEPLOYMENTS, NS, "coder", lambda d: d["status"].get("readyReplicas") == 7,
                      time.monotonic() + 1)
    assert time.monotonic() - start < 4
    message = str(caught.value)
    assert "deployments coder/coder" in message and "resourceVersion" in message
    assert '"readyReplicas":1' in message and "generation 1 (observed 1)" in message
    assert caught.value.last is not None and caught.value.last["metadata"]["name"] == "coder"
    with pytest.raises(KubeWaitTimeout, match="it does not exist"):
        kube.wait_for(CONFIGMAPS, NS, "never", lambda c: True, time.monotonic() + 0.5)


def test_wait_deleted_and_the_get_fallback_when_watch_is_forbidden(kube_api: FakeKubeAPI,
                                                                   kube: KubeClient) -> None:
    kube_api.put(_cm("doomed"))
    timer = _later(0.3, lambda: kube_api.delete("ConfigMap", NS, "doomed"))
    kube.wait_deleted(CONFIGMAPS, NS, "doomed", time.monotonic() + 10)
    timer.join()
    kube.wait_deleted(CONFIGMAPS, NS, "doomed", time.monotonic() + 1)  # already gone: at once

    kube_api.forbid("list", "configmaps", NS)
    kube_api.forbid("watch", "configmaps", NS)
    timer = _later(0.3, lambda: kube_api.put(_cm("polled", v="yes")))
    obj = kube.wait_for(CONFIGMAPS, NS, "polled", lambda c: c["data"].get("v") == "yes", time.monotonic() + 10)
    timer.join()
    assert obj["data"] == {"v": "yes"}
    polls = [p for m, p in kube_api.request_log if m == "GET" and p == "/api/v1/namespaces/coder/configmaps/polled"]
    assert len(polls) >= 2, "with list and watch forbidden it polled with get"


# patches, preconditions, create/replace/delete -------------------------------------------------------------


def test_each_patch_kind(kube_api: FakeKubeAPI, kube: KubeClient) -> None:
    merged = kube.patch(CONFIGMAPS, "proxy-headers", "ingress-nginx", {"data": {"X-Lab": "1"}})
    assert merged["data"]["X-Lab"] == "1"
    patched = kube.patch(CONFIGMAPS, "proxy-headers", "ingress-nginx",
                         [{"op": "remove", "path": "/data/X-Lab"}], kind="json")
    assert "X-Lab" not in patched["data"]
    strategic = kube.patch(DEPLOYMENTS, "coder", NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "coder", "env": [{"name": "LAB_ADDED", "value": "1"}]}]}}}}, kind="strategic")
    container = strategic["spec"]["template"]["spec"]["containers"][0]
    names = [e["name"] for e in container["env"]]
    assert "LAB_ADDED" in names and "CODER_ACCESS_URL" in names, "strategic merge keeps the other env entries"
    assert container["image"] == "ghcr.io/coder/coder:v2.25.0"
    sent = [path for method, path in kube_api.request_log if method == "PATCH"]
    assert len(sent) == 3
    with pytest.raises(ValueError, match="list of operations"):
        kube.patch(CONFIGMAPS, "proxy-headers", "ingress-nginx", {"data": {}}, kind="json")


@pytest.mark.parametrize("kind", ["merge", "strategic", "json"])
def test_a_stale_resource_version_is_a_conflict_for_every_patch_kind(kube_api: FakeKubeAPI, kube: KubeClient,
                                                                     kind: str) -> None:
    current = kube.get(CONFIGMAPS, "proxy-headers", "ingress-nginx")
    rv = current["metadata"]["resourceVersion"]
    body: Any = [{"op": "add", "path": "/data/X-Kind", "value": kind}] if kind == "json" else \
        {"data": {"X-Kind": kind}}
    done = kube.patch(CONFIGMAPS, "proxy-headers", "ingress-nginx", body, kind=kind,  # type: ignore[arg-type]
                      resource_version=rv)
    assert done["data"]["X-Kind"] == kind and done["metadata"]["resourceVersion"] != rv
    with pytest.raises(KubeConflict) as caught:
        kube.patch(CONFIGMAPS, "proxy-headers", "ingress-nginx", body, kind=kind,  # type: ignore[arg-type]
                   resource_version=rv)
    assert caught.value.status == 409 and caught.value.reason == "Conflict"
    assert "the object has been modified" in str(caught.value)


def test_create_replace_delete_a_lease(kube_api: FakeKubeAPI, kube: KubeClient) -> None:
    now = datetime.now(UTC)
    made = kube.create(LEASES, NS, lease_object("coderctl-lock", NS, holder="alice@host", duration_s=30, now=now,
                                                annotations={"coderctl.dev/operation": "restore"}))
    info = LeaseInfo.of(made)
    assert (info.holder, info.duration_s, info.transitions) == ("alice@host", 30, 0)
    assert info.held(now + timedelta(seconds=29)) and not info.held(now + timedelta(seconds=31))
    assert kube_api.get("Lease", NS, "coderctl-lock") is not None
    with pytest.raises(KubeAlreadyExists) as exists:
        kube.create(LEASES, NS, lease_object("coderctl-lock", NS, holder="bob@host", duration_s=30))
    assert isinstance(exists.value, KubeConflict) and exists.value.reason == "AlreadyExists"

    renewal = kube.replace(LEASES, "coderctl-lock", NS, renewed(made, now=now + timedelta(seconds=10)))
    assert LeaseInfo.of(renewal).renewed == now + timedelta(seconds=10)
    with pytest.raises(KubeConflict):  # written from the stale copy: someone else wrote in between
        kube.replace(LEASES, "coderctl-lock", NS, with_holder(made, "bob@host"))
    taken = kube.replace(LEASES, "coderctl-lock", NS, with_holder(renewal, "bob@host", duration_s=60))
    assert (LeaseInfo.of(taken).holder, LeaseInfo.of(taken).transitions) == ("bob@host", 1)
    assert LeaseInfo.of(taken).annotations == {"coderctl.dev/operation": "restore"}
    free = kube.replace(LEASES, "coderctl-lock", NS, released(taken))
    assert not LeaseInfo.of(free).held()
    with pytest.raises(KubeConflict, match="ResourceVersion in precondition"):
        kube.delete(LEASES, "coderctl-lock", NS, resource_version=taken["metadata"]["resourceVersion"])
    with pytest.raises(KubeConflict, match="UID in precondition"):
        kube.delete(LEASES, "coderctl-lock", NS, uid="0000")
    kube.delete(LEASES, "coderctl-lock", NS, uid=free["metadata"]["uid"],
                resource_version=free["metadata"]["resourceVersion"])
    with pytest.raises(KubeNotFound):
        kube.get(LEASES, "coderctl-lock", NS)


def test_replace_takes_an_explicit_resource_version(kube_api: FakeKubeAPI, kube: KubeClient) -> None:
    made = kube.create(CONFIGMAPS, NS, _cm("replaced", v="1"))
    body = _cm("replaced", v="2")
    with pytest.raises(KubeConflict):
        kube.replace(CONFIGMAPS, "replaced", NS, body, resource_version="1")
    out = kube.replace(CONFIGMAPS, "replaced", NS, body, resource_version=made["metadata"]["resourceVersion"])
    assert out["data"] == {"v": "2"}


def test_forbidden_writes_and_waits_are_kube_forbidden(kube_api: FakeKubeAPI, kube: KubeClient) -> None:
    kube_api.forbid("create", "leases", NS)
    kube_api.forbid("patch", "pods", NS)
    kube_api.forbid("delete", "configmaps", NS)
    kube_api.forbid("watch", "deployments", NS)
    with pytest.raises(KubeForbidden) as create:
        kube.create(LEASES, NS, lease_object("x", NS, holder="h", duration_s=5))
    assert (create.value.verb, create.value.resource) == ("create", "leases")
    with pytest.raises(KubeForbidden) as patch:
        kube.patch(PODS, CODER_POD, NS, [], kind="json")
    assert (patch.value.verb, patch.value.resource) == ("patch", "pods")
    with pytest.raises(KubeForbidden) as delete:
        kube.delete(CONFIGMAPS, "proxy-headers", NS)
    assert delete.value.verb == "delete"
    with pytest.raises(KubeForbidden) as watch:
        next(kube.watch(DEPLOYMENTS, NS, deadline=time.monotonic() + 5, resource_version="1"))
    assert (watch.value.verb, watch.value.resource) == ("watch", "deployments")


# the public connection API kube_exec uses -----------------------------------------------------------------


def test_connection_parts_are_public(kube_api: FakeKubeAPI, kube: KubeClient) -> None:
    assert kube.auth_headers() == {"Authorization": f"Bearer {kube_api.token}"}
    assert kube.url("/api/v1/pods", {"a": "1", "b": None}) == f"{kube_api.url}/api/v1/pods?a=1"
    assert kube.url("/x", [("c", "1"), ("c", "2")], websocket=True).startswith("wss://127.0.0.1:")
    assert kube.url("/x", [("c", "1"), ("c", "2")]).endswith("/x?c=1&c=2")
    context = kube.ssl_context()
    assert context is not None and context.check_hostname

