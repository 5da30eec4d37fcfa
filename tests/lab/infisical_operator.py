"""A fake Infisical Kubernetes operator loop for the lab.

It mimics the InfisicalSecret controller of Infisical/kubernetes-operator (CRD
secrets.infisical.com/v1alpha1): every `interval` seconds it reads each InfisicalSecret from the fake
Kubernetes API's in-process store, loads the credentials from the referenced Secret, fetches the secrets
from the fake Infisical over real HTTP (so a bad token, wrong host or expired token really fails), writes
the managed Secret with the `secrets.infisical.com/version` annotation when the values changed, sets the
status conditions with the controller's messages, and stamps auto-reload workloads.

Behaviour copied from the operator source (internal/services/infisicalsecret, internal/controllerhelpers):
service tokens are re-read from their Secret on every reconcile and sent with only their first three
dot-parts; universal-auth logins are cached per InfisicalSecret and, like the operators in
Infisical/infisical#7179, never renewed (`relogin_on_expiry=True` models a fixed operator); the managed
Secret is left alone when its version annotation already matches ("No secrets modified so reconcile not
needed", the behaviour behind Infisical/infisical#2038; `always_update=True` models newer operators).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, Self

import pytest

from lab.infisical import FakeInfisical

GROUP = "secrets.infisical.com"
VERSION_ANNOTATION = "secrets.infisical.com/version"
AUTO_RELOAD_ANNOTATION = "secrets.infisical.com/auto-reload"
MANAGED_SECRET_ANNOTATION_PREFIX = "secrets.infisical.com/managed-secret"
COND_LOADED = "secrets.infisical.com/LoadedInfisicalToken"
COND_READY = "secrets.infisical.com/ReadyToSyncSecrets"
COND_AUTO_REDEPLOY = "secrets.infisical.com/AutoRedeployReady"
DEFAULT_HOST_API = "https://app.infisical.com/api"
USER_AGENT = "k8-operator"
SYNC_FAILED_PREFIX = (
    "Failed to sync secrets. This can be caused by invalid service token or an invalid API host that is set."
)
NOT_MODIFIED_LOG = "No secrets modified so reconcile not needed"
REFERENCE_KEY_MAP: dict[str, str] = {
    "CODER_POSTGRES_ADMIN_PASSWORD": "postgres-admin-password",
    "CODER_USER_PASSWORD": "coder-user-password",
    "CODER_DATABASE_URL": "database-url",
}
KNOWN_INFISICAL_HOSTS = (
    "https://app.infisical.com/api",
    "https://us.infisical.com/api",
    "https://eu.infisical.com/api",
)
_SYSTEM_ANNOTATION_PREFIXES = ("kubectl.kubernetes.io/", "kubernetes.io/", "k8s.io/", "helm.sh/")
_WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


class KubeStore(Protocol):
    """The four methods of the fake Kubernetes API's in-process store the operator uses."""

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None: ...

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]: ...

    def put(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    def patch(self, kind: str, namespace: str | None, name: str, merge_patch: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class SyncResult:
    """Outcome of reconciling one InfisicalSecret."""

    namespace: str
    name: str
    ok: bool
    secrets: int = 0
    written: bool = False
    error: str | None = None


class _SyncError(Exception):
    pass


class _HttpError(Exception):
    def __init__(self, status: int | None, body: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.body = body


def url_mapper(base_url: str, hosts: tuple[str, ...] = KNOWN_INFISICAL_HOSTS) -> Callable[[str], str | None]:
    """Map the known Infisical `hostAPI` values, and the fake's own loopback URL (the standard lab's hostAPI),
    to the lab fake; any other host is unknown (returns None)."""
    known = {append_api_endpoint(h) for h in (*hosts, base_url)}

    def mapper(host_api: str) -> str | None:
        return base_url if append_api_endpoint(host_api) in known else None

    return mapper


def append_api_endpoint(host: str) -> str:
    """The operator's `util.AppendAPIEndpoint`: make sure the host ends with /api."""
    host = host.rstrip("/")
    return host if host.endswith("/api") else f"{host}/api"


def compute_etag(rendered: Mapping[str, bytes]) -> str:
    """The operator's `crypto.ComputeRenderedEtag`: CRC32 over sorted key/value pairs, NUL separated."""
    buf = b"".join(k.encode() + b"\0" + v + b"\0" for k, v in sorted(rendered.items()))
    return f'W/"secrets-{len(buf)}-{zlib.crc32(buf) & 0xFFFFFFFF:08X}"'


def managed_secret_annotation_key(secret_name: str) -> str:
    """The operator's `BuildManagedSecretAnnotationKey`: shortened with a digest past 63 characters."""
    name_prefix = MANAGED_SECRET_ANNOTATION_PREFIX.split("/", 1)[1]
    if len(name_prefix) + 1 + len(secret_name) <= 63:
        return f"{MANAGED_SECRET_ANNOTATION_PREFIX}.{secret_name}"
    digest = hashlib.sha256(secret_name.encode()).hexdigest()[:8]
    available = 63 - len(name_prefix) - 1 - 9
    return f"{MANAGED_SECRET_ANNOTATION_PREFIX}.{secret_name[:available]}-{digest}"


_TEMPLATE_ACTION = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.DOTALL)
_TEMPLATE_FIELD = re.compile(r"^\.([A-Za-z_][A-Za-z0-9_]*)\.(Value|SecretPath)$")


def render_template(template: str, secrets: Mapping[str, tuple[str, str]]) -> str:
    """A small subset of the Go templates the operator accepts: `{{ .KEY.Value }}` and
    `{{ .KEY.SecretPath }}` with `{{-`/`-}}` trimming. A missing key renders empty, like Go's zero value."""
    out: list[str] = []
    pos = 0
    trim_next = False
    for m in _TEMPLATE_ACTION.finditer(template):
        literal = template[pos:m.start()]
        if trim_next:
            literal = literal.lstrip()
        if m.group(1):
            literal = literal.rstrip()
        out.append(literal)
        expr = m.group(2).strip()
        fm = _TEMPLATE_FIELD.match(expr)
        if fm is None:
            raise ValueError(f'template: secret-templates: unsupported action "{expr}"')
        value, path = secrets.get(fm.group(1), ("", ""))
        out.append(value if fm.group(2) == "Value" else path)
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = template[pos:]
    out.append(tail.lstrip() if trim_next else tail)
    return "".join(out)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


class FakeInfisicalOperator:
    """The InfisicalSecret reconcile loop, in a background thread.

    `infisical_url_for(hostAPI) -> base url | None` maps a `spec.hostAPI` to a reachable server; a string
    means "every host is this url"; None with `infisical=` given maps every host to that fake; a host the
    mapper returns None for fails like a DNS lookup. `delay` seconds pass between fetching changed values
    and writing them. `key_map` renames Infisical keys in managed Secrets that have no template.
    """

    def __init__(
        self,
        kube: KubeStore,
        infisical_url_for: Callable[[str], str | None] | str | None = None,
        *,
        interval: float = 0.2,
        delay: float = 0.0,
        key_map: Mapping[str, str] | None = None,
        infisical: FakeInfisical | None = None,
        always_update: bool = False,
        relogin_on_expiry: bool = False,
        http_timeout: float = 5.0,
    ) -> None:
        self.kube = kube
        if isinstance(infisical_url_for, str):
            fixed = infisical_url_for
            self._url_for: Callable[[str], str | None] = lambda _host: fixed
        elif infisical_url_for is not None:
            self._url_for = infisical_url_for
        elif infisical is not None:
            self._url_for = lambda _host: infisical.url
        else:
            self._url_for = lambda _host: None
        self.interval = interval
        self.delay = delay
        self.key_map = dict(key_map or {})
        self.always_update = always_update
        self.relogin_on_expiry = relogin_on_expiry
        self.http_timeout = http_timeout
        self.paused = False
        self.log: deque[str] = deque(maxlen=5000)
        self.writes = 0
        self.last_results: list[SyncResult] = []

        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._access_tokens: dict[str, str] = {}
        self._sync_lock = threading.Lock()
        self._passes = threading.Condition()
        self._started_passes = 0
        self._finished_passes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="fake-infisical-operator", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._stop.clear()

    def restart(self) -> None:
        """Like deleting the operator pod: cached logins are forgotten."""
        self.stop()
        self._access_tokens.clear()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.paused:
                try:
                    self.sync_once()
                except Exception as exc:  # noqa: BLE001 - a broken store must not kill the loop silently
                    self.log.append(f"reconcile pass failed: {exc!r}")
            self._stop.wait(self.interval)

    def wait_synced(self, timeout: float = 5.0) -> bool:
        """Wait for a reconcile pass that started after this call; True when every InfisicalSecret in it
        synced. Without a running loop the pass runs here. False on timeout or on any sync failure."""
        if self._thread is None:
            return all(r.ok for r in self.sync_once())
        with self._passes:
            target = self._started_passes + 1
            done = self._passes.wait_for(lambda: self._finished_passes >= target, timeout=timeout)
        return done and all(r.ok for r in self.last_results)

    # ---- reconcile -------------------------------------------------------------------------------

    def sync_once(self) -> list[SyncResult]:
        """One reconcile pass over every InfisicalSecret."""
        with self._sync_lock:
            with self._passes:
                self._started_passes += 1
            try:
                results = [self._reconcile(obj) for obj in self.kube.list("InfisicalSecret")]
                self.last_results = results
                return results
            finally:
                with self._passes:
                    self._finished_passes += 1
                    self._passes.notify_all()

    def _reconcile(self, obj: dict[str, Any]) -> SyncResult:
        meta = obj.get("metadata", {})
        ns, name = meta.get("namespace") or "default", meta["name"]
        spec = obj.get("spec") or {}
        conditions: list[dict[str, Any]] = copy.deepcopy((obj.get("status") or {}).get("conditions") or [])
        result = SyncResult(namespace=ns, name=name, ok=False)
        try:
            base_url = self._base_url(spec)
            strategy, fetch = self._authenticate(obj, spec, base_url)
        except _SyncError as exc:
            _set_condition(conditions, COND_LOADED, False, "Error",
                           f"Failed to load Infisical Token from the provided Kubernetes secret because: {exc}")
            self._fail(conditions, f"unable to authenticate [err={exc}]", result)
        else:
            _set_condition(conditions, COND_LOADED, True, "OK",
                           "Infisical controller has loaded the Infisical token in provided Kubernetes secret, "
                           f"using {strategy} authentication strategy")
            try:
                secrets = fetch()
                result.secrets = len(secrets)
                result.written = self._write_managed(obj, spec, secrets)
            except _SyncError as exc:
                self._fail(conditions, f"failed to fetch secrets from API for managed secrets [err={exc}]", result)
            else:
                result.ok = True
                _set_condition(conditions, COND_READY, True, "OK",
                               "Infisical controller has started syncing your secrets. "
                               f"Last reconcile synced {len(secrets)} secrets")
                count = self._reload_workloads(spec, ns)
                _set_condition(conditions, COND_AUTO_REDEPLOY, True, "OK",
                               f"Infisical has found {count} deployments which are ready to be auto redeployed "
                               "when secrets change")
        if _conditions_differ(conditions, (obj.get("status") or {}).get("conditions") or []):
            self.kube.patch("InfisicalSecret", ns, name, {"status": {"conditions": conditions}})
        return result

    def _fail(self, conditions: list[dict[str, Any]], error: str, result: SyncResult) -> None:
        result.error = error
        self.log.append(f"unable to reconcile InfisicalSecret {result.namespace}/{result.name}: {error}")
        _set_condition(conditions, COND_READY, False, "Error", f"{SYNC_FAILED_PREFIX} Error: {error}")
        _set_condition(conditions, COND_AUTO_REDEPLOY, False, "Stopped",
                       "Auto redeployment has been stopped because the operator failed to sync secrets. "
                       f"Error: {error}")

    def _base_url(self, spec: Mapping[str, Any]) -> str:
        host_api = append_api_endpoint(spec.get("hostAPI") or DEFAULT_HOST_API)
        try:
            base = self._url_for(host_api)
        except LookupError:
            base = None
        if base:
            return base.rstrip("/") + "/api"
        return "unresolvable://" + host_api.split("://", 1)[-1]

    def _read_secret_keys(self, ref: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, str] | None:
        secret = self.kube.get("Secret", ref.get("secretNamespace"), ref.get("secretName", ""))
        if secret is None:
            return None
        out: dict[str, str] = {}
        for key in keys:
            if key in (secret.get("stringData") or {}):
                out[key] = str(secret["stringData"][key])
            elif key in (secret.get("data") or {}):
                try:
                    out[key] = base64.b64decode(secret["data"][key]).decode()
                except (binascii.Error, UnicodeDecodeError):
                    out[key] = ""
        return out

    def _authenticate(
        self, obj: Mapping[str, Any], spec: Mapping[str, Any], base_url: str
    ) -> tuple[str, Callable[[], list[tuple[str, str, str]]]]:
        own_ns = obj["metadata"].get("namespace") or "default"
        auth = spec.get("authentication") or {}
        ua = dict(auth.get("universalAuth") or {})
        if (ua.get("credentialsRef") or {}).get("secretName"):
            ua["credentialsRef"] = {"secretNamespace": own_ns,
                                    **{k: v for k, v in ua["credentialsRef"].items() if v}}
            return "UNIVERSAL_MACHINE_IDENTITY", self._universal_auth(obj, ua, base_url)
        st = auth.get("serviceToken") or {}
        ref = {"secretNamespace": own_ns}
        ref.update({k: v for k, v in (spec.get("tokenSecretReference") or {}).items() if v})
        ref.update({k: v for k, v in (st.get("serviceTokenSecretReference") or {}).items() if v})
        if ref.get("secretName"):
            values = self._read_secret_keys(ref, ("infisicalToken",))
            token = (values or {}).get("infisicalToken", "").replace(" ", "")
            if token:
                scope = st.get("secretsScope") or {}
                return "SERVICE_TOKEN", lambda: self._fetch_with_service_token(ref, scope, base_url)
        raise _SyncError("no authentication method provided. Please configure a authentication method then try again")

    def _universal_auth(
        self, obj: Mapping[str, Any], ua: Mapping[str, Any], base_url: str
    ) -> Callable[[], list[tuple[str, str, str]]]:
        uid = str(obj.get("metadata", {}).get("uid") or f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}")
        creds = self._read_secret_keys(ua["credentialsRef"], ("clientId", "clientSecret")) or {}
        if not creds.get("clientId") or not creds.get("clientSecret"):
            raise _SyncError("no authentication method provided. "
                             "Please configure a authentication method then try again")

        def login() -> str:
            try:
                body = self._http("POST", f"{base_url}/v1/auth/universal-auth/login", None,
                                  {"clientId": creds["clientId"], "clientSecret": creds["clientSecret"]})
            except _HttpError as exc:
                raise _SyncError(f"unable to login with machine identity credentials [err={exc}]") from None
            return str(body["accessToken"])

        if uid not in self._access_tokens:
            self._access_tokens[uid] = login()
        scope = ua.get("secretsScope") or {}

        def fetch() -> list[tuple[str, str, str]]:
            try:
                return self._fetch_with_access_token(self._access_tokens[uid], scope, base_url)
            except _SyncError as exc:
                if self.relogin_on_expiry and "TokenError" in str(exc):
                    self._access_tokens[uid] = login()
                    return self._fetch_with_access_token(self._access_tokens[uid], scope, base_url)
                raise

        return fetch

    def _fetch_with_access_token(
        self, token: str, scope: Mapping[str, Any], base_url: str
    ) -> list[tuple[str, str, str]]:
        project_id = scope.get("projectId") or ""
        if not project_id and scope.get("projectSlug"):
            try:
                project = self._http("GET", f"{base_url}/v2/workspace/{scope['projectSlug']}", token)
            except _HttpError as exc:
                raise _SyncError(f"unable to extract project id from slug [err={exc}]") from None
            project_id = str(project.get("id", ""))
        if not project_id:
            raise _SyncError("invalid machine identity scope [err=either projectId or projectSlug must be specified]")
        return self._list_secrets(token, project_id, scope, base_url)

    def _fetch_with_service_token(
        self, ref: Mapping[str, Any], scope: Mapping[str, Any], base_url: str
    ) -> list[tuple[str, str, str]]:
        values = self._read_secret_keys(ref, ("infisicalToken",)) or {}
        full = values.get("infisicalToken", "").replace(" ", "")
        parts = full.split(".", 3)
        if len(parts) < 4:
            raise _SyncError("failed to get secrets because [err=invalid service token entered. "
                             "Please double check your service token and try again]")
        token = ".".join(parts[:3])
        try:
            details = self._http("GET", f"{base_url}/v2/service-token", token, name="CallGetServiceTokenDetails")
        except _HttpError as exc:
            raise _SyncError(f"failed to get secrets because [err=unable to get service token details. [err={exc}]]"
                             ) from None
        return self._list_secrets(token, str(details.get("workspace", "")), scope, base_url)

    def _list_secrets(
        self, token: str, project_id: str, scope: Mapping[str, Any], base_url: str
    ) -> list[tuple[str, str, str]]:
        query = urllib.parse.urlencode({
            "workspaceId": project_id,
            "environment": scope.get("envSlug", ""),
            "secretPath": scope.get("secretsPath") or "/",
            "expandSecretReferences": "true",
            "include_imports": "true",
            "recursive": str(bool(scope.get("recursive"))).lower(),
        })
        try:
            body = self._http("GET", f"{base_url}/v3/secrets/raw?{query}", token, name="CallListSecretsV3")
        except _HttpError as exc:
            raise _SyncError(f"failed to get secrets because [err={exc}]") from None
        return [(str(s["secretKey"]), str(s.get("secretValue", "")), str(s.get("secretPath", "/")))
                for s in body.get("secrets", [])]

    def _http(self, method: str, url: str, token: str | None, body: Mapping[str, Any] | None = None,
              *, name: str = "CallInfisicalAPI") -> dict[str, Any]:
        if url.startswith("unresolvable://"):
            rest = url.split("://", 1)[1]
            host = rest.split("/", 1)[0].split(":", 1)[0]
            raise _HttpError(None, "", f'{name}: Unable to complete api request [err={method.title()} '
                                       f'"https://{rest}": dial tcp: lookup {host}: no such host]')
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("User-Agent", USER_AGENT)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with self._opener.open(req, timeout=self.http_timeout) as resp:
                return dict(json.loads(resp.read() or b"{}"))
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            raise _HttpError(exc.code, text, f"{name}: Unsuccessful response [{method} {url}] "
                                             f"[status-code={exc.code}] [response={text}]") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _HttpError(None, "", f'{name}: Unable to complete api request [err={method.title()} "{url}": '
                                       f"{reason}]") from None

    # ---- managed Secret --------------------------------------------------------------------------

    def _managed_refs(self, spec: Mapping[str, Any], default_ns: str) -> list[dict[str, Any]]:
        refs: list[dict[str, Any]] = []
        legacy = spec.get("managedSecretReference") or {}
        if legacy.get("secretName"):
            refs.append(dict(legacy))
        refs.extend(dict(r) for r in spec.get("managedKubeSecretReferences") or [] if r.get("secretName"))
        for ref in refs:
            ref.setdefault("secretNamespace", default_ns)
            if not ref["secretNamespace"]:
                ref["secretNamespace"] = default_ns
        return refs

    def _render(self, ref: Mapping[str, Any], secrets: list[tuple[str, str, str]]) -> dict[str, bytes]:
        template = ref.get("template")
        rendered: dict[str, bytes] = {}
        if not template:
            for key, value, _ in secrets:
                rendered[self.key_map.get(key, key)] = value.encode()
            return rendered
        if template.get("includeAllSecrets"):
            rendered.update({key: value.encode() for key, value, _ in secrets})
        lookup = {key: (value, path) for key, value, path in secrets}
        for key, tmpl in (template.get("data") or {}).items():
            try:
                rendered[key] = render_template(str(tmpl), lookup).encode()
            except ValueError as exc:
                raise _SyncError(f"failed to update managed secret [err=unable to compile template: {key} "
                                 f"[err={exc}]]") from None
        return rendered

    def _write_managed(self, obj: Mapping[str, Any], spec: Mapping[str, Any],
                       secrets: list[tuple[str, str, str]]) -> bool:
        meta = obj["metadata"]
        wrote = False
        for ref in self._managed_refs(spec, meta.get("namespace") or "default"):
            rendered = self._render(ref, secrets)
            etag = compute_etag(rendered)
            data = {k: _b64(v) for k, v in rendered.items()}
            current = self.kube.get("Secret", ref["secretNamespace"], ref["secretName"])
            if current is not None:
                same_version = (current.get("metadata", {}).get("annotations") or {}).get(VERSION_ANNOTATION) == etag
                same_data = (current.get("data") or {}) == data
                if same_version and (same_data or not self.always_update):
                    self.log.append(NOT_MODIFIED_LOG)
                    continue
            if self.delay > 0 and self._stop.wait(self.delay):
                raise _SyncError("operator stopped")
            if current is None:
                self.kube.put(self._new_secret(obj, ref, data, etag))
                self.log.append("Successfully created a managed Kubernetes secret with your Infisical secrets. "
                                f"Type: {ref.get('secretType') or 'Opaque'}")
            else:
                updated = copy.deepcopy(current)
                updated.pop("stringData", None)
                updated["data"] = data
                updated.setdefault("metadata", {}).setdefault("annotations", {})
                if updated["metadata"]["annotations"] is None:
                    updated["metadata"]["annotations"] = {}
                updated["metadata"]["annotations"][VERSION_ANNOTATION] = etag
                self.kube.put(updated)
                self.log.append("successfully updated managed Kubernetes secret")
            self.writes += 1
            wrote = True
        return wrote

    def _new_secret(self, obj: Mapping[str, Any], ref: Mapping[str, Any], data: dict[str, str],
                    etag: str) -> dict[str, Any]:
        meta = obj["metadata"]
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                       if not k.startswith(_SYSTEM_ANNOTATION_PREFIXES)}
        annotations[VERSION_ANNOTATION] = etag
        secret_meta: dict[str, Any] = {
            "name": ref["secretName"],
            "namespace": ref["secretNamespace"],
            "annotations": annotations,
            "labels": dict(meta.get("labels") or {}),
        }
        if ref.get("creationPolicy") == "Owner":
            secret_meta["ownerReferences"] = [{
                "apiVersion": f"{GROUP}/v1alpha1", "kind": "InfisicalSecret", "name": meta["name"],
                "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True,
            }]
        return {"apiVersion": "v1", "kind": "Secret", "metadata": secret_meta,
                "type": ref.get("secretType") or "Opaque", "data": data}

    # ---- auto-reload -----------------------------------------------------------------------------

    def _reload_workloads(self, spec: Mapping[str, Any], default_ns: str) -> int:
        count = 0
        for ref in self._managed_refs(spec, default_ns):
            secret = self.kube.get("Secret", ref["secretNamespace"], ref["secretName"])
            if secret is None:
                continue
            version = (secret.get("metadata", {}).get("annotations") or {}).get(VERSION_ANNOTATION, "")
            key = managed_secret_annotation_key(ref["secretName"])
            for kind in _WORKLOAD_KINDS:
                try:
                    workloads = self.kube.list(kind, ref["secretNamespace"])
                except ValueError:  # a store that does not serve this kind (the lab has no DaemonSets)
                    continue
                for wl in workloads:
                    wl_meta = wl.get("metadata", {})
                    if (wl_meta.get("annotations") or {}).get(AUTO_RELOAD_ANNOTATION) != "true":
                        continue
                    if not _uses_secret(wl, ref["secretName"]):
                        continue
                    count += 1
                    tmpl_ann = (((wl.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
                        "annotations") or {}
                    if (wl_meta.get("annotations") or {}).get(key) == version and tmpl_ann.get(key) == version:
                        continue
                    self.kube.patch(kind, wl_meta.get("namespace") or ref["secretNamespace"], wl_meta["name"], {
                        "metadata": {"annotations": {key: version}},
                        "spec": {"template": {"metadata": {"annotations": {key: version}}}},
                    })
                    self.log.append(f"{kind} is using outdated managed secret. Starting re-deployment "
                                    f"[name={wl_meta['name']}]")
        return count


def _uses_secret(workload: Mapping[str, Any], secret_name: str) -> bool:
    pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or []:
        for env_from in container.get("envFrom") or []:
            if (env_from.get("secretRef") or {}).get("name") == secret_name:
                return True
        for env in container.get("env") or []:
            if ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") == secret_name:
                return True
    return any((v.get("secret") or {}).get("secretName") == secret_name for v in pod.get("volumes") or [])


def _set_condition(conditions: list[dict[str, Any]], ctype: str, status: bool, reason: str, message: str) -> None:
    """apimachinery `meta.SetStatusCondition`: lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != value:
                cond["lastTransitionTime"] = _now()
            cond.update(status=value, reason=reason, message=message)
            return
    conditions.append({"type": ctype, "status": value, "reason": reason, "message": message,
                       "lastTransitionTime": _now()})


def _conditions_differ(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> bool:
    def strip(cs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in cs)

    return strip(new) != strip(old) or len(new) != len(old)


def as_store(kube_api: Any) -> KubeStore:
    """The object with get/list/put/patch: the fake API itself or its `store` attribute."""
    if all(callable(getattr(kube_api, m, None)) for m in ("get", "list", "put", "patch")):
        return kube_api  # type: ignore[no-any-return]
    return kube_api.store  # type: ignore[no-any-return]


def install_service_token(kube: KubeStore, token: str, *, name: str = "infisical-service-token",
                          namespace: str = "infisical-operator") -> None:
    """Write the service token into the Secret the reference InfisicalSecret points at."""
    current = kube.get("Secret", namespace, name)
    if current is None:
        kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                  "type": "Opaque", "data": {"infisicalToken": _b64(token)}})
    else:
        kube.patch("Secret", namespace, name, {"data": {"infisicalToken": _b64(token)}, "stringData": None})


@pytest.fixture
def infisical_operator(kube_api: Any, fake_infisical: FakeInfisical) -> Iterator[FakeInfisicalOperator]:
    """The operator loop over `kube_api`'s store, wired to `fake_infisical` with the reference key mapping.

    The fake's service token is installed in infisical-operator/infisical-service-token; the known
    Infisical cloud hosts map to the fake, any other `hostAPI` fails like an unknown host.
    """
    assert fake_infisical.seed is not None
    store = as_store(kube_api)
    install_service_token(store, fake_infisical.seed.service_token)
    operator = FakeInfisicalOperator(store, url_mapper(fake_infisical.url), interval=0.1,
                                     key_map=REFERENCE_KEY_MAP)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
