"""Watching the Kubernetes API: a resumable event stream, and waits built on it.

A watch continues from a resourceVersion: the position of a list, or of the last event or BOOKMARK seen.
The server ends a watch after `timeoutSeconds`, and forgets old positions (etcd compaction): resuming from
one then answers 410 Gone, as an HTTP status or as an ERROR event in the stream. The only correct answer is
to list again and take the difference with what the consumer already has, which `watch` does, so that its
events describe every change exactly once whatever happens to the connection.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from coderctl.clients.kube_errors import (
    KubeForbidden,
    KubeGone,
    KubeUnreachable,
    KubeWaitTimeout,
    api_error,
    status_error,
)

if TYPE_CHECKING:
    from coderctl.clients.kube import KubeClient, Resource

Key = tuple[str, str]
POLL_INTERVAL = 0.5
STATUS_SHOWN = 300


class WatchEvent(NamedTuple):
    """`type` is ADDED, MODIFIED or DELETED; `object` the object after the change (DELETED: as last seen)."""

    type: str
    object: dict[str, Any]


def watch(
    kube: KubeClient,
    resource: Resource,
    namespace: str | None = None,
    *,
    deadline: float,
    name: str | None = None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    resource_version: str | None = None,
    known: list[dict[str, Any]] | None = None,
) -> Iterator[WatchEvent]:
    """Events of `resource` until `deadline` (a time.monotonic() value); `name` narrows to one object.

    Without `resource_version` it lists first and yields ADDED for every object found (as
    `kubectl get --watch` does). With one (a list's resourceVersion), it starts there, `known` being that
    list's items. After a 410 it lists again and yields what changed meanwhile: ADDED for objects it had not
    yielded, MODIFIED for objects whose resourceVersion moved, DELETED (with the last state seen) for objects
    gone; nothing for objects unchanged. A connection is opened within the client timeout; the generator
    ends at the deadline (close it, or use contextlib.closing, to release the connection early). API errors
    other than 410 are raised (KubeForbidden, KubeNotFound, ...).
    """
    selector = ",".join(s for s in (f"metadata.name={name}" if name else None, field_selector) if s)
    state: dict[Key, dict[str, Any]] = {}

    def relist() -> tuple[list[dict[str, Any]], str]:
        return kube.list_with_version(resource, namespace, label_selector=label_selector,
                                      field_selector=selector or None)

    if resource_version is None:
        items, position = relist()
        state.update((_key(obj), obj) for obj in items)
        yield from (WatchEvent("ADDED", obj) for obj in items)
    else:
        position = resource_version
        state.update((_key(obj), obj) for obj in known or [])
    quiet_failures = 0
    while (remaining := deadline - time.monotonic()) > 0:
        delivered = False
        opened = time.monotonic()
        try:
            with contextlib.closing(_stream(kube, resource, namespace, label_selector, selector, position,
                                            remaining)) as stream:
                for event in stream:
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        raise status_error(int(obj.get("code") or 500), str(obj.get("message") or "watch error"),
                                           str(obj.get("reason") or ""))
                    position = str((obj.get("metadata") or {}).get("resourceVersion") or position)
                    if kind not in ("ADDED", "MODIFIED", "DELETED"):
                        continue  # BOOKMARK: only the position moves
                    delivered = True
                    if _apply(state, kind, obj):
                        yield WatchEvent(kind, obj)
        except KubeGone:
            items, position = relist()
            yield from _resync(state, items)
            continue
        brief = time.monotonic() - opened < 1.0
        quiet_failures = quiet_failures + 1 if brief and not delivered else 0
        if quiet_failures > 1:  # a server that keeps ending the stream at once: do not spin
            time.sleep(min(0.05 * 2 ** quiet_failures, 2.0, max(deadline - time.monotonic(), 0)))


def _stream(kube: KubeClient, resource: Resource, namespace: str | None, label_selector: str | None,
            field_selector: str, position: str, remaining: float) -> Generator[dict[str, Any], None, None]:
    """One watch request: its events until the server ends it, the connection drops or the time is up."""
    import urllib3

    path = resource.path(namespace)
    query = {
        "watch": "true", "resourceVersion": position or None, "allowWatchBookmarks": "true",
        "timeoutSeconds": max(1, math.ceil(remaining)), "labelSelector": label_selector,
        "fieldSelector": field_selector or None,
    }
    headers = {"Accept": "application/json", **kube.auth_headers()}
    timeout = urllib3.Timeout(connect=min(kube.timeout, remaining), read=remaining + 0.05)
    try:
        response = kube.pool.request(
            "GET", kube.url(path, query), headers=headers, timeout=timeout, preload_content=False, retries=False)
    except urllib3.exceptions.HTTPError as exc:
        from coderctl.clients.kube import transport_reason

        raise KubeUnreachable(f"cannot reach the Kubernetes API at {kube.host}: {transport_reason(exc)}") \
            from None
    try:
        if response.status >= 400:
            raise api_error("GET", path + "?watch=true", response.status, response.read())
        pending = b""
        # chunked (what API servers send): each chunk as it arrives; otherwise whatever bytes are there
        chunks = response.stream(64 * 1024) if response.chunked else iter(lambda: response.read1(64 * 1024), b"")
        for chunk in chunks:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield json.loads(line)
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, ValueError):
        return  # dropped, timed out or cut mid-line: the caller resumes from the last position it saw
    finally:
        response.close()
        response.release_conn()


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _version(obj: dict[str, Any]) -> tuple[Any, Any]:
    meta = obj.get("metadata") or {}
    return meta.get("uid"), meta.get("resourceVersion")


def _apply(state: dict[Key, dict[str, Any]], kind: str, obj: dict[str, Any]) -> bool:
    """Record an event; False for one that repeats what is already known."""
    key = _key(obj)
    if kind == "DELETED":
        state.pop(key, None)
        return True
    previous = state.get(key)
    if previous is not None and _version(previous) == _version(obj):
        return False
    state[key] = obj
    return True


def _resync(state: dict[Key, dict[str, Any]], items: list[dict[str, Any]]) -> Iterator[WatchEvent]:
    """The events that turn `state` into `items` (a fresh list), applied to `state` as they are yielded."""
    fresh = {_key(obj): obj for obj in items}
    for key, old in list(state.items()):
        new = fresh.get(key)
        if new is None or (new.get("metadata") or {}).get("uid") != (old.get("metadata") or {}).get("uid"):
            del state[key]
            yield WatchEvent("DELETED", old)
    for key, obj in fresh.items():
        seen = state.get(key)
        if seen is None:
            state[key] = obj
            yield WatchEvent("ADDED", obj)
        elif _version(seen) != _version(obj):
            state[key] = obj
            yield WatchEvent("MODIFIED", obj)


# waits ---------------------------------------------------------------------------------------------------


def wait_for(
    kube: KubeClient,
    resource: Resource,
    namespace: str | None,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    deadline: float,
    *,
    describe: Callable[[dict[str, Any] | None], str] | None = None,
) -> dict[str, Any]:
    """The object as soon as `predicate(object)` holds (checked on the current object first, then on every
    change); KubeWaitTimeout at `deadline`, saying what was last seen (`describe`, by default the
    resourceVersion, generations and status). Where RBAC allows `get` but not `list`/`watch` (a Role with
    resourceNames), it polls with `get` instead."""
    return _wait(kube, resource, namespace, name, deadline, lambda obj: obj is not None and predicate(obj),
                 describe or describe_object, "to satisfy the condition")


def wait_deleted(kube: KubeClient, resource: Resource, namespace: str | None, name: str, deadline: float, *,
                 uid: str | None = None) -> None:
    """Return once the object is gone (or, with `uid`, replaced by another of the same name)."""

    def gone(obj: dict[str, Any] | None) -> bool:
        return obj is None or (uid is not None and (obj.get("metadata") or {}).get("uid") != uid)

    _wait(kube, resource, namespace, name, deadline, gone, describe_object, "to be deleted")


def _wait(kube: KubeClient, resource: Resource, namespace: str | None, name: str, deadline: float,
          done: Callable[[dict[str, Any] | None], bool], describe: Callable[[dict[str, Any] | None], str],
          what: str) -> Any:
    started = time.monotonic()
    last: dict[str, Any] | None = None
    try:
        items, position = kube.list_with_version(resource, namespace, field_selector=f"metadata.name={name}")
        last = next((obj for obj in items if _key(obj)[1] == name), None)
        if done(last):
            return last
        for event in watch(kube, resource, namespace, deadline=deadline, name=name, resource_version=position,
                           known=items):
            if _key(event.object)[1] != name:
                continue
            last = None if event.type == "DELETED" else event.object
            if done(last):
                return last
    except KubeForbidden:
        last = kube.get_or_none(resource, name, namespace)
        while not done(last):
            if time.monotonic() >= deadline:
                break
            time.sleep(min(POLL_INTERVAL, max(deadline - time.monotonic(), 0)))
            last = kube.get_or_none(resource, name, namespace)
        else:
            return last
    where = f"{namespace}/{name}" if namespace else name
    raise KubeWaitTimeout(
        f"timed out after {time.monotonic() - started:.1f}s waiting for {resource.plural} {where} {what}; "
        f"last seen: {describe(last)}", last)


def describe_object(obj: dict[str, Any] | None) -> str:
    """What a timeout reports: never spec or data (a Secret's values), only versions and status."""
    if obj is None:
        return "it does not exist"
    meta = obj.get("metadata") or {}
    parts = [f"resourceVersion {meta.get('resourceVersion')}"]
    if "generation" in meta:
        observed = (obj.get("status") or {}).get("observedGeneration")
        parts.append(f"generation {meta['generation']}" + (f" (observed {observed})" if observed is not None
                                                             else ""))
    if meta.get("deletionTimestamp"):
        parts.append(f"being deleted since {meta['deletionTimestamp']}")
    status = obj.get("status")
    if isinstance(status, dict) and status:
        scalars = {k: v for k, v in status.items() if not isinstance(v, dict | list)}
        text = json.dumps(scalars, separators=(",", ":"), sort_keys=True) if scalars else ""
        conditions = [f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
                      for c in status.get("conditions") or [] if isinstance(c, dict)]
        if conditions:
            text += (" " if text else "") + "conditions " + ", ".join(conditions)
        if text:
            parts.append("status " + (text if len(text) <= STATUS_SHOWN else text[:STATUS_SHOWN] + "…"))
    return ", ".join(parts)

