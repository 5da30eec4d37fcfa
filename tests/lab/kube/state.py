"""Everything the fake holds besides objects: scripted logs, exec wiring, RBAC denials, request records."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .resources import Resource
from .store import ApiError, Store


@dataclass
class ExecConfig:
    env: dict[str, str] = field(default_factory=dict)
    path_map: dict[str, str] = field(default_factory=dict)


@dataclass
class PodLogs:
    current: str
    previous: str | None = None


@dataclass
class LabState:
    store: Store
    token: str
    user: str = "lab"
    logs: dict[tuple[str, str, str], PodLogs] = field(default_factory=dict)
    execs: dict[tuple[str, str], ExecConfig] = field(default_factory=dict)
    forbidden: list[tuple[str, str, str | None]] = field(default_factory=list)
    grants: list[tuple[str | None, dict[str, Any]]] | None = None
    exec_fault: dict[str, Any] | None = None
    watch_expired_http: bool = False
    exec_log: list[dict[str, Any]] = field(default_factory=list)
    request_log: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def is_forbidden(self, verb: str, resource: str, namespace: str | None) -> bool:
        """``resource`` is ``plural`` or ``plural/subresource``; a namespaced denial also denies the
        cluster-wide form of the request (RBAC cannot grant everywhere but one namespace)."""
        with self.lock:
            rules = list(self.forbidden)
        for rule_verb, rule_resource, rule_ns in rules:
            if rule_verb not in ("*", verb) or rule_resource not in ("*", resource):
                continue
            if rule_ns is None or not namespace or rule_ns == namespace:
                return True
        return False

    def granted(self, verb: str, group: str, resource: str, namespace: str | None, name: str | None) -> bool:
        """With `grants` set (RBAC Role rules per namespace; None = cluster-wide), only what they allow."""
        with self.lock:
            grants = self.grants
        if grants is None:
            return True
        for rule_ns, rule in grants:
            if rule_ns is not None and rule_ns != namespace:
                continue
            if not ({"*", group} & set(rule.get("apiGroups") or [])):
                continue
            if not ({"*", resource} & set(rule.get("resources") or [])):
                continue
            if not ({"*", verb} & set(rule.get("verbs") or [])):
                continue
            names = rule.get("resourceNames")
            if names and name not in names:
                continue
            return True
        return False

    def forbidden_error(self, verb: str, res: Resource, subresource: str | None, namespace: str | None,
                        name: str | None) -> ApiError | None:
        resource = f"{res.plural}/{subresource}" if subresource else res.plural
        if not self.is_forbidden(verb, resource, namespace if res.namespaced else None) and \
                self.granted(verb, res.group, resource, namespace if res.namespaced else None, name):
            return None
        scope = f'in the namespace "{namespace}"' if res.namespaced and namespace else "at the cluster scope"
        reason = (f'User "{self.user}" cannot {verb} resource "{resource}" in API group "{res.group}" '
                  f"{scope}")
        subject = f'{res.qualified} "{name}"' if name else res.qualified
        details: dict[str, Any] = {"name": name} if name else {}
        if res.group:
            details["group"] = res.group
        details["kind"] = res.plural
        return ApiError(403, "Forbidden", f"{subject} is forbidden: {reason}", details)

    def pod_created(self, pod: dict[str, Any], replaced: list[dict[str, Any]]) -> None:
        """A controller-made pod inherits the current logs of the pod it replaces."""
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        with self.lock:
            for old in replaced:
                for (lns, lpod, container), logs in list(self.logs.items()):
                    if lns == ns and lpod == old["metadata"]["name"]:
                        self.logs.setdefault((ns, name, container), PodLogs(logs.current))
            for old in replaced:
                cfg = self.execs.get((ns, old["metadata"]["name"]))
                if cfg is not None:
                    self.execs.setdefault((ns, name), cfg)
