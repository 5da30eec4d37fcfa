"""The HTTP(S) face of the fake: aiohttp on its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from aiohttp import web

from . import execution, protobuf, resources
from .controller import random_suffix, react, reconcile_deployment, reconcile_statefulset
from .discovery import VERSION, groups, missing_path, openapi_v3, resource_list
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .resources import Resource
from .selectors import SelectorError, match_expressions_to_string, matcher
from .state import LabState
from .store import ApiError, already_exists, conflict, expired, not_found, precondition_failed
from .tables import table

PUBLIC_PATHS = {"/version", "/healthz", "/readyz", "/livez"}
STRATEGIC = "application/strategic-merge-patch+json"
PATCH_TYPES = {
    "application/merge-patch+json", STRATEGIC, "application/json-patch+json", "application/apply-patch+yaml",
}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet"}


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


class KubeServer:
    """Serves a :class:`LabState` on 127.0.0.1 at a random port."""

    def __init__(self, state: LabState, ssl_context: ssl.SSLContext | None) -> None:
        self.state = state
        self.ssl_context = ssl_context
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._watches: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> int:
        self._thread = threading.Thread(target=self._run, name="fake-kubeapi", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake Kubernetes API did not start within 10 s")
        if self._error is not None:
            raise RuntimeError("fake Kubernetes API failed to start") from self._error
        self.state.store.add_listener(self._on_change)
        return self.port

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self.state.store.remove_listener(self._on_change)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except Exception as exc:  # noqa: BLE001 -- re-raised in the thread that called start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _shutdown(self) -> None:
        """End long requests first (watches, exec sessions: their commands get killed), then the server,
        then whatever is left, so that no task or child process outlives the loop."""
        for queue in list(self._watches):
            queue.put_nowait(None)
        handlers = list(self._tasks)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        if self._runner is not None:
            await self._runner.cleanup()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def end_watches(self) -> None:
        """End every open watch stream (clients reconnect from the resourceVersion they reached)."""
        self._to_watches(None)

    def bookmark(self) -> None:
        """Send a BOOKMARK to every open watch that allows them."""
        self._to_watches({"type": "BOOKMARK"})

    def _to_watches(self, message: dict[str, Any] | None) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def deliver() -> None:
            for queue in list(self._watches):
                queue.put_nowait(message)

        try:
            loop.call_soon_threadsafe(deliver)
        except RuntimeError:
            pass

    def _on_change(self, event: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> None:
        """Store listener, called from any thread: hand the change to the loop, which owns the watches."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._broadcast, {"type": event, "object": obj, "prev": prev})
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _broadcast(self, message: dict[str, Any]) -> None:
        for queue in self._watches:
            queue.put_nowait(message)

    # request handling ------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self.state.lock:
            self.state.request_log.append((request.method, request.path_qs))
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            self._authenticate(request)
            return await self._route(request)
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)
        except (PatchError, SelectorError, ValueError, KeyError, TypeError) as exc:
            err = ApiError(400, "BadRequest", str(exc))
            return web.json_response(err.status(), status=400)
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        # as the API server's bearer token authenticator (k8s.io/apiserver .../request/bearertoken): the header
        # trimmed, split on spaces, the scheme in any case (the client library's in-cluster loader sends "bearer")
        parts = header.strip().split(" ")
        if len(parts) >= 2 and parts[0].lower() == "bearer" and parts[1] and parts[1] == self.state.token:
            return
        if not header and request.path in PUBLIC_PATHS:
            return
        raise ApiError(401, "Unauthorized", "Unauthorized")

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return web.json_response({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/readyz", "/version"]})
        if parts == ["version"]:
            return web.json_response(VERSION)
        if parts[0] in ("healthz", "readyz", "livez"):
            return web.Response(text="ok", content_type="text/plain")
        if parts == ["api"]:
            host = f"127.0.0.1:{self.port}"
            return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                      "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                                      "serverAddress": host}]})
        if parts == ["apis"]:
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups()})
        if parts[:2] == ["openapi", "v3"]:
            return web.json_response(openapi_v3("/".join(parts[2:])))
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) == 2:
            found = [g for g in groups() if g["name"] == parts[1]]
            if not found:
                raise missing_path()
            return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **found[0]})
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise missing_path()
        gv = f"{group}/{version}" if group else version
        if gv not in resources.group_versions():
            raise missing_path()
        if not rest:
            return web.json_response(resource_list(gv))
        watch = _truthy(request.query.get("watch"))
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = resources.find(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise missing_path()
        res = resources.find(group, version, rest[0])
        if res is None or (namespace and not res.namespaced):
            raise missing_path()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in res.subresources:
            raise missing_path()
        if res.namespaced and name is not None and namespace is None:
            raise missing_path()
        return await self._dispatch(request, res, namespace, name, sub, watch)

    async def _dispatch(self, request: web.Request, res: Resource, ns: str | None, name: str | None,
                        sub: str | None, watch: bool) -> web.StreamResponse:
        method = request.method
        verb = {
            ("GET", True): "watch" if watch else "get", ("GET", False): "watch" if watch else "list",
            ("POST", False): "create", ("PUT", True): "update", ("PATCH", True): "patch",
            ("DELETE", True): "delete", ("DELETE", False): "deletecollection",
        }.get((method, name is not None))
        if sub == "exec" and method in ("GET", "POST"):
            verb = "create"
        if verb is None or verb not in res.verbs or (sub and verb not in resources.SUBRESOURCE_VERBS[sub]):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                                    "resource")
        denied = self.state.forbidden_error(verb, res, sub, ns, name)
        if denied is not None:
            raise denied
        if res.kind == "SelfSubjectAccessReview":
            return self._access_review(await _body(request))
        if sub == "log":
            return self._logs(request, res, ns or "", name or "")
        if sub == "exec":
            return await self._exec(request, res, ns or "", name or "")
        if sub == "scale":
            return await self._scale(request, res, ns, name or "")
        if verb == "watch":
            return await self._watch(request, res, ns, name)
        if verb == "get":
            obj = self._get(res, ns, name or "")
            return self._respond(request, res, obj)
        if verb == "list":
            return self._respond_list(request, res, self._list(request, res, ns))
        if verb == "create":
            return await self._create(request, res, ns)
        if verb == "update":
            return await self._update(request, res, ns, name or "", sub)
        if verb == "patch":
            return await self._patch(request, res, ns, name or "", sub)
        if verb == "delete":
            return await self._delete(request, res, ns, name or "")
        return self._delete_collection(request, res, ns)

    # views ------------------------------------------------------------------------------------------------

    def _view(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        if res.group == "events.k8s.io":
            return resources.core_to_events_v1(obj)
        return obj

    def _get(self, res: Resource, ns: str | None, name: str) -> dict[str, Any]:
        obj = self.state.store.get(res.kind, ns, name)
        if obj is None:
            raise not_found(res, name)
        return self._view(res, obj)

    def _list(self, request: web.Request, res: Resource, ns: str | None) -> list[dict[str, Any]]:
        match = matcher(request.query.get("labelSelector"), request.query.get("fieldSelector"))
        return [v for v in (self._view(res, o) for o in self.state.store.list(res.kind, ns)) if match(v)]

    def _respond(self, request: web.Request, res: Resource, obj: dict[str, Any],
                 status: int = 200) -> web.Response:
        if "as=Table" in request.headers.get("Accept", "") and request.method == "GET":
            body = table(res.kind, [obj], self.state.store.resource_version(), request.query.get("includeObject"))
            return web.json_response(body, status=status)
        return web.json_response(obj, status=status)

    def _respond_list(self, request: web.Request, res: Resource, items: list[dict[str, Any]]) -> web.Response:
        rv = self.state.store.resource_version()
        if "as=Table" in request.headers.get("Accept", ""):
            return web.json_response(table(res.kind, items, rv, request.query.get("includeObject")))
        return web.json_response({"kind": f"{res.kind}List", "apiVersion": res.group_version,
                                  "metadata": {"resourceVersion": rv}, "items": items})

    # writes -----------------------------------------------------------------------------------------------

    def _prepare(self, res: Resource, ns: str | None, body: Any, name: str | None = None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad_request("the request body is not an object")
        if body.get("kind") and body["kind"] != res.kind:
            raise _bad_request(f"the API version in the data ({body.get('apiVersion')}) and kind "
                               f"({body['kind']}) do not match the resource {res.qualified}")
        body = copy.deepcopy(body)
        if res.group == "events.k8s.io":
            body = resources.events_v1_to_core(body)
            res = resources.for_kind("Event")
        body["kind"] = res.kind
        body["apiVersion"] = res.group_version
        meta = body.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise _bad_request("the namespace of the provided object does not match the namespace sent on "
                                   "the request")
            meta["namespace"] = ns
        if name is not None:
            if meta.get("name") and meta["name"] != name:
                raise _bad_request(f"the name of the object ({meta['name']}) does not match the name on the "
                                   f"URL ({name})")
            meta["name"] = name
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + random_suffix()
            else:
                raise ApiError(422, "Invalid", f"{res.kind}.{res.group or 'core'} \"\" is invalid: "
                                               "metadata.name: Required value: name or generateName is required")
        return body

    async def _create(self, request: web.Request, res: Resource, ns: str | None) -> web.Response:
        body = self._prepare(res, ns, await _body(request))
        if res.namespaced and self.state.store.get("Namespace", None, ns or "") is None:
            raise not_found(resources.for_kind("Namespace"), ns or "")
        if _truthy_dry_run(request):
            if self.state.store.get(body["kind"], ns, body["metadata"]["name"]) is not None:
                raise already_exists(res, body["metadata"]["name"])
            return web.json_response(self._view(res, body), status=201)
        created = self.state.store.create(body)
        self._after_write(None, created)
        return web.json_response(self._view(res, created), status=201)

    async def _update(self, request: web.Request, res: Resource, ns: str | None, name: str,
                      sub: str | None) -> web.Response:
        body = self._prepare(res, ns, await _body(request), name)
        old = self.state.store.get(body["kind"], ns, name)
        if old is None:
            raise not_found(res, name)
        if sub == "status":
            new_status = body.get("status")
            body = {**old, "status": new_status, "metadata": {**old["metadata"],
                                                               **_rv_only(body["metadata"])}}
        elif "status" in res.subresources:
            body["status"] = old.get("status")
        if _truthy_dry_run(request):
            return web.json_response(self._view(res, body))
        updated = self.state.store.update(body)
        self._after_write(old, updated)
        return web.json_response(self._view(res, updated))

    async def _patch(self, request: web.Request, res: Resource, ns: str | None, name: str,
                     sub: str | None) -> web.Response:
        ctype = request.content_type
        accepted = PATCH_TYPES - {STRATEGIC} if res.custom else PATCH_TYPES
        if ctype not in accepted:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                        f"accepted media types include: {', '.join(sorted(accepted))}")
        raw = await request.read()
        try:
            patch = yaml.safe_load(raw) if ctype == "application/apply-patch+yaml" else json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise _bad_request(f"error decoding patch: {exc}") from None
        kind = res.kind
        old = self.state.store.get(kind, ns, name)
        if old is None:
            if ctype == "application/apply-patch+yaml" and sub is None:
                body = self._prepare(res, ns, patch, name)
                created = self.state.store.create(body)
                self._after_write(None, created)
                return web.json_response(self._view(res, created), status=201)
            raise not_found(res, name)

        def change(current: dict[str, Any]) -> dict[str, Any]:
            view = self._view(res, current)
            if ctype == "application/json-patch+json":
                if not isinstance(patch, list):
                    raise _bad_request("a JSON patch must be a list of operations")
                patched = json_patch(view, patch)
            elif ctype == "application/merge-patch+json":
                patched = merge_patch(view, patch)
            else:
                patched = strategic_merge_patch(view, patch)
            if not isinstance(patched, dict):
                raise _bad_request("the patch did not produce an object")
            rv = (patched.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if res.group == "events.k8s.io":
                patched = resources.events_v1_to_core(patched)
            if sub == "status":
                return {**current, "status": patched.get("status")}
            if "status" in res.subresources:
                patched["status"] = current.get("status")
            patched["metadata"]["uid"] = current["metadata"]["uid"]
            return patched

        if _truthy_dry_run(request):
            return web.json_response(self._view(res, change(old)))
        updated = self.state.store.modify(kind, ns, name, change)
        self._after_write(old, updated)
        return web.json_response(self._view(res, updated))

    async def _delete(self, request: web.Request, res: Resource, ns: str | None, name: str) -> web.Response:
        """DeleteOptions in the body: ``preconditions`` (uid, resourceVersion: 409 Conflict on a mismatch) and
        ``dryRun``."""
        options = await _body(request) if request.can_read_body else None
        options = options if isinstance(options, dict) else {}
        preconditions = options.get("preconditions") or {}
        if _truthy_dry_run(request) or "All" in (options.get("dryRun") or []):
            current = self._get(res, ns, name)
            meta = current["metadata"]
            for field, key in (("UID", "uid"), ("ResourceVersion", "resourceVersion")):
                wanted = preconditions.get(key)
                if wanted and wanted != meta.get(key):
                    raise precondition_failed(res, name, field, wanted, meta.get(key, ""))
            return web.json_response(current)
        deleted = self.state.store.delete(res.kind, ns, name, uid=preconditions.get("uid"),
                                          resource_version=preconditions.get("resourceVersion"))
        if deleted["kind"] == "Pod":
            self._replace_deleted_pod(deleted)
        return web.json_response(self._view(res, deleted))

    def _delete_collection(self, request: web.Request, res: Resource, ns: str | None) -> web.Response:
        items = self._list(request, res, ns)
        for item in items:
            meta = item["metadata"]
            if self.state.store.get(res.kind, meta.get("namespace"), meta["name"]) is not None:
                self.state.store.delete(res.kind, meta.get("namespace"), meta["name"])
        return web.json_response({"kind": f"{res.kind}List", "apiVersion": res.group_version,
                                  "metadata": {"resourceVersion": self.state.store.resource_version()},
                                  "items": items})

    def _after_write(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        react(self.state.store, old, new, self.state.pod_created)

    def _replace_deleted_pod(self, pod: dict[str, Any]) -> None:
        """A deleted pod of a ReplicaSet or StatefulSet comes back, as it would in a cluster."""
        store = self.state.store
        ns = pod["metadata"]["namespace"]
        for ref in pod["metadata"].get("ownerReferences") or []:
            owner = store.get(ref.get("kind", ""), ns, ref.get("name", "")) if ref.get("kind") in SCALABLE else None
            if owner is None:
                continue
            if owner["kind"] == "StatefulSet":
                reconcile_statefulset(store, owner, owner, lambda new, _old: self.state.pod_created(new, [pod]))
            elif owner["kind"] == "ReplicaSet":
                for dref in owner["metadata"].get("ownerReferences") or []:
                    dep = store.get("Deployment", ns, dref.get("name", "")) if dref.get("kind") == "Deployment" \
                        else None
                    if dep is not None:
                        reconcile_deployment(store, dep, dep, lambda new, _old: self.state.pod_created(new, [pod]))

    # subresources -----------------------------------------------------------------------------------------

    def _scale_view(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        selector = match_expressions_to_string((obj.get("spec") or {}).get("selector") or {})
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": selector},
        }

    async def _scale(self, request: web.Request, res: Resource, ns: str | None, name: str) -> web.Response:
        old = self.state.store.get(res.kind, ns, name)
        if old is None:
            raise not_found(res, name)
        if request.method == "GET":
            return web.json_response(self._scale_view(old))
        current = self._scale_view(old)
        if request.method == "PUT":
            wanted = await _body(request)
            rv = ((wanted or {}).get("metadata") or {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(res, name)
        else:
            raw = await request.read()
            patch = json.loads(raw or b"null")
            if request.content_type == "application/json-patch+json":
                wanted = json_patch(current, patch)
            else:
                wanted = merge_patch(current, patch)
        replicas = ((wanted or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                                           f"{replicas}: must be greater than or equal to 0")

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            obj.setdefault("spec", {})["replicas"] = replicas
            return obj

        updated = self.state.store.modify(res.kind, ns, name, change)
        self._after_write(old, updated)
        return web.json_response(self._scale_view(self.state.store.get(res.kind, ns, name) or updated))

    def _access_review(self, body: Any) -> web.Response:
        if not isinstance(body, dict):
            raise _bad_request("the request body is not an object")
        attrs = (body.get("spec") or {}).get("resourceAttributes")
        allowed = True
        if isinstance(attrs, dict):
            resource = attrs.get("resource", "")
            if attrs.get("subresource"):
                resource += "/" + attrs["subresource"]
            allowed = not self.state.is_forbidden(attrs.get("verb", ""), resource, attrs.get("namespace") or None)
        review = copy.deepcopy(body)
        review.setdefault("apiVersion", "authorization.k8s.io/v1")
        review.setdefault("kind", "SelfSubjectAccessReview")
        review.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        review["status"] = {"allowed": allowed}
        return web.json_response(review, status=201)

    def _logs(self, request: web.Request, res: Resource, ns: str, name: str) -> web.Response:
        pod = self._get(res, ns, name)
        container = execution.pick_container(pod, request.query.get("container"))
        with self.state.lock:
            logs = self.state.logs.get((ns, name, container))
        if not (pod.get("spec") or {}).get("nodeName"):
            return web.Response(body=b"", content_type="text/plain")  # not scheduled: nothing to read yet
        if _truthy(request.query.get("previous")):
            if logs is None or logs.previous is None:
                raise _bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            text = logs.previous
        else:
            status = next((cs for cs in (pod.get("status") or {}).get("containerStatuses") or []
                           if cs.get("name") == container), None)
            waiting = ((status or {}).get("state") or {}).get("waiting")
            never_ran = status is None or (waiting is not None
                                           and not (status.get("lastState") or {}).get("terminated"))
            if never_ran:
                reason = (waiting or {}).get("reason") or "ContainerCreating"
                if reason in ("ImagePullBackOff", "ErrImagePull"):
                    reason = "trying and failing to pull image"
                raise _bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
            text = logs.current if logs else ""
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        tail = request.query.get("tailLines")
        if tail is not None and tail.lstrip("-").isdigit() and int(tail) >= 0:
            lines = lines[len(lines) - int(tail):] if int(tail) else []
        if _truthy(request.query.get("timestamps")):
            start = datetime.now(UTC) - timedelta(seconds=len(lines))
            lines = [f"{(start + timedelta(seconds=i)).strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z {line}"
                     for i, line in enumerate(lines)]
        body = "".join(lines).encode()
        limit = request.query.get("limitBytes")
        if limit is not None and limit.isdigit():
            body = body[: int(limit)]
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _exec(self, request: web.Request, res: Resource, ns: str, name: str) -> web.StreamResponse:
        pod = self._get(res, ns, name)
        command = request.query.getall("command", [])
        if not command:
            raise _bad_request("you must specify at least 1 command")
        container = execution.check_target(pod, request.query.get("container"))
        ws = web.WebSocketResponse(protocols=execution.PROTOCOLS)
        if not ws.can_prepare(request).ok:
            raise _bad_request("Upgrade request required")
        req = execution.ExecRequest(
            namespace=ns, pod=name, container=container, command=command,
            stdin=_truthy(request.query.get("stdin")), stdout=_truthy(request.query.get("stdout")),
            stderr=_truthy(request.query.get("stderr")), tty=_truthy(request.query.get("tty")),
        )
        return await execution.serve(request, self.state, req, pod)

    async def _watch(self, request: web.Request, res: Resource, ns: str | None,
                     name: str | None) -> web.StreamResponse:
        """Watch from a resourceVersion: the changes after it (from the store's history), then changes as
        they happen. Without one (or with "0"), ADDED for what exists first. A compacted position gets an
        ERROR event with a 410 Status, as from the real server's watch cache (or an HTTP 410 answer when
        ``watch_expired_http`` is set). With ``allowWatchBookmarks``, BOOKMARK events carry the position
        reached: when asked (:meth:`bookmark`) and before the server ends the watch at ``timeoutSeconds``."""
        match = matcher(request.query.get("labelSelector"), request.query.get("fieldSelector"))
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        bookmarks = _truthy(request.query.get("allowWatchBookmarks"))
        since = request.query.get("resourceVersion") or "0"
        if not since.isdigit():
            raise _bad_request(f'invalid resource version "{since}"')
        kind = res.kind
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._watches.add(queue)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            replay: list[tuple[str, dict[str, Any], dict[str, Any] | None]] | None
            if since == "0":
                items, position = self.state.store.snapshot(kind, ns)
                replay = [("ADDED", obj, None) for obj in items]
            else:
                position = int(since)
                replay = self.state.store.events_since(position)
                if replay is None and self.state.watch_expired_http:
                    raise expired(position, self.state.store.oldest_resource_version())
            await response.prepare(request)
            if replay is None:
                gone = expired(position, self.state.store.oldest_resource_version())
                await _write_event(response, "ERROR", gone.status())
                await response.write_eof()
                return response

            def wanted(obj: dict[str, Any]) -> bool:
                meta = obj["metadata"]
                return (obj.get("kind") == kind and (not ns or meta.get("namespace") == ns)
                        and (name is None or meta.get("name") == name) and match(self._view(res, obj)))

            async def send(event: str, obj: dict[str, Any], prev: dict[str, Any] | None,
                           initial: bool = False) -> None:
                """As the watch cache does: a change that makes an object match is ADDED, one that makes it
                stop matching is DELETED (the previous content at the new resourceVersion)."""
                nonlocal position
                rv = int(obj["metadata"]["resourceVersion"])
                if not initial:
                    if rv <= position:
                        return
                    position = rv
                now_matches = event != "DELETED" and wanted(obj)
                matched = prev is not None and wanted(prev)
                if now_matches:
                    await _write_event(response, "MODIFIED" if matched else "ADDED", self._view(res, obj))
                elif matched and prev is not None:
                    gone = copy.deepcopy(prev)
                    gone["metadata"]["resourceVersion"] = str(rv)
                    await _write_event(response, "DELETED", self._view(res, gone))

            async def bookmark() -> None:
                if bookmarks:
                    await _write_event(response, "BOOKMARK", {
                        "kind": kind, "apiVersion": res.group_version,
                        "metadata": {"resourceVersion": str(position)}})

            for event, obj, prev in replay:
                await send(event, obj, prev, initial=since == "0")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    while not queue.empty():
                        pending = queue.get_nowait()
                        if pending is not None and pending["type"] != "BOOKMARK":
                            await send(pending["type"], pending["object"], pending["prev"])
                    await bookmark()
                    break
                try:
                    message = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    continue
                if message is None:
                    break
                if message["type"] == "BOOKMARK":
                    await bookmark()
                else:
                    await send(message["type"], message["object"], message["prev"])
            await response.write_eof()
        except ConnectionError:
            pass
        finally:
            self._watches.discard(queue)
        return response


async def _write_event(response: web.StreamResponse, event: str, obj: dict[str, Any]) -> None:
    await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if request.content_type == "application/vnd.kubernetes.protobuf":
        try:
            return protobuf.decode(raw)
        except (ValueError, IndexError) as exc:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                        f"accepted media types include: application/json, "
                                                        f"application/yaml ({exc})") from None
    try:
        if "yaml" in request.content_type:
            return yaml.safe_load(raw)
        return json.loads(raw or b"null")
    except (ValueError, yaml.YAMLError) as exc:
        raise _bad_request(f"error decoding request body: {exc}") from None


def _rv_only(meta: dict[str, Any]) -> dict[str, Any]:
    return {"resourceVersion": meta["resourceVersion"]} if meta.get("resourceVersion") else {}


def _truthy_dry_run(request: web.Request) -> bool:
    return request.query.get("dryRun") == "All"


