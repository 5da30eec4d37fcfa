"""An opt-in kubelet and controller manager for the fake cluster: pods that start, log in, crash and roll out.

Attached to a :class:`~lab.kubeapi.FakeKubeAPI` (``PodRuntime(...).attach(api)`` or ``lab.enable_runtime()``),
it takes over from the synchronous controller (lab/kube/controller.py): every write to a Deployment or
StatefulSet is reconciled step by step (lab/kube/rollout.py) on a short tick, and the pods it creates go
through Pending, Running, Ready -- or crash into CrashLoopBackOff with a growing restartCount.

What a container sees is fixed when it starts, as in a cluster: its environment (``env`` with ``value``,
``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``, ``$(VAR)`` expansion, and ``envFrom``) is resolved
then and kept, so exec'd commands get the start-time values even after the Secret changed. A container that
restarts (crash loop) is a new container: it gets the values of that moment, as in a cluster. Secret and ConfigMap
volumes are real files in a temporary directory, refreshed ``volume_delay`` seconds after the object changed
(the kubelet's sync period); exec'd commands see them at the mounted path's place (the path is rewritten in
argv and in the environment).

A container whose environment holds ``CODER_PG_CONNECTION_URL`` is a Coder server: it logs in to PostgreSQL
with that URL (lab/kube/coder_login.py), the URL's host resolved through the fake's Services to ``backends``.
It retries for ``login_retry`` seconds (Coder: 30 s), then exits 1 with Coder's log lines. Other containers
become Ready one tick after they start. Tests can script failures: :meth:`crash_next`, :meth:`never_ready`.

Pods that exist when the runtime is attached keep the status they have; Running ones get their environment
resolved at that moment. Only workloads written after attaching are reconciled.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import random
import re
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from . import coder_login
from .controller import NODE_NAME, attach_kubelet, detach_kubelet, kubelet_of
from .rollout import DeploymentController, StatefulSetController, pod_ready, record_event
from .state import LabState, PodLogs
from .store import Store, now_rfc3339

if TYPE_CHECKING:
    from lab.kubeapi import FakeKubeAPI

CODER_URL_VAR = "CODER_PG_CONNECTION_URL"
CLUSTER_DNS = "10.43.0.10:53"
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class ContainerConfigError(Exception):
    """The container cannot be created (a referenced Secret or key is missing): CreateContainerConfigError."""


@dataclass
class Script:
    """A scripted failure for the next ``count`` new pods whose name starts with ``prefix``."""

    count: int
    prefix: str
    crash: bool
    exit_code: int = 1
    log: str = ""


@dataclass
class Volume:
    namespace: str
    name: str
    kind: str  # "Secret" or "ConfigMap"
    source: str
    items: list[dict[str, Any]] | None
    optional: bool
    directory: Path
    content: dict[str, bytes] = field(default_factory=dict)
    pending_since: float | None = None


@dataclass
class PodRun:
    """The kubelet's view of one pod. ``stage``: pending, starting (Coder logging in), running (not yet Ready),
    ready, crashing (scripted), backoff (CrashLoopBackOff), foreign (status left to the scenario)."""

    namespace: str
    name: str
    uid: str
    stage: str
    due: float = 0.0
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    volumes: dict[str, Volume] = field(default_factory=dict)
    mounts: dict[str, dict[str, str]] = field(default_factory=dict)
    restarts: int = 0
    run: int = 0
    started_at: str = ""
    log: list[str] = field(default_factory=list)
    crash: Script | None = None
    unready: bool = False


class PodRuntime:
    def __init__(self, *, tick: float = 0.05, volume_delay: float = 2.0, login_retry: float = 1.0,
                 login_interval: float = 0.25, restart_backoff: float = 0.2, progress_deadline: float | None = None,
                 backends: dict[str, tuple[str, int]] | None = None) -> None:
        """``backends``: ``"namespace/service"`` -> the local (host, port) that Service's ports lead to.
        ``progress_deadline`` (seconds) replaces every Deployment's progressDeadlineSeconds when set."""
        self.tick = tick
        self.volume_delay = volume_delay
        self.login_retry = login_retry
        self.login_interval = login_interval
        self.restart_backoff = restart_backoff
        self.backends = dict(backends or {})
        self.progress_deadline = progress_deadline
        self.errors: list[str] = []
        self.pods: dict[tuple[str, str], PodRun] = {}
        self._scripts: list[Script] = []
        self._unready_names: set[str] = set()
        self._workloads: set[tuple[str, str, str]] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logins: list[threading.Thread] = []
        self._state: LabState | None = None
        self._root: Path | None = None
        self._deployments: DeploymentController | None = None
        self._statefulsets: StatefulSetController | None = None

    # lifecycle -------------------------------------------------------------------------------------------

    def attach(self, api: FakeKubeAPI) -> Self:
        state: LabState = api._state
        if kubelet_of(state.store) is not None:
            raise RuntimeError("a pod runtime is already attached to this fake API")
        self._state = state
        self._root = Path(tempfile.mkdtemp(prefix="lab-kubelet-"))
        self._deployments = DeploymentController(state.store, self._pod_created, self.progress_deadline)
        self._statefulsets = StatefulSetController(state.store, self._pod_created)
        with self._lock:
            for pod in state.store.list("Pod"):
                self._adopt(pod)
            for sts in state.store.list("StatefulSet"):
                self._statefulsets.revision(sts)
        attach_kubelet(state.store, self)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="lab-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for thread in self._logins:
            thread.join(10)
        self._logins.clear()
        if self._state is not None:
            detach_kubelet(self._state.store, self)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def store(self) -> Store:
        if self._state is None:
            raise RuntimeError("the pod runtime is not attached")
        return self._state.store

    # scripting and introspection -------------------------------------------------------------------------

    def crash_next(self, count: int = 1, *, prefix: str = "", exit_code: int = 1,
                   log: str = "panic: scripted crash") -> None:
        """The next ``count`` pods created whose name starts with ``prefix`` exit right after starting."""
        with self._lock:
            self._scripts.append(Script(count, prefix, True, exit_code, log))

    def never_ready(self, pod: str | None = None, *, count: int = 1, prefix: str = "") -> None:
        """Pod ``pod`` (or the next ``count`` new pods named ``prefix...``) runs but never becomes Ready."""
        with self._lock:
            if pod is not None:
                self._unready_names.add(pod)
                run = next((r for r in self.pods.values() if r.name == pod), None)
                if run is not None:
                    run.unready = True
            else:
                self._scripts.append(Script(count, prefix, False))

    def env_of(self, namespace: str, pod: str, container: str) -> dict[str, str] | None:
        """The environment the container started with (None when it has not started under this runtime)."""
        with self._lock:
            run = self.pods.get((namespace, pod))
            return dict(run.env[container]) if run is not None and container in run.env else None

    def mounts_of(self, namespace: str, pod: str, container: str) -> dict[str, str]:
        """In-container mount path -> local directory (or file, for subPath) for the container's volumes."""
        with self._lock:
            run = self.pods.get((namespace, pod))
            return dict(run.mounts.get(container, {})) if run is not None else {}

    def exec_view(self, namespace: str, pod: str, container: str) -> tuple[dict[str, str], dict[str, str]] | None:
        """(start-time env with mount paths rewritten, mount map) for an exec into the container."""
        env = self.env_of(namespace, pod, container)
        if env is None:
            return None
        mounts = self.mounts_of(namespace, pod, container)
        return {k: rewrite_paths(v, mounts) for k, v in env.items()}, mounts

    # the controllers' hook -------------------------------------------------------------------------------

    def workload_changed(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._workloads.add((kind, namespace, name))
            self._sync_workload(kind, namespace, name)

    # the loop --------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.step()
            except Exception:  # noqa: BLE001 -- kept for the test to see; the loop must go on
                self.errors.append(traceback.format_exc())

    def step(self) -> None:
        """One tick: advance every pod, sync volumes, then reconcile the workloads written since attaching."""
        with self._lock:
            now = time.monotonic()
            live = {}
            for pod in self.store.list("Pod"):
                key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
                live[key] = pod
                run = self.pods.get(key)
                if run is None or run.uid != pod["metadata"]["uid"]:
                    run = self._adopt(pod, found=True)
                self._advance(run, pod, now)
                self._sync_volumes(run, now)
            for key in set(self.pods) - set(live):
                self._forget(self.pods.pop(key))
            for kind, ns, name in sorted(self._workloads):
                self._sync_workload(kind, ns, name)

    def _sync_workload(self, kind: str, namespace: str, name: str) -> None:
        assert self._deployments is not None and self._statefulsets is not None
        if kind == "Deployment":
            self._deployments.sync(namespace, name)
        elif kind == "StatefulSet":
            self._statefulsets.sync(namespace, name)

    # pods ------------------------------------------------------------------------------------------------

    def _pod_created(self, pod: dict[str, Any]) -> None:
        with self._lock:
            run = self._adopt(pod, created=True)
            name = run.name
            for script in self._scripts:
                if script.count > 0 and name.startswith(script.prefix):
                    script.count -= 1
                    if script.crash:
                        run.crash = script
                    else:
                        run.unready = True
                    break
            self._scripts = [s for s in self._scripts if s.count > 0]

    def _adopt(self, pod: dict[str, Any], *, created: bool = False, found: bool = False) -> PodRun:
        """Track a pod: one a controller just ``created`` is started on the next tick; one ``found`` in the
        store as a bare API create leaves it (no status yet) is too; Running and Ready ones stay Ready; any
        other (a scenario's Pending or crash-looping pod) keeps the status it was given."""
        meta, status = pod["metadata"], pod.get("status") or {}
        key = (meta["namespace"], meta["name"])
        bare = status.get("phase", "Pending") == "Pending" and not status.get("conditions") \
            and not status.get("containerStatuses")
        if status.get("phase") == "Running" and pod_ready(pod):
            stage = "ready"
        elif created or (found and bare):
            stage = "pending"
        else:
            stage = "foreign"
        run = PodRun(meta["namespace"], meta["name"], meta["uid"], stage, due=time.monotonic() + self.tick)
        run.unready = meta["name"] in self._unready_names
        old = self.pods.get(key)
        if old is not None:
            self._forget(old)
        self.pods[key] = run
        if stage != "pending":
            try:
                self._resolve(run, pod, strict=False)
            except ContainerConfigError:
                pass
        return run

    def _forget(self, run: PodRun) -> None:
        if self._root is not None:
            shutil.rmtree(self._root / run.namespace / run.name, ignore_errors=True)

    def _advance(self, run: PodRun, pod: dict[str, Any], now: float) -> None:
        if run.stage == "ready" and run.unready and pod_ready(pod):
            self._write_status(run, ready=False)
        if now < run.due:
            return
        if run.stage in ("pending", "backoff"):
            self._start(run, pod)
        elif run.stage == "crashing" and run.crash is not None:
            self._crash(run, run.crash.exit_code)
        elif run.stage == "running" and not run.unready:
            run.stage = "ready"
            self._write_status(run, ready=True)

    def _start(self, run: PodRun, pod: dict[str, Any]) -> None:
        try:
            self._resolve(run, pod, strict=True)
        except ContainerConfigError as exc:
            run.due = time.monotonic() + self.restart_backoff
            self._write_waiting(run, "CreateContainerConfigError", str(exc))
            self._event(run, "Failed", f"Error: {exc}", warning=True)
            return
        run.run += 1
        run.started_at = now_rfc3339()
        run.log = []
        spec_containers = (pod.get("spec") or {}).get("containers") or []
        url = next((env[CODER_URL_VAR] for env in run.env.values() if CODER_URL_VAR in env), None)
        image = next((c.get("image", "") for c in spec_containers), "")
        self._write_status(run, ready=False, running=True)
        for container in spec_containers:
            self._event(run, "Pulled", f'Container image "{container.get("image", "")}" already present on machine',
                        container=container["name"])
            self._event(run, "Created", f"Created container: {container['name']}", container=container["name"])
            self._event(run, "Started", f"Started container {container['name']}", container=container["name"])
        if run.crash is not None:
            run.stage, run.due = "crashing", time.monotonic() + self.tick
            run.log = run.crash.log.splitlines()
            self._publish_logs(run)
        elif url is not None:
            run.stage = "starting"
            run.log = coder_login.banner(image)
            self._publish_logs(run)
            thread = threading.Thread(target=self._coder_start, args=(run, run.run, url), daemon=True,
                                      name=f"lab-coder-{run.name}")
            self._logins = [t for t in self._logins if t.is_alive()] + [thread]
            thread.start()
        else:
            run.stage, run.due = "running", time.monotonic() + self.tick

    def _crash(self, run: PodRun, exit_code: int) -> None:
        run.restarts += 1
        finished = now_rfc3339()
        delay = self.restart_backoff * 2 ** min(run.restarts - 1, 5)
        run.stage, run.due = "backoff", time.monotonic() + delay
        seconds = min(10 * 2 ** (run.restarts - 1), 300)  # what the kubelet would wait: 10 s doubling to 5 min
        shown = f"{seconds // 60}m{seconds % 60}s".removeprefix("0m")
        text = "\n".join(run.log) + ("\n" if run.log else "")
        assert self._state is not None
        with self._state.lock:
            for container in run.env:
                self._state.logs[(run.namespace, run.name, container)] = PodLogs(text, text)
        terminated = {"exitCode": exit_code, "reason": "Error", "startedAt": run.started_at,
                      "finishedAt": finished, "containerID": _container_id(run)}

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            status = obj.setdefault("status", {})
            for cs in status.get("containerStatuses") or []:
                cs.update({"ready": False, "started": False, "restartCount": run.restarts,
                           "lastState": {"terminated": dict(terminated)},
                           "state": {"waiting": {"reason": "CrashLoopBackOff",
                                                 "message": f"back-off {shown} restarting failed container="
                                                            f"{cs['name']} pod={run.name}_{run.namespace}"}}})
            _set_ready_conditions(status, False, [cs["name"] for cs in status.get("containerStatuses") or []])
            return obj

        self._modify_pod(run, change)
        for container in run.env:
            self._event(run, "BackOff", f"Back-off restarting failed container {container} in pod "
                                        f"{run.name}_{run.namespace}", container=container, warning=True)

    def _coder_start(self, run: PodRun, number: int, url: str) -> None:
        """The Coder server's first seconds, in its own thread: log in (retrying), then Ready or exit 1."""
        deadline = time.monotonic() + self.login_retry
        attempt = 0
        while True:
            attempt += 1
            try:
                coder_login.login(url, lambda host, port: self._dial(run.namespace, host, port),
                                  timeout=min(2.0, max(self.login_retry, 1.0)))
            except coder_login.PqError as exc:
                error = str(exc)
            else:
                self._login_done(run, number, coder_login.started_lines(), ok=True)
                return
            if not self._append_log(run, number, [coder_login.retry_line(error, attempt)]):
                return
            if time.monotonic() + self.login_interval > deadline or self._stop.wait(self.login_interval):
                break
        self._login_done(run, number, coder_login.failed_lines(error, attempt), ok=False)

    def _append_log(self, run: PodRun, number: int, lines: list[str]) -> bool:
        with self._lock:
            if self.pods.get((run.namespace, run.name)) is not run or run.run != number or self._stop.is_set():
                return False
            run.log.extend(lines)
            self._publish_logs(run)
            return True

    def _login_done(self, run: PodRun, number: int, lines: list[str], *, ok: bool) -> None:
        with self._lock:
            if not self._append_log(run, number, lines) or run.stage != "starting":
                return
            if not ok:
                self._crash(run, 1)
            elif run.unready:
                run.stage = "running"
            else:
                run.stage = "ready"
                self._write_status(run, ready=True)

    def _dial(self, namespace: str, host: str, port: int) -> tuple[str, int] | str:
        """Cluster DNS and kube-proxy: a Service name (short or qualified) or ClusterIP -> its backend."""
        services = self.store.list("Service")
        svc: dict[str, Any] | None = None
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host) or ":" in host:
            svc = next((s for s in services if (s.get("spec") or {}).get("clusterIP") == host), None)
            if svc is None:
                return f"dial tcp {host}:{port}: i/o timeout"
        else:
            parts = host.rstrip(".").split(".")
            ns = parts[1] if len(parts) > 1 else namespace
            if parts[2:] in ([], ["svc"], ["svc", "cluster", "local"]):
                svc = next((s for s in services if s["metadata"]["name"] == parts[0]
                            and s["metadata"]["namespace"] == ns), None)
            if svc is None:
                return f"dial tcp: lookup {host} on {CLUSTER_DNS}: no such host"
        spec = svc.get("spec") or {}
        address = spec.get("clusterIP") or host
        ports = [int(p.get("port", 0)) for p in spec.get("ports") or []]
        backend = self.backends.get(f"{svc['metadata']['namespace']}/{svc['metadata']['name']}")
        if port not in ports or backend is None:
            return f"dial tcp {address}:{port}: connect: connection refused"
        return backend

    # status writes -----------------------------------------------------------------------------------------

    def _modify_pod(self, run: PodRun, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        current = self.store.get("Pod", run.namespace, run.name)
        if current is None or current["metadata"]["uid"] != run.uid:
            return
        wanted = change(copy.deepcopy(current))
        if wanted != current:
            self.store.modify("Pod", run.namespace, run.name, lambda _obj: wanted)

    def _event(self, run: PodRun, reason: str, message: str, *, container: str | None = None,
               warning: bool = False) -> None:
        pod = self.store.get("Pod", run.namespace, run.name)
        if pod is not None and pod["metadata"]["uid"] == run.uid:
            record_event(self.store, pod, reason, message, warning=warning, component="kubelet",
                         fieldpath=f"spec.containers{{{container}}}" if container else None)

    def _write_status(self, run: PodRun, *, ready: bool, running: bool = False) -> None:
        def change(obj: dict[str, Any]) -> dict[str, Any]:
            status = obj.setdefault("status", {})
            if running:
                _schedule(obj)
                status["phase"] = "Running"
                if not status.get("podIP"):
                    ip = f"10.42.0.{random.randint(20, 250)}"
                    status.update({"podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.80.10",
                                   "hostIPs": [{"ip": "192.168.80.10"}]})
                for cond in status.get("conditions") or []:
                    if cond.get("type") == "PodReadyToStartContainers":
                        cond["status"] = "True"
                for cs in status.get("containerStatuses") or []:
                    image = cs.get("image", "")
                    cs.update({"state": {"running": {"startedAt": run.started_at}}, "started": True,
                               "containerID": _container_id(run), "restartCount": run.restarts,
                               "imageID": f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"})
            for cs in status.get("containerStatuses") or []:
                cs["ready"] = ready
            _set_ready_conditions(status, ready, [cs["name"] for cs in status.get("containerStatuses") or []])
            return obj

        self._modify_pod(run, change)

    def _write_waiting(self, run: PodRun, reason: str, message: str) -> None:
        def change(obj: dict[str, Any]) -> dict[str, Any]:
            for cs in (obj.get("status") or {}).get("containerStatuses") or []:
                cs["state"] = {"waiting": {"reason": reason, "message": message}}
            return obj

        self._modify_pod(run, change)

    def _publish_logs(self, run: PodRun) -> None:
        assert self._state is not None
        text = "\n".join(run.log) + ("\n" if run.log else "")
        with self._state.lock:
            for container in run.env:
                key = (run.namespace, run.name, container)
                old = self._state.logs.get(key)
                previous = old.previous if old is not None and run.restarts else None
                self._state.logs[key] = PodLogs(text, previous)

    # environment and volumes -----------------------------------------------------------------------------

    def _resolve(self, run: PodRun, pod: dict[str, Any], *, strict: bool) -> None:
        """Fix each container's environment and mount its volumes (first mount: content as of now)."""
        spec = pod.get("spec") or {}
        env: dict[str, dict[str, str]] = {}
        for container in spec.get("containers") or []:
            env[container["name"]] = container_env(self.store, pod, container, strict=strict)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        assert self._root is not None
        for name, vol in volumes.items():
            kind, source, items, optional = _volume_source(vol)
            if kind is None or name in run.volumes:
                continue
            directory = self._root / run.namespace / run.name / name
            volume = Volume(run.namespace, name, kind, source, items, optional, directory)
            content = self._volume_content(volume)
            if content is None:
                if strict:
                    raise ContainerConfigError(f'{kind.lower()} "{source}" not found')
                content = {}
            _write_files(directory, content)
            volume.content = content
            run.volumes[name] = volume
        mounts: dict[str, dict[str, str]] = {}
        for container in spec.get("containers") or []:
            table: dict[str, str] = {}
            for mount in container.get("volumeMounts") or []:
                mounted = run.volumes.get(mount.get("name", ""))
                if mounted is None:
                    continue
                if mount.get("subPath"):
                    frozen = self._root / run.namespace / run.name / ".subpath" / container["name"] / mount["name"]
                    frozen.parent.mkdir(parents=True, exist_ok=True)
                    frozen.write_bytes(mounted.content.get(mount["subPath"], b""))
                    table[mount["mountPath"]] = str(frozen)
                else:
                    table[mount["mountPath"]] = str(mounted.directory)
            mounts[container["name"]] = table
        run.env, run.mounts = env, mounts

    def _volume_content(self, volume: Volume) -> dict[str, bytes] | None:
        obj = self.store.get(volume.kind, volume.namespace, volume.source)
        if obj is None:
            return {} if volume.optional else None
        if volume.kind == "Secret":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        if volume.items is None:
            return data
        return {item.get("path") or item["key"]: data[item["key"]] for item in volume.items if item.get("key") in data}

    def _sync_volumes(self, run: PodRun, now: float) -> None:
        if run.stage == "pending":
            return
        for volume in run.volumes.values():
            wanted = self._volume_content(volume)
            if wanted is None or wanted == volume.content:
                volume.pending_since = None
                continue
            if volume.pending_since is None:
                volume.pending_since = now
            if now - volume.pending_since >= self.volume_delay:
                _write_files(volume.directory, wanted)
                volume.content = wanted
                volume.pending_since = None


def container_env(store: Store, pod: dict[str, Any], container: dict[str, Any], *, strict: bool) -> dict[str, str]:
    """The environment the kubelet builds when it creates the container: envFrom first, then env, with
    ``$(VAR)`` references to earlier variables expanded. Missing references fail when ``strict``."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {"HOSTNAME": pod["metadata"]["name"]}

    def source(kind: str, name: str, optional: bool) -> dict[str, str] | None:
        obj = store.get(kind, ns, name)
        if obj is None:
            if strict and not optional:
                raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
            return None
        data = obj.get("data") or {}
        if kind == "Secret":
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        return {k: str(v) for k, v in data.items()}

    for ref in container.get("envFrom") or []:
        for key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
            if key in ref:
                values = source(kind, ref[key].get("name", ""), bool(ref[key].get("optional")))
                for name, item in (values or {}).items():
                    env[ref.get("prefix", "") + name] = item
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        value: str | None
        if "value" in var or not value_from:
            value = _expand(str(var.get("value", "")), env)
        elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
            kind, ref = ("Secret", value_from["secretKeyRef"]) if "secretKeyRef" in value_from \
                else ("ConfigMap", value_from["configMapKeyRef"])
            values = source(kind, ref.get("name", ""), bool(ref.get("optional")))
            value = (values or {}).get(ref.get("key", ""))
            if value is None and values is not None and strict and not ref.get("optional"):
                raise ContainerConfigError(f"couldn't find key {ref.get('key')} in {kind} {ns}/{ref.get('name')}")
        elif "fieldRef" in value_from:
            path = value_from["fieldRef"].get("fieldPath", "")
            value = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": ns,
                     "metadata.uid": pod["metadata"].get("uid", ""),
                     "status.podIP": (pod.get("status") or {}).get("podIP", ""),
                     "spec.nodeName": (pod.get("spec") or {}).get("nodeName", ""),
                     "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "")}.get(path)
        else:
            value = None
        if value is not None:
            env[var["name"]] = value
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, value)


def rewrite_paths(text: str, mounts: dict[str, str]) -> str:
    """Every in-container mount path in ``text`` (a whole path component) replaced by its local place."""
    for inside in sorted(mounts, key=len, reverse=True):
        pattern = r"(?<![\w./])" + re.escape(inside.rstrip("/")) + r"(?![\w.-])"
        text = re.sub(pattern, mounts[inside].replace("\\", "\\\\"), text)
    return text


def _volume_source(vol: dict[str, Any]) -> tuple[str | None, str, list[dict[str, Any]] | None, bool]:
    if "secret" in vol:
        src = vol["secret"] or {}
        return "Secret", src.get("secretName", ""), src.get("items"), bool(src.get("optional"))
    if "configMap" in vol:
        src = vol["configMap"] or {}
        return "ConfigMap", src.get("name", ""), src.get("items"), bool(src.get("optional"))
    return None, "", None, False


def _write_files(directory: Path, content: dict[str, bytes]) -> None:
    """Replace the directory's files atomically one by one; keys gone from the object disappear."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.iterdir():
        if stale.name not in content and stale.is_file():
            stale.unlink()
    for name, data in content.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)


def _schedule(pod: dict[str, Any]) -> None:
    """What the scheduler and kubelet fill in for a pod created bare through the API."""
    spec, status = pod.setdefault("spec", {}), pod.setdefault("status", {})
    spec.setdefault("nodeName", NODE_NAME)
    now = now_rfc3339()
    if not status.get("conditions"):
        status["conditions"] = [{"type": t, "status": "True" if t in ("Initialized", "PodScheduled") else "False",
                                 "lastProbeTime": None, "lastTransitionTime": now}
                                for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                                          "PodScheduled")]
    if not status.get("containerStatuses"):
        status["containerStatuses"] = [{"name": c["name"], "image": c.get("image", ""), "ready": False,
                                        "restartCount": 0, "state": {}, "lastState": {}}
                                       for c in spec.get("containers") or []]
    status.setdefault("startTime", now)
    status.setdefault("qosClass", "BestEffort")


def _set_ready_conditions(status: dict[str, Any], ready: bool, containers: list[str]) -> None:
    now = now_rfc3339()
    for cond in status.get("conditions") or []:
        if cond.get("type") not in ("Ready", "ContainersReady"):
            continue
        wanted = "True" if ready else "False"
        if cond.get("status") != wanted:
            cond["lastTransitionTime"] = now
        cond["status"] = wanted
        if ready:
            cond.pop("reason", None)
            cond.pop("message", None)
        else:
            cond["reason"] = "ContainersNotReady"
            cond["message"] = f"containers with unready status: [{' '.join(containers)}]"


def _container_id(run: PodRun) -> str:
    return "containerd://" + hashlib.sha256(f"{run.uid}/{run.run}".encode()).hexdigest()


def runtime_of(store: Store) -> PodRuntime | None:
    kubelet = kubelet_of(store)
    return kubelet if isinstance(kubelet, PodRuntime) else None
