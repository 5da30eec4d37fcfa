"""The support bundle: a .tar.gz (0600, written atomically) safe to attach to a public issue.

It holds the check results and findings, the manifests of the coder namespace and of the objects the
checks read elsewhere (Secrets as key names only; managedFields and last-applied annotations dropped),
Warning events, redacted logs, versions, and the redacted effective configuration, indexed by a README.
Every member passes through the run's redactor before it is written: JSON as data (Redactor.deep), logs
and the README as text.
"""

from __future__ import annotations

import io
import json
import os
import platform
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coderctl import __version__

if TYPE_CHECKING:
    from coderctl.clients.kube import Resource
    from coderctl.context import App
    from coderctl.doctor.run import Report

DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def _coder_namespace_kinds() -> list[tuple[str, Resource]]:
    from coderctl.clients.kube import (CONFIGMAPS, DEPLOYMENTS, HELMRELEASES, INFISICALSECRETS, INGRESSES, PODS,
                                       PVCS, SECRETS, SERVICES, STATEFULSETS, Resource)

    return [("deployments", DEPLOYMENTS), ("statefulsets", STATEFULSETS), ("pods", PODS), ("services", SERVICES),
            ("endpoints", Resource("v1", "endpoints")), ("ingresses", INGRESSES), ("configmaps", CONFIGMAPS),
            ("secrets", SECRETS), ("persistentvolumeclaims", PVCS), ("infisicalsecrets", INFISICALSECRETS),
            ("helmreleases", HELMRELEASES)]


def _elsewhere(app: App) -> list[tuple[str, str, Resource, str | None]]:
    """(namespace, kind label, resource, name or None for all) of what the checks read outside coder."""
    from coderctl.clients.kube import CONFIGMAPS, DEPLOYMENTS, IPADDRESSPOOLS, KUSTOMIZATIONS, SECRETS, SERVICES

    s = app.settings
    ing = str(s.ingress_namespace)
    token = str(s.infisical_token_secret or "infisical-operator/infisical-service-token")
    token_ns, _, token_name = token.partition("/")
    return [(ing, "deployments", DEPLOYMENTS, str(s.ingress_controller)),
            (ing, "services", SERVICES, str(s.ingress_controller)),
            (ing, "configmaps", CONFIGMAPS, str(s.ingress_controller)),
            (ing, "configmaps", CONFIGMAPS, str(s.proxy_headers_configmap)),
            (token_ns, "secrets", SECRETS, token_name or None),
            (str(s.metallb_namespace), "ipaddresspools", IPADDRESSPOOLS, None),
            (str(s.flux_namespace), "kustomizations", KUSTOMIZATIONS, None)]


