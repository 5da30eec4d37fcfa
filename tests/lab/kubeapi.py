"""A fake Kubernetes API server for the lab: in-memory objects behind real HTTP(S).

Real ``kubectl`` and the official ``kubernetes`` Python client work against it unchanged: discovery, CRUD with
merge/strategic/JSON patches and resourceVersion/uid preconditions, ``status``/``scale`` subresources,
server-side tables, watch (resumable from a resourceVersion, 410 Gone once compacted, bookmarks), Leases,
pod logs and ``pods/exec`` over the WebSocket channel protocols (the command runs locally, see
:meth:`FakeKubeAPI.set_exec`).
A tiny controller reacts to writes made through the API: scaling a Deployment or StatefulSet, or changing its
pod template (``kubectl rollout restart``), replaces pods and updates status; so do :meth:`FakeKubeAPI.put`
and :meth:`FakeKubeAPI.patch` (in-cluster actors such as the fake Infisical operator). Seeding and scenarios
write the store directly and describe the whole state themselves, so the controller leaves them alone.

Scenario files (``scenarios/NAME.yaml``) hold ``description:`` and ``objects:``, plain manifests each
merge-patched (RFC 7386) into the object of the same kind/namespace/name, or created when absent; an object
with ``$delete: true`` is deleted. Fake-only extras go under ``fake:``: ``logs`` (namespace, pod, container,
current, previous), ``forbid`` (verb, resource, namespace) and ``exec_fault``. Strings may hold ``${NAME}``
(a value from :func:`lab_values`), ``${NAME|urlencode}`` and ``${NOW}``/``${NOW-5m}`` (RFC 3339 times).
"""

from __future__ import annotations

import base64
import builtins
import copy
import re
import secrets
import ssl
import string
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import pytest
import yaml

from lab.kube.controller import react
from lab.kube.patch import merge_patch as _merge_patch
from lab.kube.server import KubeServer
from lab.kube.state import ExecConfig, LabState, PodLogs
from lab.kube.store import ApiError, Store

LAB_DIR = Path(__file__).resolve().parent
REFERENCE_MANIFESTS = LAB_DIR / "manifests" / "reference.yaml"
SCENARIOS_DIR = LAB_DIR / "scenarios"

CODER_POD = "coder-6c8d7f9b5d-x7k2p"
POSTGRES_POD = "coder-coder-postgresql-0"
INGRESS_POD = "ingress-nginx-controller-7d9f8c6b4f-q8v9w"

