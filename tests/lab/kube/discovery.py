"""Discovery documents (legacy, not aggregated: kubectl accepts them) and a minimal OpenAPI v3."""

from __future__ import annotations

from typing import Any

from . import resources
from .store import ApiError

VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335",
    "gitTreeState": "clean", "buildDate": "2025-04-22T16:02:27Z", "goVersion": "go1.23.6", "compiler": "gc",
    "platform": "linux/amd64",
}


def missing_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def groups() -> list[dict[str, Any]]:
    groups: dict[str, list[str]] = {}
    for res in resources.RESOURCES:
        if res.group:
            versions = groups.setdefault(res.group, [])
            if res.version not in versions:
                versions.append(res.version)
    out = []
    for group, versions in groups.items():
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        out.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return out


def resource_list(group_version: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for res in resources.group_versions()[group_version]:
        entry: dict[str, Any] = {"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                                 "kind": res.kind, "verbs": list(res.verbs)}
        if res.short_names:
            entry["shortNames"] = list(res.short_names)
        if res.categories:
            entry["categories"] = list(res.categories)
        entries.append(entry)
        for sub in res.subresources:
            sub_entry: dict[str, Any] = {"name": f"{res.plural}/{sub}", "singularName": "",
                                         "namespaced": res.namespaced,
                                         "kind": resources.SUBRESOURCE_KINDS.get(sub, res.kind),
                                         "verbs": list(resources.SUBRESOURCE_VERBS[sub])}
            if sub == "scale":
                sub_entry.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            entries.append(sub_entry)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}


def openapi_v3(group_path: str) -> dict[str, Any]:
    """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself.

    kubectl looks for a PATCH operation tagged with the object's group/version/kind whose path takes the
    ``fieldValidation`` parameter; finding it, it sends ``?fieldValidation=Strict`` instead of downloading
    schemas to validate client-side. The root lists one document per group/version.
    """
    by_path = {("api/" if not gv.count("/") else "apis/") + gv: gv for gv in resources.group_versions()}
    if not group_path:
        return {"paths": {path: {"serverRelativeURL": f"/openapi/v3/{path}"} for path in by_path}}
    if group_path not in by_path:
        raise missing_path()
    paths: dict[str, Any] = {}
    for res in resources.group_versions()[by_path[group_path]]:
        prefix = f"/{group_path}/namespaces/{{namespace}}" if res.namespaced else f"/{group_path}"
        gvk = {"group": res.group, "version": res.version, "kind": res.kind}
        query = [{"name": n, "in": "query", "schema": {"type": "string"}}
                 for n in ("dryRun", "fieldManager", "fieldValidation")]
        paths[f"{prefix}/{res.plural}/{{name}}"] = {
            "patch": {"operationId": f"patch{res.kind}", "parameters": query, "responses": {},
                      "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk},
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
            "paths": paths, "components": {"schemas": {}}}