def sanitize(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as the bundle keeps it: no managedFields or last-applied copy; a Secret's data as key names."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    if meta.get("annotations"):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k not in DROPPED_ANNOTATIONS}
    out["metadata"] = meta
    if out.get("kind") == "Secret":
        keys = sorted(set(out.get("data") or {}) | set(out.get("stringData") or {}))
        out.pop("stringData", None)
        out["data"] = {k: "(value not included)" for k in keys}
    return out


KINDS = {"deployments": "Deployment", "statefulsets": "StatefulSet", "pods": "Pod", "services": "Service",
         "endpoints": "Endpoints", "ingresses": "Ingress", "configmaps": "ConfigMap", "secrets": "Secret",
         "persistentvolumeclaims": "PersistentVolumeClaim", "infisicalsecrets": "InfisicalSecret",
         "helmreleases": "HelmRelease", "ipaddresspools": "IPAddressPool", "kustomizations": "Kustomization"}


def _manifests(app: App, notes: list[str]) -> dict[str, list[dict[str, Any]]]:
    kube = app.kube()
    wanted: list[tuple[str, str, Resource, str | None]] = [
        (app.namespace, label, resource, None) for label, resource in _coder_namespace_kinds()]
    found: dict[str, list[dict[str, Any]]] = {}
    for ns, label, resource, name in wanted + _elsewhere(app):
        try:
            items = [o for o in [kube.get_or_none(resource, name, ns)] if o] if name else kube.list(resource, ns)
        except Exception as exc:
            notes.append(app.redact(f"{ns}/{label}{'/' + name if name else ''}: {exc}"))
            continue
        found.setdefault(f"{ns}/{label}", []).extend(sanitize({**i, "kind": KINDS[label]}) for i in items)
    return found


def _versions(app: App, report: Report) -> dict[str, Any]:
    versions: dict[str, Any] = {"coderctl": __version__, "python": platform.python_version(),
                                "platform": platform.platform()}
    try:
        versions["kubernetes"] = app.kube().version().get("gitVersion")
    except Exception as exc:
        versions["kubernetes"] = f"unknown: {exc}"
    for r in report.results:
        if r.id == "http.buildinfo" and r.data.get("version"):
            versions["coder_reported"] = r.data.get("version")
    versions["expected_coder"] = app.settings.expected_coder_version
    return versions


def _readme(members: Iterable[str], report: Report, notes: list[str]) -> str:
    lines = ["# coderctl doctor support bundle", "",
             f"Made by coderctl {__version__} at {report.started_at.strftime('%Y-%m-%dT%H:%M:%SZ')}. Secret values "
             "are not included: Secrets appear as key names only, and every file went through coderctl's "
             "redaction (known secret values and credential patterns are replaced by ***).", "",
             "## Findings", ""]
    lines += [f"- {f.severity} {f.code}: {f.title}" for f in report.findings] or ["- none"]
    lines += ["", "## Files", "",
              "- `report.json`: the doctor document (`-o json`): findings, check results, summary",
              "- `evidence.json`: signals, Warning events, conditions, the Coder Service's endpoints, Coder's "
              "health report (with a session token), what could not be read",
              "- `versions.json`: coderctl, Python, Kubernetes, Coder (reported and expected)",
              "- `config.json`: the effective configuration with each value's source (secrets masked)",
              "- `manifests/NAMESPACE/KIND.json`: the objects read (no managedFields; Secrets as key names)",
              "- `logs/`: the last lines of the Coder and PostgreSQL containers (current and previous)", ""]
    lines += [f"  - `{m}`" for m in sorted(members) if m.startswith(("manifests/", "logs/"))]
    if notes:
        lines += ["", "## Not included (could not be read)", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _log_name(label: str) -> str:
    name = label.replace(" (previous)", ".previous").replace("/", "_")
    return f"logs/{name}.log"


def write(path: Path, app: App, report: Report, document: dict[str, Any], config: Any) -> list[str]:
    """Write the bundle to `path` atomically, mode 0600; return the member names."""
    notes = list(report.evidence.unread)
    clean: Callable[[Any], Any] = app.redact.deep
    members: dict[str, str] = {
        "report.json": json.dumps(clean(document), indent=2, ensure_ascii=False),
        "evidence.json": json.dumps(clean(report.evidence.as_dict()), indent=2, ensure_ascii=False),
        "versions.json": json.dumps(clean(_versions(app, report)), indent=2),
        "config.json": json.dumps(clean(config), indent=2, ensure_ascii=False),
    }
    for key, items in _manifests(app, notes).items():
        members[f"manifests/{key}.json"] = json.dumps(clean(items), indent=2, ensure_ascii=False)
    for label, text in report.evidence.logs.items():
        members[_log_name(label)] = text
    members["README.md"] = _readme(members, report, notes)
    # JSON members were redacted as data (every string, and secret-named fields whole); a text pass over the
    # dumped JSON could mask a `"key": {` as if it were a credential and leave a document that does not parse.
    _write_tar(path, {name: text if name.endswith(".json") else app.redact(text) for name, text in members.items()})
    return sorted(members)


def _write_tar(path: Path, members: dict[str, str]) -> None:
    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                now = time.time()
                for name in ["README.md", *sorted(n for n in members if n != "README.md")]:
                    data = members[name].encode("utf-8")
                    info = tarfile.TarInfo(f"coderctl-doctor/{name}")
                    info.size, info.mode, info.mtime = len(data), 0o600, int(now)
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
