"""Evidence gathered beside the checks: Warning events, container logs matched against known failure
signatures, InfisicalSecret and Flux conditions, the ingress's view of the Coder Service, and Coder's own
health report. Each gatherer reads only, is independent of the others, and records what it could not
read instead of failing the run. Every text kept here has been through the run's redactor."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from coderctl.concurrent import fan_out
from coderctl.doctor.model import Signal
from coderctl.doctor.signatures import CODER_WARNING_CODES, EVENT_REASONS, match_condition, match_log
from coderctl.facts.kube import match_labels_selector

if TYPE_CHECKING:
    from coderctl.context import App

LOG_LINES = 200
SESSION_TOKEN_ENV = "CODER_SESSION_TOKEN"


@dataclass
class Evidence:
    signals: list[Signal] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    endpoints: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] | None = None
    unread: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, unread: str) -> None:
        with self.lock:
            self.unread.append(unread)

    def add(self, signal: Signal) -> None:
        with self.lock:
            if signal not in self.signals:
                self.signals.append(signal)

    def as_dict(self) -> dict[str, Any]:
        return {"signals": [s.as_dict() for s in self.signals], "events": self.events,
                "conditions": self.conditions, "endpoints": self.endpoints, "coder_health": self.health,
                "not_read": self.unread}


NODE_EVENTS_NAMESPACE = "default"
"""Where node events are recorded, node-problem-detector's OOMKilling among them (kept only when they name
the Coder container's process)."""


def namespaces(app: App) -> list[str]:
    """The coder, ingress-nginx and infisical-operator namespaces, and those the settings name."""
    token_ns = str(app.settings.infisical_token_secret or "infisical-operator/").partition("/")[0]
    wanted = [app.namespace, app.settings.ingress_namespace, token_ns or "infisical-operator",
              app.settings.flux_namespace, app.settings.metallb_namespace]
    return list(dict.fromkeys(str(n) for n in wanted if n))


def _when(event: dict[str, Any]) -> datetime | None:
    raw = event.get("lastTimestamp") or event.get("eventTime") or (event.get("series") or {}).get("lastObservedTime") \
        or event.get("firstTimestamp") or (event.get("metadata") or {}).get("creationTimestamp")
    if not raw:
        return None
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None


def gather_events(app: App, ev: Evidence, since_s: float) -> None:
    cutoff = datetime.now(UTC).timestamp() - since_s
    fan_out(lambda ns: _events_in(app, ev, ns, cutoff), [*namespaces(app), NODE_EVENTS_NAMESPACE])


def _events_in(app: App, ev: Evidence, ns: str, cutoff: float) -> None:
    from coderctl.clients.kube import EVENTS

    try:
        items = app.kube().list(EVENTS, ns)
    except Exception as exc:  # forbidden, missing namespace: what was not read is recorded
        ev.note(app.redact(f"events in {ns}: {exc}"))
        return
    for item in items:
        if item.get("type") != "Warning":
            continue
        when = _when(item)
        if when is not None and when.timestamp() < cutoff:
            continue
        obj = item.get("involvedObject") or {}
        if ns == NODE_EVENTS_NAMESPACE and not _about_coder_node_oom(app, ns, obj, item):
            continue
        where = f"event {ns}/{obj.get('kind', '?')}/{obj.get('name', '?')}"
        message = app.redact(str(item.get("message") or ""))
        reason = str(item.get("reason") or "")
        record = {"namespace": ns, "object": f"{obj.get('kind')}/{obj.get('name')}", "reason": reason,
                  "message": message, "count": item.get("count"), "last": when.isoformat() if when else None}
        with ev.lock:
            ev.events.append(record)
        code = EVENT_REASONS.get(reason, ("", ""))[0]
        if reason == "Failed" and "pull" in message.lower():
            code = "EVENT-IMAGE-PULL"
        if code:
            count = f" (x{item['count']})" if item.get("count") else ""
            ev.add(Signal(code, where, f"{reason}: {message}{count}"))


def _about_coder_node_oom(app: App, ns: str, obj: dict[str, Any], item: dict[str, Any]) -> bool:
    return (obj.get("kind") == "Node" and item.get("reason") == "OOMKilling"
            and f"({app.settings.coder_container})" in str(item.get("message") or ""))


def observed_memory(signals: list[Signal]) -> str | None:
    """The Coder process's resident memory when the kernel killed it, from an OOMKilling event's anon-rss."""
    import re

    for sig in signals:
        found = re.search(r"anon-rss:(\d+)kB", sig.line) if sig.code == "EVENT-OOM" else None
        if found:
            kib = int(found.group(1))
            amount = f"{kib / 1024 / 1024:.1f}Gi" if kib >= 1024 * 1024 else f"{kib // 1024}Mi"
            return f"{amount} ({sig.source})"
    return None


