"""Thread-safe in-memory object store with the bookkeeping the real API server does on writes."""

from __future__ import annotations

import base64
import builtins
import copy
import threading
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .resources import Resource, for_kind

Key = tuple[str, str, str]
Listener = Callable[[str, dict[str, Any], dict[str, Any] | None], None]
Event = tuple[str, dict[str, Any], dict[str, Any] | None]
"""A change: its type, the object after it, the object before it (None for a creation)."""
HISTORY_LIMIT = 1000


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error the API server reports as a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(res: Resource, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if res.group:
        details["group"] = res.group
    details["kind"] = res.plural
    return details


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name))


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(
        409, "Conflict",
        f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        _details(res, name),
    )


def expired(since: int, oldest: int) -> ApiError:
    """What a watch from a compacted resourceVersion gets (as an ERROR event, or as the response)."""
    return ApiError(410, "Expired", f"too old resource version: {since} ({oldest})")


def precondition_failed(res: Resource, name: str, field: str, wanted: str, actual: str) -> ApiError:
    return ApiError(409, "Conflict", f"Precondition failed: {field} in precondition: {wanted}, {field} in object "
                                     f"meta: {actual}", _details(res, name))


def invalid(res: Resource, name: str, message: str) -> ApiError:
    return ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {message}', _details(res, name))


