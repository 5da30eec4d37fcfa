"""``pods/exec`` over the WebSocket channel protocols (v5, v4, v1), running the command locally.

Framing: every binary message is one channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize) followed by
data; under v5 the client half-closes a channel with ``[255, channel]``. The exit status travels on channel 3
as a ``Status`` object (v4, v5) or as plain text (v1), then the server closes the connection.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from .runtime import rewrite_paths, runtime_of
from .state import ExecConfig, LabState
from .store import ApiError, Store

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
CHUNK = 64 * 1024
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp",
            "LANG": "C.UTF-8"}
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


@dataclass
class ExecRequest:
    namespace: str
    pod: str
    container: str
    command: list[str]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def pick_container(pod: dict[str, Any], container: str | None) -> str:
    """The named container, or the only one; else the error the real API server gives (exec and logs)."""
    name = pod["metadata"]["name"]
    names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    if not container:
        if len(names) != 1:
            raise _bad_request(f"a container name must be specified for pod {name}, "
                               f"choose one of: [{' '.join(names)}]")
        return names[0]
    if container not in names:
        raise _bad_request(f"container {container} is not valid for pod {name}")
    return container


def check_target(pod: dict[str, Any], container: str | None) -> str:
    """The container to use, or the error the real API server/kubelet gives for this pod."""
    name = pod["metadata"]["name"]
    container = pick_container(pod, container)
    if not (pod.get("spec") or {}).get("nodeName"):
        raise _bad_request(f"pod {name} does not have a host assigned")
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise _bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
    statuses = {cs.get("name"): cs for cs in (pod.get("status") or {}).get("containerStatuses") or []}
    running = "running" in (statuses.get(container, {}).get("state") or {})
    if phase != "Running" or not running:
        raise _bad_request(f'container not found ("{container}")')
    return container


def container_env(store: Store, pod: dict[str, Any], container: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it (literal values, Secret/ConfigMap keys)."""
    ns = pod["metadata"]["namespace"]
    spec: dict[str, Any] = next((c for c in pod["spec"].get("containers") or [] if c["name"] == container), {})
    env: dict[str, str] = {"HOSTNAME": pod["metadata"]["name"]}
    for var in spec.get("env") or []:
        source = var.get("valueFrom") or {}
        value: str | None = var.get("value")
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = store.get("Secret", ns, ref.get("name", ""))
            raw = ((secret or {}).get("data") or {}).get(ref.get("key", ""))
            value = base64.b64decode(raw).decode(errors="replace") if raw is not None else None
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            cm = store.get("ConfigMap", ns, ref.get("name", ""))
            value = ((cm or {}).get("data") or {}).get(ref.get("key", ""))
        elif "fieldRef" in source:
            path = source["fieldRef"].get("fieldPath", "")
            value = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": ns,
                     "status.podIP": (pod.get("status") or {}).get("podIP", ""),
                     "spec.nodeName": pod["spec"].get("nodeName", "")}.get(path)
        if value is not None:
            env[var["name"]] = value
    return env


def resolve_argv(command: list[str], env: dict[str, str], path_map: dict[str, str]) -> list[str] | None:
    """Map the in-container binary to a local one; ``None`` when nothing executable is found."""
    first = command[0]
    for inside, local in path_map.items():
        prefix = inside.rstrip("/") + "/"
        if first == inside:
            first = local
            break
        if first.startswith(prefix):
            first = local.rstrip("/") + "/" + first[len(prefix):]
            break
    if "/" not in first:
        found = shutil.which(first, path=env.get("PATH", os.defpath))
        if found is None:
            return None
        first = found
    elif not (os.path.isfile(first) and os.access(first, os.X_OK)):
        return None
    return [first, *command[1:]]


def _inside(state: LabState, pod: dict[str, Any], req: ExecRequest) -> tuple[dict[str, str], list[str]]:
    """The environment and argv a command gets in the container.

    Without a pod runtime: the env resolved from the store now. With one (lab/kube/runtime.py): the env the
    container started with, and the container's volume mount paths rewritten, in argv and env, to the local
    directories that hold the volume files, so scripts that read ``/opt/.../secrets/password`` work."""
    runtime = runtime_of(state.store)
    view = runtime.exec_view(req.namespace, req.pod, req.container) if runtime is not None else None
    if view is None:
        return {**BASE_ENV, **container_env(state.store, pod, req.container)}, list(req.command)
    env, mounts = view
    return {**BASE_ENV, **env}, [rewrite_paths(arg, mounts) for arg in req.command]


