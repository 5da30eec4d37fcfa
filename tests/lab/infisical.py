"""A fake Infisical API server for the lab: real HTTP on loopback, shaped like the real backend.

It answers the endpoints the official Python SDK (`infisicalsdk`), the Infisical Kubernetes operator and
coderctl call: universal-auth login and token renewal, service-token details, project lookup by slug, and
the v3 raw / v4 secret routes with versions. Errors use the real error handler's body
`{reqId, statusCode, message, error}`. Knobs on the instance inject the failures operators meet:
approval policies, rate limiting, failing writes, expired tokens, latency.

The server runs aiohttp on its own event loop in a daemon thread; state is guarded by one lock so tests
can change knobs and secrets from the test thread while requests are in flight.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import re
import secrets as _secrets
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Self
from urllib.parse import quote

import pytest
from aiohttp import web

TOKEN_EXPIRED_MESSAGE = "Your token has expired. Please re-authenticate."
TOKEN_MALFORMED_MESSAGE = (
    "The provided access token is malformed. Please use a valid token or generate a new one and try again."
)
HIDDEN_VALUE_MASK = "<hidden-by-infisical>"
REFERENCE_SECRET_NAMES = ("CODER_POSTGRES_ADMIN_PASSWORD", "CODER_USER_PASSWORD", "CODER_DATABASE_URL")
REFERENCE_DB_HOST = "coder-coder-postgresql"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoggedRequest(NamedTuple):
    """One request the fake answered. Never carries bodies or query strings, so no secret values."""

    method: str
    path: str
    status: int


@dataclass
class ApprovalPolicy:
    """A change policy (Infisical's "secret approval policy") on an environment and a path glob."""

    id: str
    name: str
    environment: str
    path: str

    def covers(self, environment: str, path: str) -> bool:
        return environment == self.environment and fnmatch.fnmatchcase(path, self.path)


@dataclass
class PendingApproval:
    """A change held back by an approval policy; `FakeInfisical.merge_approval` applies it."""

    id: str
    slug: str
    method: str
    environment: str
    path: str
    name: str
    value: str | None
    new_name: str | None = None
    policy_id: str = ""
    policy_name: str = ""


@dataclass
class InfisicalSeed:
    """What the `fake_infisical` fixture put into the fake: the reference secrets and credentials."""

    values: dict[str, str]
    service_token: str
    client_id: str
    client_secret: str


@dataclass
class _Version:
    value: str
    comment: str
    created_at: str


@dataclass
class _Secret:
    id: str
    key: str
    environment: str
    path: str
    created_at: str
    versions: list[_Version] = field(default_factory=list)


@dataclass
class _ServiceToken:
    id: str
    secret: str
    name: str
    environment: str
    path: str
    created_at: str


@dataclass
class _AccessToken:
    identity_id: str
    client_id: str
    expires_at: float
    revoked_expired: bool = False


@dataclass
class _Actor:
    kind: str  # "service" or "identity"
    service_token: _ServiceToken | None = None


class _ApiError(Exception):
    def __init__(self, status: int, error: str, message: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(message))
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """JSON as fastify sends it: compact separators."""
    return web.json_response(body, status=status, headers=headers,
                             dumps=lambda o: json.dumps(o, separators=(",", ":")))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _normalize_path(path: str | None) -> str:
    """The server's `removeTrailingSlash`: "/a/b/" -> "/a/b", "/" stays "/"."""
    path = (path or "/").strip() or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


def _normalize_value(value: str) -> str:
    """The v3/v4 routes trim values but keep one trailing newline (zod transform in secret-router.ts)."""
    return f"{value.strip()}\n" if value.endswith("\n") else value.strip()


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value.lower() == "true"


def _random_password() -> str:
    """Like `openssl rand -base64 32` in the seed runbook: may contain `/`, `+` and `=`."""
    return base64.b64encode(_secrets.token_bytes(24)).decode()


def reference_database_url(user_password: str, host: str = REFERENCE_DB_HOST, port: int = 5432) -> str:
    """The CODER_DATABASE_URL of the reference deployment, password percent-encoded as Coder requires."""
    return f"postgresql://coder:{quote(user_password, safe='')}@{host}:{port}/coder?sslmode=disable"


def reference_values(values: Mapping[str, str] | None = None) -> dict[str, str]:
    """The three reference secrets: given values win, the rest are random (URL built from the user password)."""
    given: dict[str, str | None] = dict(values or {})
    out = {
        "CODER_POSTGRES_ADMIN_PASSWORD": given.pop("CODER_POSTGRES_ADMIN_PASSWORD", None) or _random_password(),
        "CODER_USER_PASSWORD": given.pop("CODER_USER_PASSWORD", None) or _random_password(),
    }
    out["CODER_DATABASE_URL"] = given.pop("CODER_DATABASE_URL", None) or reference_database_url(
        out["CODER_USER_PASSWORD"]
    )
    out.update({k: v for k, v in given.items() if v is not None})
    return out


class FakeInfisical:
    """An in-memory Infisical project served over HTTP on 127.0.0.1.

    Knobs (plain attributes, safe to change at any time):
      approval_policy   every write answers 200 `{"approval": {...}}` and changes nothing; for one
                        environment and path (glob) only, use `add_approval_policy`
      rate_limit_next   the next N requests get 429 with `Retry-After: <retry_after>` (seconds, default 1)
      fail_next_writes  the next N secret writes get 500
      token_expired     every bearer token is answered with 403 TokenError (expired)
      latency           seconds to wait before answering each request
      strict_service_tokens  reject a service token sent with its 4th (key) part; the real server ignores it,
                        the SDKs and the operator strip it, so a client that sends it is buggy
    """

    def __init__(
        self,
        project_id: str = "6650f1c2a3b4c5d6e7f80912",
        environment: str = "prod",
        path: str = "/",
        *,
        project_slug: str = "coder",
        project_name: str = "coder",
        access_token_ttl: int = 7200,
    ) -> None:
        self.project_id = project_id
        self.project_slug = project_slug
        self.project_name = project_name
        self.environment = environment
        self.path = _normalize_path(path)
        self.access_token_ttl = access_token_ttl

        self.approval_policy = False
        self.rate_limit_next = 0
        self.retry_after = 1
        self.fail_next_writes = 0
        self.token_expired = False
        self.latency = 0.0
        self.strict_service_tokens = True

        self.request_log: list[LoggedRequest] = []
        self.approvals: list[PendingApproval] = []
        self.approval_policies: list[ApprovalPolicy] = []
        self.seed: InfisicalSeed | None = None

        self._lock = threading.RLock()
        self._environments: set[str] = {environment}
        self._folders: set[tuple[str, str]] = {(environment, "/"), (environment, self.path)}
        self._secrets: dict[tuple[str, str, str], _Secret] = {}
        self._identities: dict[str, tuple[str, str]] = {}
        self._service_tokens: dict[str, _ServiceToken] = {}
        self._access_tokens: dict[str, _AccessToken] = {}
        self._signing_key = _secrets.token_bytes(32)
        self._user_id = str(uuid.uuid4())
        self._org_id = str(uuid.uuid4())

        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._sock is None:
            raise RuntimeError("FakeInfisical is not started")
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self) -> Self:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # noqa: BLE001 - surfaced to start() below
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-infisical", daemon=True)
        self._thread.start()
        if not ready.wait(10) or errors:
            self.stop()
            raise RuntimeError(f"FakeInfisical failed to start: {errors[:1]}")
        return self

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/api/status", self._status)
        r.add_post("/api/v1/auth/universal-auth/login", self._ua_login)
        r.add_post("/api/v1/auth/token/renew", self._token_renew)
        r.add_get("/api/v2/service-token", self._service_token_details)
        r.add_get("/api/v2/service-token/", self._service_token_details)
        r.add_get("/api/v2/workspace/{slug}", self._project_by_slug)
        for version in ("v3", "v4"):
            base = "/api/v3/secrets/raw" if version == "v3" else "/api/v4/secrets"
            r.add_get(base, self._make(self._list, version))
            r.add_get(base + "/", self._make(self._list, version))
            r.add_get(base + "/{name}", self._make(self._get, version))
            r.add_post(base + "/{name}", self._make(self._create, version))
            r.add_patch(base + "/{name}", self._make(self._update, version))
            r.add_delete(base + "/{name}", self._make(self._delete, version))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        assert self._sock is not None
        await web.SockSite(self._runner, self._sock).start()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            if self._runner is not None:
                fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
                with contextlib.suppress(TimeoutError):
                    fut.result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
        if loop is not None and not loop.is_running():
            loop.close()
        if self._sock is not None:
            self._sock.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- Python API for tests --------------------------------------------------------------------

    def add_environment(self, slug: str) -> None:
        with self._lock:
            self._environments.add(slug)
            self._folders.add((slug, "/"))

    def add_folder(self, path: str, *, environment: str | None = None) -> None:
        env = environment or self.environment
        with self._lock:
            self.add_environment(env)
            self._add_folder_chain(env, _normalize_path(path))

    def add_machine_identity(self, client_id: str, client_secret: str) -> str:
        """Register a universal-auth identity; returns its identity id."""
        identity_id = str(uuid.uuid4())
        with self._lock:
            self._identities[client_id] = (client_secret, identity_id)
        return identity_id

    def add_service_token(
        self, token: str, *, environment: str | None = None, path: str | None = None, name: str = "lab"
    ) -> None:
        """Register a full service token `st.<id>.<secret>.<key>` scoped to one environment and path."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "st" or not all(parts):
            raise ValueError("a service token looks like st.<id>.<secret>.<key>")
        with self._lock:
            self._service_tokens[parts[1]] = _ServiceToken(
                id=parts[1],
                secret=parts[2],
                name=name,
                environment=environment or self.environment,
                path=_normalize_path(path or self.path),
                created_at=_now_iso(),
            )

    def revoke_service_token(self, token: str) -> None:
        """Delete a service token, as revoking it in the UI does: it is answered 404 from then on."""
        parts = token.split(".")
        with self._lock:
            self._service_tokens.pop(parts[1] if len(parts) > 1 else "", None)

    def new_service_token(self, *, environment: str | None = None, path: str | None = None) -> str:
        """Mint, register and return a service token in the real format."""
        token = f"st.{_secrets.token_hex(12)}.{_secrets.token_hex(16)}.{_secrets.token_hex(16)}"
        self.add_service_token(token, environment=environment, path=path)
        return token

    def revoke_service_token(self, token: str) -> None:
        with self._lock:
            self._service_tokens.pop(token.split(".")[1], None)

    def expire_access_tokens(self) -> None:
        """Expire every access token issued so far; new logins get valid ones (unlike `token_expired`)."""
        with self._lock:
            for tok in self._access_tokens.values():
                tok.revoked_expired = True

    def set_secret(
        self,
        name: str,
        value: str,
        *,
        environment: str | None = None,
        path: str | None = None,
        comment: str = "",
    ) -> int:
        """Create or update a secret directly (as the web UI would); returns the new version number."""
        env = environment or self.environment
        p = _normalize_path(path or self.path)
        with self._lock:
            self.add_environment(env)
            self._add_folder_chain(env, p)
            secret = self._secrets.get((env, p, name))
            if secret is None:
                secret = _Secret(id=str(uuid.uuid4()), key=name, environment=env, path=p, created_at=_now_iso())
                self._secrets[(env, p, name)] = secret
            secret.versions.append(_Version(value=value, comment=comment, created_at=_now_iso()))
            return len(secret.versions)

    def get_secret(
        self, name: str, version: int | None = None, *, environment: str | None = None, path: str | None = None
    ) -> str:
        secret = self._find(name, environment, path)
        if version is None:
            return secret.versions[-1].value
        if not 1 <= version <= len(secret.versions):
            raise KeyError(f"{name} has no version {version}")
        return secret.versions[version - 1].value

    def versions(self, name: str, *, environment: str | None = None, path: str | None = None) -> list[str]:
        """All values of a secret, oldest first (index i is version i + 1)."""
        return [v.value for v in self._find(name, environment, path).versions]

    def delete_secret(self, name: str, *, environment: str | None = None, path: str | None = None) -> None:
        env = environment or self.environment
        p = _normalize_path(path or self.path)
        with self._lock:
            self._secrets.pop((env, p, name), None)

    def secret_names(self, *, environment: str | None = None, path: str | None = None) -> list[str]:
        env = environment or self.environment
        p = _normalize_path(path or self.path)
        with self._lock:
            return sorted(k for (e, fp, k) in self._secrets if e == env and fp == p)

    def add_approval_policy(self, path: str = "/", *, environment: str | None = None,
                            name: str = "coder-secrets-review") -> ApprovalPolicy:
        """Writes to secrets of `environment` under paths matching `path` (a glob) now need approval."""
        policy = ApprovalPolicy(id=str(uuid.uuid4()), name=name, environment=environment or self.environment,
                                path=_normalize_path(path))
        with self._lock:
            self.approval_policies.append(policy)
        return policy

    def version(self, name: str, *, environment: str | None = None, path: str | None = None) -> int:
        """The current version number of a secret (every write adds one)."""
        return len(self._find(name, environment, path).versions)

    def merge_approval(self, approval_id: str) -> None:
        """Approve and merge a pending change, as a reviewer would in the UI."""
        with self._lock:
            pending = next(a for a in self.approvals if a.id == approval_id)
            self.approvals.remove(pending)
            if pending.method == "DELETE":
                self.delete_secret(pending.name, environment=pending.environment, path=pending.path)
                return
            value = pending.value
            if value is None:
                value = self.get_secret(pending.name, environment=pending.environment, path=pending.path)
            if pending.new_name:
                self._rename(pending.environment, pending.path, pending.name, pending.new_name)
            self.set_secret(pending.new_name or pending.name, value, environment=pending.environment,
                            path=pending.path)

    def seed_reference(self, values: Mapping[str, str] | None = None) -> InfisicalSeed:
        """Put the reference deployment's three secrets, a service token and a machine identity in place."""
        vals = reference_values(values)
        for name, value in vals.items():
            self.set_secret(name, value)
        client_id = str(uuid.uuid4())
        client_secret = _secrets.token_hex(32)
        self.add_machine_identity(client_id, client_secret)
        self.seed = InfisicalSeed(
            values=vals, service_token=self.new_service_token(), client_id=client_id, client_secret=client_secret
        )
        return self.seed

    # ---- internals: store ------------------------------------------------------------------------

    def _add_folder_chain(self, env: str, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        for i in range(len(parts) + 1):
            self._folders.add((env, "/" + "/".join(parts[:i])))

    def _find(self, name: str, environment: str | None, path: str | None) -> _Secret:
        env = environment or self.environment
        p = _normalize_path(path or self.path)
        with self._lock:
            secret = self._secrets.get((env, p, name))
            if secret is None:
                raise KeyError(f"no secret {name} in {env}:{p}")
            return secret

    def _rename(self, env: str, path: str, old: str, new: str) -> _Secret:
        secret = self._secrets.pop((env, path, old))
        secret.key = new
        self._secrets[(env, path, new)] = secret
        return secret

    def _record(self, secret: _Secret, version: int | None = None, *, view: bool = True,
                expand: bool = False) -> dict[str, Any]:
        ver = secret.versions[(version or len(secret.versions)) - 1]
        value = ver.value
        if expand and view:
            value = self._expand(value, secret.environment, secret.path, depth=0)
        return {
            "id": secret.id,
            "_id": secret.id,
            "workspace": self.project_id,
            "environment": secret.environment,
            "version": version or len(secret.versions),
            "type": "shared",
            "secretKey": secret.key,
            "secretValue": value if view else HIDDEN_VALUE_MASK,
            "secretValueHidden": not view,
            "secretComment": ver.comment,
            "secretReminderNote": None,
            "secretReminderRepeatDays": None,
            "skipMultilineEncoding": False,
            "createdAt": secret.created_at,
            "updatedAt": ver.created_at,
            "secretPath": secret.path,
            "tags": [],
            "secretMetadata": [],
            "actor": None,
            "isRotatedSecret": False,
            "rotationId": None,
        }

    _REF = re.compile(r"\$\{([^}]+)\}")

    def _expand(self, value: str, env: str, path: str, depth: int) -> str:
        """Secret references: `${KEY}` (same folder) and `${env.a.b.KEY}` (folder /a/b of env)."""
        if depth > 5:
            return value

        def sub(m: re.Match[str]) -> str:
            ref = m.group(1).strip().split(".")
            if len(ref) == 1:
                key = (env, path, ref[0])
            else:
                key = (ref[0], "/" + "/".join(ref[1:-1]) if len(ref) > 2 else "/", ref[-1])
            target = self._secrets.get(key)
            if target is None:
                return m.group(0)
            return self._expand(target.versions[-1].value, key[0], key[1], depth + 1)

        return self._REF.sub(sub, value)

    # ---- internals: tokens -----------------------------------------------------------------------

    def _issue_access_token(self, identity_id: str, client_id: str) -> str:
        now = int(time.time())
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = _b64url(json.dumps({
            "identityId": identity_id,
            "clientSecretId": str(uuid.uuid4()),
            "identityAccessTokenId": str(uuid.uuid4()),
            "authTokenType": "identityAccessToken",
            "iat": now,
            "exp": now + self.access_token_ttl,
        }, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        sig = _b64url(hmac.new(self._signing_key, signing_input, hashlib.sha256).digest())
        token = f"{header}.{payload}.{sig}"
        self._access_tokens[token] = _AccessToken(identity_id, client_id, time.time() + self.access_token_ttl)
        return token

    def _authenticate(self, request: web.Request) -> _Actor:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise _ApiError(401, "UnauthorizedError", "Token missing")
        token = header[7:].strip()
        if self.token_expired:
            raise _ApiError(403, "TokenError", TOKEN_EXPIRED_MESSAGE)
        with self._lock:
            if token.startswith("st."):
                return self._authenticate_service_token(token)
            access = self._access_tokens.get(token)
            if access is None:
                message = "invalid signature" if token.count(".") == 2 else TOKEN_MALFORMED_MESSAGE
                raise _ApiError(403, "TokenError", message)
            if access.revoked_expired or access.expires_at < time.time():
                raise _ApiError(403, "TokenError", TOKEN_EXPIRED_MESSAGE)
            return _Actor(kind="identity")

    def _authenticate_service_token(self, token: str) -> _Actor:
        parts = token.split(".")
        if len(parts) < 3 or (self.strict_service_tokens and len(parts) != 3):
            raise _ApiError(401, "UnauthorizedError", "Invalid service token")
        stored = self._service_tokens.get(parts[1])
        if stored is None:
            raise _ApiError(404, "NotFound", f"Service token with ID '{parts[1]}' not found")
        if not hmac.compare_digest(stored.secret, parts[2]):
            raise _ApiError(401, "UnauthorizedError", "Invalid service token")
        return _Actor(kind="service", service_token=stored)

    # ---- internals: HTTP -------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        req_id = f"req-{_secrets.token_hex(6)}"
        status = 500
        try:
            with self._lock:
                limited = self.rate_limit_next > 0
                if limited:
                    self.rate_limit_next -= 1
                latency = self.latency
                after = self.retry_after
            if latency > 0:
                await asyncio.sleep(latency)
            if limited:
                raise _ApiError(429, "RateLimitExceeded", f"Rate limit exceeded. Please try again in {after} seconds",
                                headers={"Retry-After": str(after), "X-RateLimit-Limit": "600",
                                         "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(after)})
            response = await handler(request)
            status = response.status
            return response
        except _ApiError as exc:
            status = exc.status
            body = {"reqId": req_id, "statusCode": exc.status, "message": exc.message, "error": exc.error}
            return _json(body, status=exc.status, headers=exc.headers)
        except web.HTTPNotFound:
            status = 404
            return _json({"message": f"Route {request.method}:{request.path} not found",
                                      "error": "Not Found", "statusCode": 404}, status=404)
        except web.HTTPMethodNotAllowed:
            status = 404
            return _json({"message": f"Route {request.method}:{request.path} not found",
                                      "error": "Not Found", "statusCode": 404}, status=404)
        except Exception:  # noqa: BLE001 - the real error handler's catch-all
            status = 500
            return _json({"reqId": req_id, "statusCode": 500, "error": "InternalServerError",
                                      "message": "Something went wrong"}, status=500)
        finally:
            with self._lock:
                self.request_log.append(LoggedRequest(request.method, request.path, status))

    @staticmethod
    async def _json_body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _ApiError(400, "Bad Request", "Body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _ApiError(422, "ValidationFailure", [{"message": "Expected object", "path": []}])
        return body

    def _make(
        self, fn: Callable[[web.Request, str], Awaitable[web.StreamResponse]], version: str
    ) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await fn(request, version)

        return handler

    async def _status(self, request: web.Request) -> web.StreamResponse:
        return _json({"date": _now_iso(), "message": "Ok", "emailConfigured": False,
                                  "inviteOnlySignup": False, "redisConfigured": True,
                                  "secretScanningConfigured": False, "samlDefaultOrgSlug": None,
                                  "auditLogStorageDisabled": False})

    async def _ua_login(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        client_id, client_secret = body.get("clientId"), body.get("clientSecret")
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            raise _ApiError(422, "ValidationFailure", [{"message": "Required", "path": ["clientId"]}])
        with self._lock:
            known = self._identities.get(client_id)
            if known is None or not hmac.compare_digest(known[0], client_secret):
                raise _ApiError(401, "UnauthorizedError", "Invalid credentials")
            token = self._issue_access_token(known[1], client_id)
        return _json({"accessToken": token, "expiresIn": self.access_token_ttl,
                                  "accessTokenMaxTTL": self.access_token_ttl, "tokenType": "Bearer"})

    async def _token_renew(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        token = body.get("accessToken")
        with self._lock:
            access = self._access_tokens.get(token) if isinstance(token, str) else None
            if access is None:
                raise _ApiError(403, "TokenError", TOKEN_MALFORMED_MESSAGE)
            if self.token_expired or access.revoked_expired or access.expires_at < time.time():
                raise _ApiError(403, "TokenError", TOKEN_EXPIRED_MESSAGE)
            access.expires_at = time.time() + self.access_token_ttl
        return _json({"accessToken": token, "expiresIn": self.access_token_ttl,
                                  "accessTokenMaxTTL": self.access_token_ttl, "tokenType": "Bearer"})

    async def _service_token_details(self, request: web.Request) -> web.StreamResponse:
        actor = self._authenticate(request)
        if actor.service_token is None:
            raise _ApiError(403, f"Forbidden access to {request.path}",
                            "You are not allowed to access this resource")
        st = actor.service_token
        user = {"id": self._user_id, "_id": self._user_id, "__v": 0, "email": "admin@xuperson.org",
                "firstName": "Lab", "lastName": "Admin", "authMethods": ["email"], "mfaMethods": [],
                "devices": [], "createdAt": st.created_at, "updatedAt": st.created_at}
        return _json({
            "id": st.id, "_id": st.id, "__v": 0, "name": st.name, "projectId": self.project_id,
            "workspace": self.project_id,
            "scopes": [{"environment": st.environment, "secretPath": st.path}],
            "permissions": ["read", "write"], "createdBy": self._user_id, "expiresAt": None,
            "lastUsed": _now_iso(), "createdAt": st.created_at, "updatedAt": st.created_at,
            "secretHash": hashlib.sha256(st.secret.encode()).hexdigest(), "encryptedKey": "", "iv": "",
            "tag": "", "user": user,
        })

    async def _project_by_slug(self, request: web.Request) -> web.StreamResponse:
        self._authenticate(request)
        if request.match_info["slug"] != self.project_slug:
            raise _ApiError(404, "NotFound", f"Project with slug '{request.match_info['slug']}' not found")
        envs = [{"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, e)), "name": e, "slug": e}
                for e in sorted(self._environments)]
        return _json({"id": self.project_id, "_id": self.project_id, "name": self.project_name,
                                  "slug": self.project_slug, "orgId": self._org_id, "environments": envs,
                                  "autoCapitalization": False, "version": 3, "createdAt": _now_iso(),
                                  "updatedAt": _now_iso()})

    def _scope(self, actor: _Actor, source: Mapping[str, Any], version: str) -> tuple[str, str]:
        """Resolve (environment, path) of a secrets request; checks project and environment exist."""
        if actor.service_token is not None:
            return actor.service_token.environment, actor.service_token.path
        if version == "v4":
            project = source.get("projectId")
        else:
            project = source.get("workspaceId")
            slug = source.get("workspaceSlug") or source.get("projectSlug")
            if not project and slug:
                project = self.project_id if slug == self.project_slug else None
                if project is None:
                    raise _ApiError(404, "NotFound", f"Project with slug '{slug}' not found")
        env = source.get("environment")
        if not project or not env:
            raise _ApiError(400, "BadRequest", "Missing project id or environment")
        if project != self.project_id:
            raise _ApiError(404, "NotFound", f"Project with ID '{project}' not found")
        if env not in self._environments:
            raise _ApiError(404, "NotFound",
                            f"Environment with slug '{env}' in project with ID '{project}' not found")
        return str(env), _normalize_path(source.get("secretPath"))

    def _lookup(self, env: str, path: str, name: str) -> _Secret:
        secret = self._secrets.get((env, path, name))
        if secret is None:
            raise _ApiError(404, "NotFound", f"Secret with name '{name}' not found")
        return secret

    def _take_write_failure(self) -> None:
        if self.fail_next_writes > 0:
            self.fail_next_writes -= 1
            raise _ApiError(500, "InternalServerError", "Something went wrong")

    def _policy_for(self, env: str, path: str) -> ApprovalPolicy | None:
        for policy in self.approval_policies:
            if policy.covers(env, path):
                return policy
        if self.approval_policy:
            return ApprovalPolicy(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"policy:{env}")), name="project-wide",
                                  environment=env, path="*")
        return None

    def _approval(self, method: str, env: str, path: str, name: str, value: str | None,
                  new_name: str | None = None) -> web.StreamResponse:
        """The answer of a write under a change policy: the secret-approval request, as the v3/v4 routes send
        it (`{"approval": SecretApprovalRequestsSchema}`), which names the policy by id only."""
        now = _now_iso()
        policy = self._policy_for(env, path)
        assert policy is not None
        pending = PendingApproval(id=str(uuid.uuid4()), slug=_secrets.token_hex(4), method=method,
                                  environment=env, path=path, name=name, value=value, new_name=new_name,
                                  policy_id=policy.id, policy_name=policy.name)
        self.approvals.append(pending)
        folder_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{env}:{path}"))
        return _json({"approval": {
            "id": pending.id, "policyId": policy.id,
            "hasMerged": False, "status": "open", "conflicts": [], "slug": pending.slug, "folderId": folder_id,
            "bypassReason": None, "createdAt": now, "updatedAt": now, "isReplicated": False,
            "committerUserId": self._user_id, "statusChangedByUserId": None,
        }})

    async def _list(self, request: web.Request, version: str) -> web.StreamResponse:
        actor = self._authenticate(request)
        q = request.query
        with self._lock:
            env, path = self._scope(actor, q, version)
            recursive = _flag(q.get("recursive"))
            view = _flag(q.get("viewSecretValue"), default=True)
            expand = _flag(q.get("expandSecretReferences"))
            prefix = path.rstrip("/") + "/"
            found = [
                s for (e, p, _), s in sorted(self._secrets.items())
                if e == env and (p == path or (recursive and p.startswith(prefix)))
            ]
            records = [self._record(s, view=view, expand=expand) for s in found]
        return _json({"secrets": records, "imports": []})

    async def _get(self, request: web.Request, version: str) -> web.StreamResponse:
        actor = self._authenticate(request)
        q = request.query
        name = request.match_info["name"]
        with self._lock:
            env, path = self._scope(actor, q, version)
            secret = self._lookup(env, path, name)
            wanted: int | None = None
            if q.get("version"):
                try:
                    wanted = int(q["version"])
                except ValueError:
                    raise _ApiError(422, "ValidationFailure",
                                    [{"message": "Expected number, received nan", "path": ["version"]}]) from None
                if not 1 <= wanted <= len(secret.versions):
                    raise _ApiError(404, "NotFound", f"Secret with name '{name}' not found")
            record = self._record(secret, wanted, view=_flag(q.get("viewSecretValue"), default=True),
                                  expand=_flag(q.get("expandSecretReferences")))
        return _json({"secret": record})

    async def _create(self, request: web.Request, version: str) -> web.StreamResponse:
        actor = self._authenticate(request)
        body = await self._json_body(request)
        name = request.match_info["name"]
        value = body.get("secretValue")
        if not isinstance(value, str):
            raise _ApiError(422, "ValidationFailure", [{"message": "Required", "path": ["secretValue"]}])
        with self._lock:
            env, path = self._scope(actor, body, version)
            if (env, path, name) in self._secrets:
                raise _ApiError(400, "BadRequest", "Secret already exist")
            if path != "/" and (env, path) not in self._folders:
                raise _ApiError(404, "NotFound",
                                f"Folder with path '{path}' in environment with slug '{env}' not found")
            if self._policy_for(env, path) is not None:
                return self._approval("POST", env, path, name, _normalize_value(value))
            self._take_write_failure()
            self.set_secret(name, _normalize_value(value), environment=env, path=path,
                            comment=str(body.get("secretComment") or "").strip())
            record = self._record(self._secrets[(env, path, name)])
        return _json({"secret": record})

    async def _update(self, request: web.Request, version: str) -> web.StreamResponse:
        actor = self._authenticate(request)
        body = await self._json_body(request)
        name = request.match_info["name"]
        value = body.get("secretValue")
        new_name = body.get("newSecretName") or None
        if value is not None and not isinstance(value, str):
            raise _ApiError(422, "ValidationFailure", [{"message": "Expected string", "path": ["secretValue"]}])
        with self._lock:
            env, path = self._scope(actor, body, version)
            secret = self._lookup(env, path, name)
            new_value = _normalize_value(value) if value is not None else None
            if self._policy_for(env, path) is not None:
                return self._approval("PATCH", env, path, name, new_value, new_name)
            self._take_write_failure()
            if new_name and new_name != name:
                if (env, path, new_name) in self._secrets:
                    raise _ApiError(400, "BadRequest", "Secret with the new name already exist")
                secret = self._rename(env, path, name, new_name)
            comment = body.get("secretComment")
            last = secret.versions[-1]
            secret.versions.append(_Version(
                value=new_value if new_value is not None else last.value,
                comment=str(comment) if comment is not None else last.comment,
                created_at=_now_iso(),
            ))
            record = self._record(secret)
        return _json({"secret": record})

    async def _delete(self, request: web.Request, version: str) -> web.StreamResponse:
        actor = self._authenticate(request)
        body = await self._json_body(request)
        name = request.match_info["name"]
        with self._lock:
            env, path = self._scope(actor, body, version)
            secret = self._lookup(env, path, name)
            if self._policy_for(env, path) is not None:
                return self._approval("DELETE", env, path, name, None)
            self._take_write_failure()
            record = self._record(secret)
            del self._secrets[(env, path, name)]
        return _json({"secret": record})


@pytest.fixture
def fake_infisical(request: pytest.FixtureRequest) -> Iterator[FakeInfisical]:
    """A started fake seeded like the reference deployment (prod, /).

    Values come from indirect parametrization (`request.param`, a mapping of secret name to value) or are
    random; `fake_infisical.seed` holds the values, a service token and machine identity credentials.
    """
    values: Mapping[str, str] | None = getattr(request, "param", None)
    fake = FakeInfisical()
    fake.start()
    try:
        fake.seed_reference(values)
        yield fake
    finally:
        fake.stop()
