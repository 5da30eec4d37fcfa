"""Infisical access: reads that keep the version, writes confirmed by a read-back, approvals, rate limits.

Credentials, first found wins: universal auth (client id and secret), an access token, or the service token
the operator itself uses (read from the Secret the InfisicalSecret names). The caller resolves them from the
settings (`discovery.infisical_client`); nothing here reads the environment.

The official SDK (`infisicalsdk`) provides the HTTP session and its bearer-token handling, but every request
goes through that session directly rather than through the SDK's resource methods, because those cannot
express what a careful writer needs:

- its errors (`APIError`) keep the JSON body but drop the headers, so a 429's `Retry-After` is lost;
- its write methods index `["secret"]` in the answer and fail with a KeyError when a change policy makes
  Infisical answer `{"approval": {...}}` instead, which must be recognised as its own outcome;
- its retry decorator sleeps up to 15 s on network errors whatever the caller's deadline, and its
  requests carry no timeout;
- it caches reads for 60 s unless told otherwise, which would hide a write just made (every read here goes
  to the server).

Secrets are read and written on the v4 routes (`/api/v4/secrets/{name}`, `projectId`); a server without
them (route 404) is asked on the v3 raw routes (`/api/v3/secrets/raw/{name}`, `workspaceId`) instead.
Secret values travel only in JSON bodies (never in URLs) and are scrubbed from every error message.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from coderctl.errors import CoderctlError

if TYPE_CHECKING:
    import requests

AuthKind = Literal["universal-auth", "token", "service-token"]
ApiVersion = Literal["v4", "v3"]

MAX_RATE_LIMIT_WAITS = 5


class InfisicalError(CoderctlError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InfisicalNotFound(InfisicalError):
    """The secret (or its folder, environment or project) does not exist."""


class InfisicalTokenRejected(InfisicalError):
    """The token is expired, revoked or malformed (Infisical's 403 TokenError)."""


class InfisicalRateLimited(InfisicalError):
    """429 answers beyond what the caller's deadline (or the retry bound) allows waiting for."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message, 429)
        self.retry_after = retry_after


class InfisicalApprovalRequired(InfisicalError):
    """A change policy on the path: Infisical opened an approval request and changed nothing.

    The answer is the secret-approval request itself (`{"approval": {id, slug, policyId, status, ...}}`);
    it names the policy by id only, so `policy_name` is set only when the server includes the policy.
    """

    def __init__(self, secret: str, approval: Mapping[str, Any]) -> None:
        self.secret = secret
        self.request_id = str(approval.get("id") or "")
        self.slug = str(approval.get("slug") or "")
        self.policy_id = str(approval.get("policyId") or "")
        policy = approval.get("policy")
        self.policy_name = str(policy.get("name")) if isinstance(policy, Mapping) and policy.get("name") else None
        self.request_status = str(approval.get("status") or "open")
        policy_text = f"policy {self.policy_name} ({self.policy_id})" if self.policy_name else \
            f"policy {self.policy_id}"
        super().__init__(
            f"Infisical did not change {secret}: a change {policy_text} requires approval; it opened approval "
            f"request {self.slug or self.request_id} (id {self.request_id}, status {self.request_status}), "
            "which a reviewer must merge in Infisical", 200)


class InfisicalWriteUncertain(InfisicalError):
    """A write sent without an answer (timeout, connection lost): it may or may not have been applied."""


class InfisicalWriteNotConfirmed(InfisicalError):
    """The write was accepted but reading it back did not show the value at the version written."""


@dataclass(frozen=True)
class InfisicalAuth:
    kind: AuthKind
    client_id: str = ""
    secret: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"InfisicalAuth({self.kind})"

    @classmethod
    def from_values(cls, client_id: str | None, client_secret: str | None,
                    token: str | None) -> InfisicalAuth | None:
        """Universal auth when both its parts are given, else a token (`st.` ones are service tokens)."""
        if client_id and client_secret:
            return cls("universal-auth", client_id, client_secret)
        if token:
            return cls("service-token" if token.startswith("st.") else "token", secret=token)
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> InfisicalAuth | None:
        """The Infisical CLI's variable names (the same the settings read)."""
        return cls.from_values(environ.get("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID"),
                               environ.get("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"),
                               environ.get("INFISICAL_TOKEN"))

    @classmethod
    def service_token(cls, token: str) -> InfisicalAuth:
        return cls("service-token", secret=token)


@dataclass(frozen=True)
class SecretVersion:
    """One version of a secret as Infisical holds it. The value is left out of repr."""

    name: str
    version: int
    id: str
    environment: str
    path: str
    value: str = field(repr=False)
    comment: str = field(default="", repr=False)
    updated_at: str | None = None


def bearer_for_service_token(token: str) -> str:
    """Service tokens are `st.<id>.<secret>.<key>`; only the first three parts are sent (the key decrypts)."""
    parts = token.split(".")
    if len(parts) < 3 or parts[0] != "st":
        raise InfisicalError("the service token is not of the form st.<id>.<secret>.<key>")
    return ".".join(parts[:3])


def api_base(host_api: str) -> str:
    """The site URL; the operator's hostAPI ends in /api."""
    base = host_api.rstrip("/")
    return base[: -len("/api")] if base.endswith("/api") else base


def stored_form(value: str) -> str:
    """What Infisical stores for a written value: trimmed, keeping one trailing newline if there was one."""
    return f"{value.strip()}\n" if value.endswith("\n") else value.strip()


def same_value(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class InfisicalClient:
    """One Infisical API endpoint with one set of credentials.

    `register` (the run's redactor) is given every secret value read or written before anyone else sees it.
    `timeout` bounds each request. Every call takes an optional `deadline` (a `time.monotonic()` instant);
    without one it gets `budget` seconds (default four timeouts). Waiting for a 429's Retry-After counts
    against it: when the wait would pass the deadline, or after MAX_RATE_LIMIT_WAITS waits, the call fails
    with InfisicalRateLimited at once instead of sleeping.
    """

    def __init__(self, host: str, auth: InfisicalAuth, *, timeout: float, budget: float | None = None,
                 register: Callable[[str], object] | None = None) -> None:
        self.host = api_base(host)
        self.register = register
        self.auth = auth
        self.timeout = timeout
        self.budget = budget if budget is not None else 4 * timeout
        self._session: requests.Session | None = None
        self._api: ApiVersion = "v4"
        self._lock = threading.Lock()

    # ---- session and login -------------------------------------------------------------------------

    def _deadline(self, deadline: float | None) -> float:
        return deadline if deadline is not None else time.monotonic() + self.budget

    def session(self, deadline: float | None = None) -> requests.Session:
        """The SDK's session, logged in. Universal-auth login is posted on it here (not via the SDK) so that
        a rate-limited login honours Retry-After and the deadline like every other request."""
        with self._lock:
            if self._session is not None:
                return self._session
            from infisical_sdk import InfisicalSDKClient

            sdk = InfisicalSDKClient(host=self.host, cache_ttl=None)  # type: ignore[arg-type]
            session: requests.Session = sdk.api.session
            if self.auth.kind == "universal-auth":
                answer = self._exchange(
                    session, "POST", "/api/v1/auth/universal-auth/login",
                    body={"clientId": self.auth.client_id, "clientSecret": self.auth.secret},
                    doing="log in to Infisical", deadline=self._deadline(deadline), sensitive=(self.auth.secret,))
                token = answer.get("accessToken")
                if not isinstance(token, str) or not token:
                    raise InfisicalError("cannot log in to Infisical: the answer holds no access token")
                sdk.set_token(token)
            elif self.auth.kind == "service-token":
                sdk.set_token(bearer_for_service_token(self.auth.secret))
            else:
                sdk.set_token(self.auth.secret)
            self._session = session
            return session

    # ---- HTTP --------------------------------------------------------------------------------------

    def _sensitive(self, extra: Iterable[str] = ()) -> tuple[str, ...]:
        return (self.auth.secret, *extra)

    def _exchange(self, session: requests.Session, method: str, path: str, *, doing: str, deadline: float,
                  params: Mapping[str, str] | None = None, body: Mapping[str, Any] | None = None,
                  sensitive: Iterable[str] = ()) -> dict[str, Any]:
        """One API call: 429 waited out within the deadline, errors translated, secrets kept out of them."""
        import requests

        hidden = self._sensitive(sensitive)
        waits = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InfisicalError(f"cannot {doing}: the deadline passed before Infisical answered")
            try:
                resp = session.request(method, f"{self.host}{path}", params=params,
                                       json=dict(body) if body is not None else None,
                                       timeout=min(self.timeout, remaining))
            except requests.RequestException as exc:
                text = f"cannot {doing}: no answer from {self.host} ({type(exc).__name__})"
                if method != "GET" and not isinstance(exc, requests.ConnectTimeout):
                    raise InfisicalWriteUncertain(f"{text}; the change may have been applied: read the secret's "
                                                  "version to know") from None
                raise InfisicalError(text) from None
            if resp.status_code == 429:
                waits += 1
                asked = retry_after(resp.headers.get("Retry-After"))
                wait = asked if asked is not None else float(min(2 ** (waits - 1), 8))
                remaining = deadline - time.monotonic()
                if waits > MAX_RATE_LIMIT_WAITS or wait > remaining:
                    why = (f"it asks to retry after {wait:g} s, beyond the {max(remaining, 0):.1f} s left"
                           if wait > remaining else f"still limited after {MAX_RATE_LIMIT_WAITS} waits")
                    raise InfisicalRateLimited(f"cannot {doing}: Infisical is rate limiting (HTTP 429); {why}",
                                               asked)
                time.sleep(wait)
                continue
            try:
                data = resp.json() if resp.content else {}
            except ValueError:
                data = None
            if resp.status_code >= 400:
                raise _api_error(resp.status_code, data, doing, hidden)
            if not isinstance(data, dict):
                raise InfisicalError(f"cannot {doing}: Infisical answered HTTP {resp.status_code} without a "
                                     "JSON object", resp.status_code)
            return data

    def _call(self, method: str, path: str, *, doing: str, deadline: float | None,
              params: Mapping[str, str] | None = None, body: Mapping[str, Any] | None = None,
              sensitive: Iterable[str] = ()) -> dict[str, Any]:
        """A call on the logged-in session; a universal-auth access token that expired (they live two hours
        by default) is replaced by logging in again, once."""
        limit = self._deadline(deadline)
        session: requests.Session | None = None
        for attempt in (1, 2):
            try:
                session = self.session(limit)
                return self._exchange(session, method, path, doing=doing, deadline=limit, params=params,
                                      body=body, sensitive=sensitive)
            except InfisicalTokenRejected:
                if attempt == 2 or self.auth.kind != "universal-auth":
                    raise
                with self._lock:
                    if self._session is session:
                        self._session = None
            except InfisicalError:
                raise
            except Exception as exc:  # noqa: BLE001 - the SDK's own errors, never with their text
                raise InfisicalError(f"cannot {doing}: {type(exc).__name__}") from None
        raise AssertionError("unreachable")

    def _secret_call(self, method: str, name: str, scope: tuple[str, str, str], *, doing: str,
                     deadline: float | None, extra: Mapping[str, str] | None = None,
                     value: str | None = None) -> dict[str, Any]:
        project_id, environment, path = scope
        limit = self._deadline(deadline)
        while True:
            api = self._api
            where = {"projectId" if api == "v4" else "workspaceId": project_id, "environment": environment,
                     "secretPath": path, "type": "shared"}
            route = (f"/api/v4/secrets/{quote(name, safe='')}" if api == "v4"
                     else f"/api/v3/secrets/raw/{quote(name, safe='')}")
            try:
                if method == "GET":
                    return self._call(method, route, doing=doing, deadline=limit, params={**where, **(extra or {})})
                body: dict[str, Any] = {**where, **(extra or {})}
                if value is not None:
                    body["secretValue"] = value
                return self._call(method, route, doing=doing, deadline=limit, body=body,
                                  sensitive=(value,) if value is not None else ())
            except _RouteMissing:
                if api == "v3":
                    raise InfisicalError(f"cannot {doing}: this Infisical has neither the v4 nor the v3 secrets "
                                         "API", 404) from None
                self._api = "v3"

    # ---- public API --------------------------------------------------------------------------------

    def service_token_project(self, *, deadline: float | None = None) -> str:
        """The project a service token belongs to (service tokens carry no project id of their own)."""
        data = self._call("GET", "/api/v2/service-token", doing="read the service token's project",
                          deadline=deadline)
        project = data.get("projectId") or data.get("workspace")
        if not project:
            raise InfisicalError("cannot read the service token's project: the answer names none")
        return str(project)

    def get_secret(self, name: str, *, project_id: str, environment: str, path: str, version: int | None = None,
                   deadline: float | None = None) -> SecretVersion:
        """The current version of a secret (or the one asked for), unexpanded, never from a cache."""
        extra = {"expandSecretReferences": "false", "include_imports": "false", "viewSecretValue": "true"}
        if version is not None:
            extra["version"] = str(version)
        doing = f"read {name}{f' version {version}' if version is not None else ''} from Infisical"
        data = self._secret_call("GET", name, (project_id, environment, path), doing=doing, deadline=deadline,
                                 extra=extra)
        secret = _secret_version(data, name, doing)
        if self.register is not None:
            self.register(secret.value)
        if version is not None and secret.version != version:
            raise InfisicalError(f"cannot {doing}: Infisical answered with version {secret.version}")
        return secret

    def set_secret(self, name: str, value: str, *, project_id: str, environment: str, path: str,
                   create: bool = True, deadline: float | None = None) -> SecretVersion:
        """Write a new version (creating the secret when missing and `create`), then read it back.

        Returns the version read back. Raises InfisicalApprovalRequired when a change policy holds the write
        (nothing changed), InfisicalWriteNotConfirmed when the read-back does not show the value at the
        version written (e.g. another writer came in between), and refuses values Infisical would alter.
        """
        if self.register is not None:
            self.register(value)
        if stored_form(value) != value:
            raise InfisicalError(f"will not write {name}: Infisical trims leading and trailing whitespace, so "
                                 "the value would not be stored as given")
        limit = self._deadline(deadline)
        scope = (project_id, environment, path)
        doing = f"update {name} in Infisical"
        try:
            data = self._secret_call("PATCH", name, scope, doing=doing, deadline=limit, value=value)
        except InfisicalNotFound:
            if not create:
                raise
            doing = f"create {name} in Infisical"
            data = self._secret_call("POST", name, scope, doing=doing, deadline=limit, value=value)
        if isinstance(data.get("approval"), Mapping):
            raise InfisicalApprovalRequired(name, data["approval"])
        written = _secret_version(data, name, doing)
        return self._confirm(name, value, written.version, scope, limit)

    def _confirm(self, name: str, value: str, version: int, scope: tuple[str, str, str],
                 deadline: float) -> SecretVersion:
        project_id, environment, path = scope
        latest = self.get_secret(name, project_id=project_id, environment=environment, path=path,
                                 deadline=deadline)
        if latest.version == version and same_value(latest.value, value):
            return latest
        if latest.version > version:
            mine = self.get_secret(name, project_id=project_id, environment=environment, path=path,
                                   version=version, deadline=deadline)
            if same_value(mine.value, value):
                raise InfisicalWriteNotConfirmed(
                    f"wrote {name} as version {version}, but version {latest.version} has already replaced it "
                    "(another writer?)")
        raise InfisicalWriteNotConfirmed(
            f"wrote {name} as version {version}, but reading it back gives version {latest.version} "
            f"{'with the same' if same_value(latest.value, value) else 'with another'} value")


class _RouteMissing(InfisicalError):
    pass


def retry_after(header: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    from email.utils import parsedate_to_datetime

    if not header:
        return None
    text = header.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def scrub(text: str, hidden: Iterable[str]) -> str:
    for secret in sorted((h for h in hidden if h), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _server_message(data: Any) -> str:
    if not isinstance(data, Mapping):
        return ""
    message = data.get("message")
    if isinstance(message, list):
        parts = [str(m.get("message")) if isinstance(m, Mapping) else str(m) for m in message]
        message = "; ".join(p for p in parts if p)
    text = str(message or data.get("error") or "")
    return text.splitlines()[0] if text else ""


def _api_error(status: int, data: Any, doing: str, hidden: Iterable[str]) -> InfisicalError:
    message = scrub(_server_message(data), hidden)
    error = data.get("error") if isinstance(data, Mapping) else None
    if status == 404 and message.startswith("Route "):
        return _RouteMissing(f"cannot {doing}: {message}", status)
    if error == "TokenError" or status in (401, 403) and "token" in message.lower():
        return InfisicalTokenRejected(f"cannot {doing}: the token was rejected ({message})", status)
    if status == 404:
        return InfisicalNotFound(f"cannot {doing}: {message or 'not found'}", status)
    return InfisicalError(f"cannot {doing}: HTTP {status}{f': {message}' if message else ''}", status)


def _secret_version(data: Mapping[str, Any], name: str, doing: str) -> SecretVersion:
    record = data.get("secret")
    if not isinstance(record, Mapping):
        raise InfisicalError(f"cannot {doing}: the answer holds no secret")
    if record.get("secretValueHidden"):
        raise InfisicalError(f"cannot {doing}: these credentials may not see its value (Infisical hides it)")
    try:
        version = int(record["version"])
        value = record["secretValue"]
    except (KeyError, TypeError, ValueError):
        raise InfisicalError(f"cannot {doing}: the answer lacks the value or version") from None
    if not isinstance(value, str):
        raise InfisicalError(f"cannot {doing}: the value is not a string")
    return SecretVersion(
        name=str(record.get("secretKey") or name), version=version, id=str(record.get("id") or record.get("_id")),
        environment=str(record.get("environment") or ""), path=str(record.get("secretPath") or ""),
        value=value, comment=str(record.get("secretComment") or ""), updated_at=record.get("updatedAt"),
    )