REFERENCE_LOGS: dict[tuple[str, str, str], str] = {
    ("coder", CODER_POD, "coder"): """\
Coder v2.25.0+a3b2f1c - Your Self-Hosted Remote Development Platform
Started HTTP listener at http://0.0.0.0:8080
Started Prometheus metrics endpoint at http://0.0.0.0:2112
Opening telemetry on https://telemetry.coder.com
View the Web UI: https://coder.xuperson.org

==> Logs will stream in below (press ctrl+c to gracefully exit):
2025-11-26 09:14:03.211 [info]  coderd: database migrations complete  version=308
2025-11-26 09:14:03.522 [info]  coderd.derp: started embedded DERP relay  region_id=999 region_code=coder
2025-11-26 09:14:04.002 [info]  coderd: started provisioner daemons  count=3
""",
    ("coder", POSTGRES_POD, "postgresql"): """\
postgresql 09:12:41.08 INFO  ==> ** Starting PostgreSQL setup **
postgresql 09:12:41.19 INFO  ==> ** PostgreSQL setup finished! **
postgresql 09:12:41.22 INFO  ==> ** Starting PostgreSQL **
2025-11-26 09:12:41.260 GMT [1] LOG:  starting PostgreSQL 15.10 on x86_64-pc-linux-gnu
2025-11-26 09:12:41.268 GMT [1] LOG:  listening on IPv4 address "0.0.0.0", port 5432
2025-11-26 09:12:41.301 GMT [1] LOG:  database system is ready to accept connections
""",
    ("ingress-nginx", INGRESS_POD, "controller"): """\
-------------------------------------------------------------------------------
NGINX Ingress controller
  Release:       v1.12.1
  Build:         51c2b819690bbf1709b844dbf321a9acf6eda5a7
  Repository:    https://github.com/kubernetes/ingress-nginx
  nginx version: nginx/1.25.5
-------------------------------------------------------------------------------
I1126 09:10:02.118812       7 main.go:205] "Creating API client" host="https://10.43.0.1:443"
I1126 09:10:03.344129       7 controller.go:213] "Backend successfully reloaded"
""",
}

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?:([+-])(\d+)([smhd]))?(?:\|([a-z]+))?\}")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _password(length: int = 24) -> str:
    """Random password that always holds ``/ ? # @ + =`` (characters a URL needs percent-encoded)."""
    alphabet = string.ascii_letters + string.digits
    chars = [secrets.choice(alphabet) for _ in range(length)] + list("/?#@+=")
    for i in range(len(chars) - 1, 0, -1):
        j = secrets.randbelow(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def database_url(password: str, host: str = "coder-coder-postgresql", query: str = "?sslmode=disable") -> str:
    return f"postgresql://coder:{quote(password, safe='')}@{host}:5432/coder{query}"


def lab_values(**overrides: str) -> dict[str, str]:
    """Fresh random secret values for one run; DATABASE_URL follows an overridden CODER_USER_PASSWORD."""
    values = {
        "POSTGRES_ADMIN_PASSWORD": _password(),
        "CODER_USER_PASSWORD": _password(),
        "INFISICAL_TOKEN": f"st.{secrets.token_hex(12)}.{secrets.token_hex(16)}.{secrets.token_hex(16)}",
    }
    values.update(overrides)
    values.setdefault("DATABASE_URL", database_url(values["CODER_USER_PASSWORD"]))
    return values


def substitute(node: Any, values: dict[str, str], *, now: datetime | None = None, origin: str = "") -> Any:
    """Replace ``${NAME}`` in every string of a parsed YAML tree.

    Also ``${NAME|urlencode}`` (percent-encode every reserved character) and ``${NOW}``, ``${NOW-5m}``,
    ``${NOW+1h}`` (RFC 3339 timestamps relative to the time of loading). An unknown name is an error.
    """
    moment = now or datetime.now(UTC)

    def replace(match: re.Match[str]) -> str:
        name, sign, amount, unit, filt = match.groups()
        if name == "NOW":
            delta = timedelta(**{_UNITS[unit]: int(amount)}) if amount else timedelta()
            return (moment - delta if sign == "-" else moment + delta).strftime("%Y-%m-%dT%H:%M:%SZ")
        if name not in values:
            raise KeyError(f"no value for ${{{name}}}{' in ' + origin if origin else ''}")
        value = values[name]
        if filt == "urlencode":
            return quote(value, safe="")
        if filt:
            raise ValueError(f"unknown placeholder filter {filt!r}{' in ' + origin if origin else ''}")
        return value

    if isinstance(node, str):
        return _PLACEHOLDER.sub(replace, node)
    if isinstance(node, list):
        return [substitute(v, values, now=moment, origin=origin) for v in node]
    if isinstance(node, dict):
        return {k: substitute(v, values, now=moment, origin=origin) for k, v in node.items()}
    return node


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PARSED: dict[tuple[Path, float], list[Any]] = {}


def _parse_all(path: Path) -> list[Any]:
    """Parsed documents of a YAML file, cached while the file is unchanged (callers must not mutate)."""
    path = Path(path).resolve()
    key = (path, path.stat().st_mtime)
    if key not in _PARSED:
        with open(path, encoding="utf-8") as handle:
            _PARSED[key] = list(yaml.load_all(handle, Loader=_YAML_LOADER))
    return _PARSED[key]


def load_manifests(path: Path, values: dict[str, str]) -> list[dict[str, Any]]:
    """Multi-document YAML (``kind: List`` documents are expanded), placeholders substituted."""
    docs: list[dict[str, Any]] = []
    for doc in _parse_all(path):
        if not doc:
            continue
        items = doc.get("items") or [] if doc.get("kind") == "List" else [doc]
        docs.extend(substitute(item, values, origin=str(path)) for item in items)
    return docs


def _scenario_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    return SCENARIOS_DIR / f"{name_or_path}.yaml"


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path, values: dict[str, str]) -> dict[str, Any]:
    path = _scenario_path(name_or_path)
    docs = _parse_all(path)
    return substitute(docs[0] if docs and docs[0] else {}, values, origin=str(path))