def _pods(app: App) -> list[tuple[str, str, str]]:
    """(namespace, pod, container) of the Coder pods and the PostgreSQL pod."""
    from coderctl.clients.kube import DEPLOYMENTS, PODS

    ns = app.namespace
    targets: list[tuple[str, str, str]] = []
    dep = app.kube().get_or_none(DEPLOYMENTS, app.settings.coder_deployment, ns)
    selector = match_labels_selector(dep or {})
    if selector:
        for pod in app.kube().list(PODS, ns, label_selector=selector):
            targets.append((ns, pod["metadata"]["name"], str(app.settings.coder_container)))
    targets.append((ns, str(app.settings.postgres_pod), str(app.settings.postgres_container)))
    return targets


def gather_logs(app: App, ev: Evidence, since_s: float) -> None:
    try:
        targets = _pods(app)
    except Exception as exc:
        ev.note(app.redact(f"pods for logs: {exc}"))
        return
    since = max(1, math.ceil(since_s))
    fan_out(lambda job: _one_log(app, ev, *job, since), [(t, previous) for t in targets for previous in (False, True)])


def read_log(app: App, ns: str, pod: str, container: str, *, previous: bool, since_s: int) -> str:
    """The last LOG_LINES lines written in the last `since_s` seconds (the API's sinceSeconds: the kubelet
    filters by its own timestamps, so the client's clock does not matter)."""
    from coderctl.clients.kube import PODS

    query = {"container": container, "previous": "true" if previous else None, "tailLines": LOG_LINES,
             "sinceSeconds": since_s}
    return str(app.kube().request("GET", PODS.path(ns, pod, "log"), query=query, raw=True))


def _one_log(app: App, ev: Evidence, target: tuple[str, str, str], previous: bool, since_s: int) -> None:
    ns, pod, container = target
    label = f"{ns}/{pod}/{container}" + (" (previous)" if previous else "")
    try:
        text = read_log(app, ns, pod, container, previous=previous, since_s=since_s)
    except Exception as exc:
        if not previous:  # most containers have no previous instance: that is not worth a line
            ev.note(app.redact(f"log {label}: {exc}"))
        return
    text = app.redact(text)
    with ev.lock:
        ev.logs[label] = text
    for sig, line in match_log(text):
        ev.add(Signal(sig.code, f"log {label}", line[:300]))


def gather_conditions(app: App, ev: Evidence, since_s: float) -> None:
    from coderctl.clients.kube import HELMRELEASES, INFISICALSECRETS, KUSTOMIZATIONS

    wanted = [(INFISICALSECRETS, app.namespace, "InfisicalSecret"), (HELMRELEASES, app.namespace, "HelmRelease"),
              (KUSTOMIZATIONS, str(app.settings.flux_namespace), "Kustomization")]
    for resource, ns, kind in wanted:
        try:
            items = app.kube().list(resource, ns)
        except Exception as exc:
            ev.note(app.redact(f"{kind}s in {ns}: {exc}"))
            continue
        for item in items:
            name = f"{kind} {ns}/{item['metadata']['name']}"
            for cond in (item.get("status") or {}).get("conditions") or []:
                message = app.redact(str(cond.get("message") or ""))
                record = {"object": name, "type": cond.get("type"), "status": cond.get("status"),
                          "reason": cond.get("reason"), "message": message}
                with ev.lock:
                    ev.conditions.append(record)
                if cond.get("status") == "False" or cond.get("type") == "Stalled":
                    for sig in match_condition(message):
                        ev.add(Signal(sig.code, name, f"{cond.get('type')}={cond.get('status')}: {message}"))


def gather_endpoints(app: App, ev: Evidence, since_s: float) -> None:
    """The ingress's view of Coder: the Service's ready and not-ready endpoint addresses. None ready is what
    makes ingress-nginx answer 503 to every request (a missing host would get its default backend's 404)."""
    from coderctl.clients.kube import Resource

    ns, name = app.namespace, str(app.settings.coder_service)
    try:
        obj = app.kube().get_or_none(Resource("v1", "endpoints"), name, ns)
    except Exception as exc:
        ev.note(app.redact(f"endpoints {ns}/{name}: {exc}"))
        return
    if obj is None:
        ready, waiting = 0, 0
    else:
        subsets = obj.get("subsets") or []
        ready = sum(len(s.get("addresses") or []) for s in subsets)
        waiting = sum(len(s.get("notReadyAddresses") or []) for s in subsets)
    with ev.lock:
        ev.endpoints.update(service=f"{ns}/{name}", ready=ready, not_ready=waiting, exists=obj is not None)
    if ready == 0:
        ev.add(Signal("INGRESS-NO-READY-ENDPOINTS", f"endpoints {ns}/{name}",
                      f"0 ready addresses, {waiting} not ready: ingress-nginx answers 503 for the access host"))


HEALTH_SECTIONS = ("access_url", "database", "websocket", "derp", "workspace_proxy", "provisioner_daemons")