class Store:
    """Objects keyed by (kind, namespace, name); every method returns deep copies.

    Like etcd behind the API server, it keeps a bounded history of changes, from which a watch resumes at a
    resourceVersion; older positions are compacted away (:meth:`events_since` answers None: 410 Gone).
    """

    def __init__(self, history_limit: int = HISTORY_LIMIT) -> None:
        self._lock = threading.RLock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._rv = 1000
        self._listeners: list[Listener] = []
        self._history: deque[tuple[int, Event]] = deque()
        self._history_limit = history_limit
        self._expired_before = self._rv

    @staticmethod
    def key(kind: str, namespace: str | None, name: str) -> Key:
        res = for_kind(kind)
        if res.namespaced and not namespace:
            raise ValueError(f"{kind} is namespaced: a namespace is required")
        return kind, (namespace or "") if res.namespaced else "", name

    @staticmethod
    def key_of(obj: dict[str, Any]) -> Key:
        meta = obj.get("metadata") or {}
        if not obj.get("kind") or not meta.get("name"):
            raise ValueError(f"object without kind or metadata.name: {obj!r:.200}")
        return Store.key(obj["kind"], meta.get("namespace") or "default", meta["name"])

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)

    def snapshot(self, kind: str, namespace: str | None = None) -> tuple[builtins.list[dict[str, Any]], int]:
        """The objects of a kind and the resourceVersion they are current at, read atomically."""
        with self._lock:
            return self.list(kind, namespace), self._rv

    def events_since(self, resource_version: int) -> builtins.list[Event] | None:
        """Every change after ``resource_version`` in order, or None when that position was compacted."""
        with self._lock:
            if resource_version < self._expired_before:
                return None
            return [copy.deepcopy(event) for rv, event in self._history if rv > resource_version]

    def oldest_resource_version(self) -> int:
        """The oldest position a watch can still resume from."""
        with self._lock:
            return self._expired_before

    def compact(self) -> None:
        """Forget the history: resuming a watch at any resourceVersion handed out so far answers 410 Gone."""
        with self._lock:
            self._history.clear()
            self._expired_before = self._rv + 1

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get(self.key(kind, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind: str, namespace: str | None = None,
             match: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        for_kind(kind)
        with self._lock:
            found = [
                obj for (k, ns, _), obj in sorted(self._objects.items())
                if k == kind and (not namespace or ns == namespace) and (match is None or match(obj))
            ]
            return copy.deepcopy(found)

    def all(self) -> builtins.list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([obj for _, obj in sorted(self._objects.items())])

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = self.key_of(obj)
        with self._lock:
            if key in self._objects:
                raise already_exists(for_kind(key[0]), key[2])
            return self._write(key, obj, None)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace, whatever the resourceVersion."""
        key = self.key_of(obj)
        with self._lock:
            return self._write(key, obj, self._objects.get(key))

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace an existing object; a stale metadata.resourceVersion is a conflict."""
        key = self.key_of(obj)
        with self._lock:
            old = self._objects.get(key)
            res = for_kind(key[0])
            if old is None:
                raise not_found(res, key[2])
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(res, key[2])
            return self._write(key, obj, old)

    def modify(self, kind: str, namespace: str | None, name: str,
               change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Atomically replace an object by ``change(current copy)``."""
        key = self.key(kind, namespace, name)
        with self._lock:
            old = self._objects.get(key)
            if old is None:
                raise not_found(for_kind(kind), name)
            new = change(copy.deepcopy(old))
            new.setdefault("metadata", {})
            new["metadata"]["name"] = name
            if key[1]:
                new["metadata"]["namespace"] = key[1]
            new["kind"] = kind
            return self._write(key, new, old)

    def delete(self, kind: str, namespace: str | None, name: str, *, uid: str | None = None,
               resource_version: str | None = None) -> dict[str, Any]:
        """Delete and cascade to dependents (ownerReferences) and, for a Namespace, its contents.

        ``uid`` and ``resource_version`` are DeleteOptions preconditions: a mismatch is a 409 Conflict.
        """
        key = self.key(kind, namespace, name)
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise not_found(for_kind(kind), name)
            meta = current["metadata"]
            if uid and uid != meta.get("uid"):
                raise precondition_failed(for_kind(kind), name, "UID", uid, meta.get("uid", ""))
            if resource_version and resource_version != meta["resourceVersion"]:
                raise precondition_failed(for_kind(kind), name, "ResourceVersion", resource_version,
                                          meta["resourceVersion"])
            obj = self._objects.pop(key)
            prev = copy.deepcopy(obj)
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._notify("DELETED", obj, prev)
            uid = obj["metadata"].get("uid")
            for dep_key, dep in list(self._objects.items()):
                if dep_key not in self._objects:
                    continue
                owned = any(ref.get("uid") == uid for ref in dep["metadata"].get("ownerReferences") or [])
                if owned or (kind == "Namespace" and dep_key[1] == name):
                    self.delete(*dep_key)
            return copy.deepcopy(obj)

    def relink(self) -> None:
        """Fill missing ownerReferences[].uid / involvedObject.uid from the objects they name."""
        with self._lock:
            for obj in self._objects.values():
                self._link(obj)

    def _write(self, key: Key, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        res = for_kind(key[0])
        new["kind"] = key[0]
        new.setdefault("apiVersion", res.group_version)
        if res.namespaced:
            meta["namespace"] = key[1]
        else:
            meta.pop("namespace", None)
        if old is not None:
            old_meta = old["metadata"]
            meta["uid"] = old_meta["uid"]
            meta["creationTimestamp"] = old_meta["creationTimestamp"]
            if "generation" in old_meta:
                changed = new.get("spec") != old.get("spec")
                meta["generation"] = old_meta["generation"] + (1 if changed else 0)
        else:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_rfc3339())
            if "spec" in new:
                meta.setdefault("generation", 1)
        for field in ("deletionTimestamp", "managedFields", "selfLink"):
            meta.pop(field, None)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        _defaults(new)
        self._link(new)
        self._objects[key] = new
        self._notify("MODIFIED" if old is not None else "ADDED", new, old)
        return copy.deepcopy(new)

    def _uid_of(self, kind: str | None, namespace: str, name: str | None) -> str | None:
        if not kind or not name:
            return None
        try:
            key = self.key(kind, namespace or "default", name)
        except ValueError:
            return None
        found = self._objects.get(key)
        return found["metadata"]["uid"] if found else None

    def _link(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        for ref in meta.get("ownerReferences") or []:
            if not ref.get("uid"):
                uid = self._uid_of(ref.get("kind"), meta.get("namespace", ""), ref.get("name"))
                if uid:
                    ref["uid"] = uid
        involved = obj.get("involvedObject") if obj["kind"] == "Event" else None
        if isinstance(involved, dict) and not involved.get("uid"):
            uid = self._uid_of(involved.get("kind"), involved.get("namespace", ""), involved.get("name"))
            if uid:
                involved["uid"] = uid

    def _notify(self, event: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> None:
        """Record the change in the history and tell the listeners (the server's watches), in order."""
        self._history.append((self._rv, copy.deepcopy((event, obj, prev))))
        while len(self._history) > self._history_limit:
            dropped, _ = self._history.popleft()
            self._expired_before = dropped
        for listener in list(self._listeners):
            listener(event, copy.deepcopy(obj), copy.deepcopy(prev))


def _defaults(obj: dict[str, Any]) -> None:
    """What the real API server's defaulting and conversion would add on a write."""
    kind = obj["kind"]
    if kind == "Secret":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        data = obj.get("data") or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        if data or "data" in obj:
            obj["data"] = data
    elif kind == "Event":
        now = now_rfc3339()
        obj.setdefault("type", "Normal")
        obj.setdefault("count", 1)
        obj.setdefault("firstTimestamp", obj.get("lastTimestamp") or now)
        obj.setdefault("lastTimestamp", obj["firstTimestamp"])
        obj.setdefault("source", {})
        obj.setdefault("reportingComponent", obj["source"].get("component", ""))
        obj.setdefault("reportingInstance", obj["source"].get("host", ""))
        involved = obj.setdefault("involvedObject", {})
        involved.setdefault("namespace", obj["metadata"].get("namespace", ""))
    elif kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind == "Pod":
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        if status["phase"] == "Running":
            status.setdefault("startTime", obj["metadata"]["creationTimestamp"])
            for cs in status.get("containerStatuses") or []:
                running = (cs.get("state") or {}).get("running")
                if isinstance(running, dict):
                    running.setdefault("startedAt", status["startTime"])