def _status(protocol: str, exit_code: int | None, error: str | None = None) -> bytes:
    if protocol == "channel.k8s.io":
        if error:
            return error.encode()
        return f"command terminated with non-zero exit code: exit status {exit_code}".encode() \
            if exit_code else b""
    if error:
        body: dict[str, Any] = {"metadata": {}, "status": "Failure", "message": error,
                                "reason": "InternalError", "code": 500}
    elif exit_code == 0:
        body = {"metadata": {}, "status": "Success"}
    else:
        body = {"metadata": {}, "status": "Failure",
                "message": f"command terminated with non-zero exit code: exit status {exit_code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}
    return json.dumps(body).encode()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Dropped(Exception):
    """The exec fault fired: the connection is to be cut without a status."""


async def serve(request: web.Request, state: LabState, req: ExecRequest, pod: dict[str, Any]) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=PROTOCOLS, compress=False, max_msg_size=0, timeout=5.0)
    await ws.prepare(request)
    protocol = ws.ws_protocol or "channel.k8s.io"
    send_lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        async with send_lock:
            await ws.send_bytes(bytes([channel]) + data)

    with state.lock:
        config = state.execs.get((req.namespace, req.pod), ExecConfig())
        fault = dict(state.exec_fault) if state.exec_fault else {}
    env, command = _inside(state, pod, req)
    env = {**env, **config.env}
    entry: dict[str, Any] = {"namespace": req.namespace, "pod": req.pod, "container": req.container,
                             "command": list(req.command), "exit_code": None}
    with state.lock:
        state.exec_log.append(entry)
    argv = resolve_argv(command, env, config.path_map)
    if argv is None:
        entry["exit_code"] = 127
        message = (f"Internal error occurred: error executing command in container: failed to exec in "
                   f"container: OCI runtime exec failed: exec failed: unable to start container process: "
                   f'exec: "{req.command[0]}": executable file not found in $PATH: unknown')
        await send(ERROR, _status(protocol, None, message))
        await ws.close()
        return ws

    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if req.stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if req.stdout or req.tty else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.STDOUT if req.tty else (
            asyncio.subprocess.PIPE if req.stderr else asyncio.subprocess.DEVNULL),
        env=env, cwd="/", start_new_session=True,
    )
    drop_after = fault.get("drop_after_bytes")
    sent = 0

    async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
        nonlocal sent
        if stream is None:
            return
        while chunk := await stream.read(CHUNK):
            if channel == STDOUT and drop_after is not None and sent + len(chunk) >= drop_after:
                head = chunk[: max(drop_after - sent, 0)]
                if head:
                    await send(channel, head)
                    sent += len(head)
                raise _Dropped
            await send(channel, chunk)
            if channel == STDOUT:
                sent += len(chunk)

    reader = asyncio.create_task(_read_client(ws, proc, protocol))
    try:
        try:
            await asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
            exit_code = await proc.wait()
        except _Dropped:
            _kill_group(proc)
            await _abort(request)
            entry["exit_code"] = None
            entry["dropped_after_bytes"] = sent
            return ws
        except (ConnectionError, RuntimeError):
            _kill_group(proc)
            return ws
        entry["exit_code"] = exit_code
        try:
            await send(ERROR, _status(protocol, exit_code))
            await ws.close()
        except (ConnectionError, RuntimeError):
            pass
        return ws
    finally:
        _kill_group(proc)
        reader.cancel()
        # Close the pipes now, before any await that a second cancellation could cut short: pipes left
        # open would be closed by the garbage collector after the loop is gone.
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()
        await asyncio.gather(reader, return_exceptions=True)
        await proc.wait()


async def _read_client(ws: web.WebSocketResponse, proc: asyncio.subprocess.Process, protocol: str) -> None:
    """Feed stdin; when the client goes away first, kill the command (no orphans)."""
    stdin = proc.stdin
    try:
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                data: bytes = msg.data
            elif msg.type is WSMsgType.TEXT:
                data = msg.data.encode() if isinstance(msg.data, str) else msg.data
            else:
                break
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and stdin is not None and payload:
                try:
                    stdin.write(payload)
                    await stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    stdin = None
            elif (channel == CLOSE and protocol == "v5.channel.k8s.io" and payload[:1] == bytes([STDIN])
                  and stdin is not None):
                stdin.close()
                stdin = None
    finally:
        if proc.returncode is None:
            _kill_group(proc)


async def _abort(request: web.Request) -> None:
    """Let what was sent reach the client, then cut the TCP connection without a close frame."""
    transport = request.transport
    if transport is None:
        return
    deadline = time.monotonic() + 2.0
    while transport.get_write_buffer_size() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    transport.abort()