class FakeKubeAPI:
    """In-memory Kubernetes API on 127.0.0.1; every store method is thread-safe and returns deep copies."""

    def __init__(self, manifests: list[dict[str, Any]], *, tls: Any | None = None,
                 token: str = "lab-token") -> None:
        """``tls`` is a ``trustme.CA`` (or ``lab.tls.LabCA``): serve HTTPS with a certificate it issues."""
        self._state = LabState(store=Store(), token=token)
        for obj in manifests:
            self._state.store.put(obj)
        self._state.store.relink()
        self.tls = getattr(tls, "ca", tls) if tls is not None and not hasattr(tls, "issue_cert") else tls
        self.token = token
        self.url = ""
        self.values: dict[str, str] = {}
        self.kubeconfig_path: Path | None = None
        self.tls_minimum_version: ssl.TLSVersion | None = None
        """Set before start: refuse clients below it (an API server run with --tls-min-version)."""
        self._server: KubeServer | None = None

    @classmethod
    def reference(cls, values: dict[str, str] | None = None, *, tls: Any | None = None,
                  token: str = "lab-token") -> FakeKubeAPI:
        """The reference deployment: reference.yaml with ``values`` (fresh ones by default) and pod logs."""
        values = values if values is not None else lab_values()
        api = cls(load_manifests(REFERENCE_MANIFESTS, values), tls=tls, token=token)
        api.values = dict(values)
        for (ns, pod, container), text in REFERENCE_LOGS.items():
            api.set_logs(ns, pod, container, text)
        return api

    # lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            return
        context: ssl.SSLContext | None = None
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            if self.tls_minimum_version is not None:
                context.minimum_version = self.tls_minimum_version
            self.tls.issue_cert("127.0.0.1", "localhost", "::1").configure_cert(context)
        server = KubeServer(self._state, context)
        port = server.start()
        self._server = server
        self.url = f"{'https' if context else 'http'}://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path, *, context: str = "lab", namespace: str = "coder") -> Path:
        if not self.url:
            raise RuntimeError("start the fake Kubernetes API before writing a kubeconfig")
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.tls.cert_pem.bytes()).decode()
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": context, "user": {"token": self.token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context,
                                                       "namespace": namespace}}],
            "current-context": context,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        path.chmod(0o600)
        return path

    # store -----------------------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._state.store.get(kind, namespace, name)

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self._state.store.list(kind, namespace)

    def put(self, obj: dict[str, Any], *, reconcile: bool = True) -> dict[str, Any]:
        """Create or replace. Like a write through the API, a changed Deployment/StatefulSet spec runs the
        controller (pods replaced, status updated) unless ``reconcile=False``."""
        store = self._state.store
        kind, ns, name = store.key_of(obj)
        old = store.get(kind, ns or None, name)
        new = store.put(obj)
        if reconcile:
            react(store, old, new, self._state.pod_created)
        return new

    def patch(self, kind: str, namespace: str | None, name: str, merge_patch: dict[str, Any], *,
              reconcile: bool = True) -> dict[str, Any]:
        """RFC 7386 merge patch (controller as for :meth:`put`); :class:`KeyError` if the object is missing."""
        store = self._state.store
        old = store.get(kind, namespace, name)
        try:
            new = store.modify(kind, namespace, name, lambda cur: _merge_patch(cur, merge_patch))
        except ApiError as exc:
            raise KeyError(exc.message) from None
        if reconcile:
            react(store, old, new, self._state.pod_created)
        return new

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """Delete (cascading to owned objects); a missing object is not an error."""
        try:
            self._state.store.delete(kind, namespace, name)
        except ApiError:
            pass

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, base64-decoded."""
        secret = self.get("Secret", namespace, name)
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    def apply_scenario(self, name_or_path: str | Path, values: dict[str, str] | None = None) -> None:
        """Merge-patch a scenario's objects into the store (``$delete: true`` deletes), then its fake extras."""
        doc = load_scenario(name_or_path, values if values is not None else self.values)
        store = self._state.store
        for raw in doc.get("objects") or []:
            obj = copy.deepcopy(raw)
            remove = obj.pop("$delete", False)
            meta = obj.get("metadata") or {}
            kind, ns, name = obj["kind"], meta.get("namespace"), meta["name"]
            if remove:
                self.delete(kind, ns, name)
            elif store.get(kind, ns, name) is not None:
                store.modify(kind, ns, name, _patcher(obj))
            else:
                store.put(obj)
        store.relink()
        fake = doc.get("fake") or {}
        for entry in fake.get("logs") or []:
            self.set_logs(entry["namespace"], entry["pod"], entry["container"], entry.get("current", ""),
                          entry.get("previous"))
        for rule in fake.get("forbid") or []:
            self.forbid(rule["verb"], rule["resource"], rule.get("namespace"))
        if "exec_fault" in fake:
            self.exec_fault = fake["exec_fault"]

    # fake-only behaviour ---------------------------------------------------------------------------------

    def set_exec(self, namespace: str, pod: str, *, env: dict[str, str] | None = None,
                 path_map: dict[str, str] | None = None) -> None:
        """How commands "inside" the pod run here: extra environment, in-container path -> local path.

        The command runs as a local subprocess with a minimal environment, then the container's own ``env``
        (literal values and Secret/ConfigMap references resolved from the store), then ``env``. Its first word
        goes through ``path_map`` (exact path or directory prefix); a bare name is looked up in that PATH.
        """
        with self._state.lock:
            self._state.execs[(namespace, pod)] = ExecConfig(dict(env or {}), dict(path_map or {}))

    def set_logs(self, namespace: str, pod: str, container: str, current: str,
                 previous: str | None = None) -> None:
        with self._state.lock:
            self._state.logs[(namespace, pod, container)] = PodLogs(current, previous)

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """Deny ``verb`` on ``resource`` (``pods``, ``pods/exec``, ``*``) like RBAC does, with a 403."""
        with self._state.lock:
            self._state.forbidden.append((verb, resource, namespace))

    def allow_all(self) -> None:
        with self._state.lock:
            self._state.forbidden.clear()
            self._state.grants = None

    def grant_only(self, roles: builtins.list[dict[str, Any]]) -> None:
        """Deny everything but what these Role/ClusterRole manifests allow (like RBAC for one user)."""
        grants = []
        for role in roles:
            if role.get("kind") not in ("Role", "ClusterRole"):
                continue
            ns = (role.get("metadata") or {}).get("namespace") if role["kind"] == "Role" else None
            grants += [(ns, rule) for rule in role.get("rules") or []]
        with self._state.lock:
            self._state.grants = grants

    def compact_watch_history(self, *, end_watches: bool = True) -> None:
        """Like an etcd compaction: a watch resuming from any resourceVersion handed out so far gets 410 Gone.
        ``end_watches`` also ends the open watch streams, so that their clients must resume now."""
        self._state.store.compact()
        if end_watches and self._server is not None:
            self._server.end_watches()

    def end_watches(self) -> None:
        """End the open watch streams (as an API server restart would); clients resume where they were."""
        if self._server is not None:
            self._server.end_watches()

    def send_watch_bookmarks(self) -> None:
        if self._server is not None:
            self._server.bookmark()

    @property
    def watch_expired_http(self) -> bool:
        """Answer a watch from a compacted resourceVersion with HTTP 410 instead of an ERROR event."""
        return self._state.watch_expired_http

    @watch_expired_http.setter
    def watch_expired_http(self, value: bool) -> None:
        self._state.watch_expired_http = value

    @property
    def exec_fault(self) -> dict[str, Any] | None:
        return self._state.exec_fault

    @exec_fault.setter
    def exec_fault(self, value: dict[str, Any] | None) -> None:
        self._state.exec_fault = value

    @property
    def exec_log(self) -> builtins.list[dict[str, Any]]:
        return self._state.exec_log

    @property
    def request_log(self) -> builtins.list[tuple[str, str]]:
        return self._state.request_log


def _patcher(patch: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda current: _merge_patch(current, patch)


def _lab_ca(request: pytest.FixtureRequest) -> Any:
    """The session CA from ``lab.tls`` when it is available, else a CA of our own."""
    try:
        return request.getfixturevalue("lab_ca")
    except pytest.FixtureLookupError:
        import trustme

        return trustme.CA()


@pytest.fixture
def kube_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubeAPI]:
    """The reference deployment over HTTPS, with ``.kubeconfig_path`` and the secret ``.values``."""
    api = FakeKubeAPI.reference(tls=_lab_ca(request))
    with api:
        api.kubeconfig_path = api.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
        yield api