def health_codes(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(section, code, message) of every error and warning in Coder's health report (healthsdk's
    HealthcheckReport: each section has `error` "CODE: message" and `warnings[{code, message}]`; DERP's
    regions and nodes nest the same)."""
    found: list[tuple[str, str, str]] = []

    def walk(section: str, node: Any) -> None:
        if isinstance(node, dict):
            error = node.get("error")
            if isinstance(error, str) and error:
                code, _, message = error.partition(":")
                if code.strip().isalnum() and code.strip().upper().startswith("E"):
                    found.append((section, code.strip(), message.strip()))
                else:
                    found.append((section, "EUNKNOWN", error))
            for warning in node.get("warnings") or []:
                if isinstance(warning, dict) and warning.get("code"):
                    found.append((section, str(warning["code"]), str(warning.get("message") or "")))
            for key, value in node.items():
                if key not in ("error", "warnings"):
                    walk(section, value)
        elif isinstance(node, list):
            for item in node:
                walk(section, item)

    for section in HEALTH_SECTIONS:
        walk(section, report.get(section))
    return list(dict.fromkeys(found))


def gather_health(app: App, ev: Evidence, since_s: float) -> None:
    """Coder's own health report, when a session token is given (CODER_SESSION_TOKEN); its codes become
    signals CODER-<code> (CODER-EDB01, CODER-EDERP01, ...)."""
    import json

    from coderctl import discovery

    token = os.environ.get(SESSION_TOKEN_ENV)
    if not token:
        return
    app.redact.add(token)
    try:
        url = (app.settings.access_url or discovery.access_url(app) or "").rstrip("/")
        if not url:
            return
        resp = app.http().request("GET", f"{url}/api/v2/debug/health?force=true",
                                  headers={"Coder-Session-Token": token, "Accept": "application/json"})
        if resp.status != 200:
            ev.note(f"Coder health report: {resp.status} {resp.reason} from {resp.hop()}")
            return
        report = json.loads(resp.body)
    except Exception as exc:
        ev.note(app.redact(f"Coder health report: {exc}"))
        return
    ev.health = app.redact.deep(report)  # type: ignore[assignment]
    for section, code, message in health_codes(report):
        severity = "warn" if code in CODER_WARNING_CODES else "fail"
        ev.add(Signal(f"CODER-{code}", f"Coder health ({section})", app.redact(f"{code}: {message}"), severity))


def gather_front_door(app: App, ev: Evidence, since_s: float) -> None:
    """Who answers the access URL's /healthz: Coder, ingress-nginx with 503 (no ready endpoint behind the
    Ingress), or the ingress's default backend (404: no Ingress rule serves the host)."""
    from coderctl import discovery

    try:
        url = (app.settings.access_url or discovery.access_url(app) or "").rstrip("/")
        if not url:
            return
        resp = app.http().request("GET", f"{url}/healthz")
    except Exception as exc:
        ev.note(app.redact(f"GET /healthz through the access URL: {exc}"))
        return
    answer = f"GET {url}/healthz: {resp.status} {resp.reason} from {resp.hop()}"
    with ev.lock:
        ev.endpoints["front_door"] = app.redact(answer)
    if resp.header("x-coder-build-version"):
        return
    body = resp.body[:200].decode("utf-8", "replace").lower()
    if resp.status == 404 and "default backend" in body:
        ev.add(Signal("INGRESS-DEFAULT-BACKEND", "ingress", app.redact(
            f"{answer}: the default backend answered, so no Ingress rule serves this host")))
    elif resp.status == 503:
        ev.add(Signal("INGRESS-NO-READY-ENDPOINTS", "ingress", app.redact(
            f"{answer}: ingress-nginx has no ready endpoint to send it to")))


GATHERERS: tuple[Callable[[App, Evidence, float], None], ...] = (
    gather_events, gather_logs, gather_conditions, gather_endpoints, gather_front_door, gather_health)


def start(app: App, since_s: float) -> tuple[Evidence, list[threading.Thread]]:
    """Every gatherer in its own daemon thread, started now; join them against the run's deadline."""
    ev = Evidence()

    def run(fn: Callable[[App, Evidence, float], None]) -> None:
        try:
            fn(app, ev, since_s)
        except Exception as exc:  # a gatherer's own bug must not cost the diagnosis
            ev.note(app.redact(f"{fn.__name__}: {exc}"))

    threads = [threading.Thread(target=run, args=(fn,), name=f"evidence {fn.__name__}", daemon=True)
               for fn in GATHERERS]
    for t in threads:
        t.start()
    return ev, threads


def finish(ev: Evidence, threads: list[threading.Thread], deadline: float) -> Evidence:
    """Wait for the gatherers until `deadline` (time.monotonic()); those still running are named as unread."""
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    late = [t.name for t in threads if t.is_alive()]
    with ev.lock:
        ev.unread += [f"{name}: did not finish before the deadline" for name in late]
        return Evidence(list(ev.signals), list(ev.events), dict(ev.logs), list(ev.conditions), dict(ev.endpoints),
                        ev.health, list(ev.unread))
