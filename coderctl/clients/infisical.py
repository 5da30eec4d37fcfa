"""Infisical access through the official SDK (`infisicalsdk`), with caching off and a timeout.

Credentials, first found wins: universal auth from INFISICAL_UNIVERSAL_AUTH_CLIENT_ID and
INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET (the Infisical CLI's names), an access token from INFISICAL_TOKEN, or
the service token the operator itself uses (read from the Secret the InfisicalSecret names; the caller
passes it in). The SDK caches reads for 60 s by default, which would hide a write just made: every client
here is created with `cache_ttl=None`. The SDK sets no request timeout, so one is added to its session.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from coderctl.errors import CoderctlError

if TYPE_CHECKING:
    from infisical_sdk import InfisicalSDKClient

AuthKind = Literal["universal-auth", "token", "service-token"]


class InfisicalError(CoderctlError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InfisicalAuth:
    kind: AuthKind
    client_id: str = ""
    secret: str = ""

    def __repr__(self) -> str:
        return f"InfisicalAuth({self.kind})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> InfisicalAuth | None:
        cid = environ.get("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID")
        csecret = environ.get("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET")
        if cid and csecret:
            return cls("universal-auth", cid, csecret)
        token = environ.get("INFISICAL_TOKEN")
        if token:
            return cls("service-token" if token.startswith("st.") else "token", secret=token)
        return None

    @classmethod
    def service_token(cls, token: str) -> InfisicalAuth:
        return cls("service-token", secret=token)


def bearer_for_service_token(token: str) -> str:
    """Service tokens are `st.<id>.<secret>.<key>`; only the first three parts are sent (the key decrypts)."""
    parts = token.split(".")
    if len(parts) < 3 or parts[0] != "st":
        raise InfisicalError("the service token is not of the form st.<id>.<secret>.<key>")
    return ".".join(parts[:3])


def api_base(host_api: str) -> str:
    """The SDK wants the site URL; the operator's hostAPI ends in /api."""
    base = host_api.rstrip("/")
    return base[: -len("/api")] if base.endswith("/api") else base


class InfisicalClient:
    def __init__(self, host: str, auth: InfisicalAuth, *, timeout: float) -> None:
        self.host = api_base(host)
        self.auth = auth
        self.timeout = timeout
        self._sdk: InfisicalSDKClient | None = None

    def sdk(self) -> InfisicalSDKClient:
        if self._sdk is None:
            from infisical_sdk import InfisicalSDKClient

            sdk = InfisicalSDKClient(host=self.host, cache_ttl=None)  # type: ignore[arg-type]
            session = sdk.api.session
            session.request = functools.partial(session.request, timeout=self.timeout)  # type: ignore[method-assign]
            try:
                if self.auth.kind == "universal-auth":
                    sdk.auth.universal_auth.login(self.auth.client_id, self.auth.secret)
                elif self.auth.kind == "service-token":
                    sdk.set_token(bearer_for_service_token(self.auth.secret))
                else:
                    sdk.set_token(self.auth.secret)
            except Exception as exc:
                raise _translate(exc, "log in to Infisical") from None
            self._sdk = sdk
        return self._sdk

    def service_token_project(self) -> str:
        """The project a service token belongs to (service tokens carry no project id of their own)."""
        try:
            details = self.sdk().api.session.get(f"{self.host}/api/v2/service-token")
            details.raise_for_status()
            return str(details.json().get("projectId") or details.json()["workspace"])
        except InfisicalError:
            raise
        except Exception as exc:
            raise _translate(exc, "read the service token's project") from None

    def get_secret(self, name: str, *, project_id: str, environment: str, path: str,
                   version: int | None = None) -> str:
        try:
            secret = self.sdk().secrets.get_secret_by_name(
                secret_name=name, project_id=project_id, environment_slug=environment, secret_path=path,
                expand_secret_references=False, include_imports=False,
                version=str(version) if version is not None else None,  # type: ignore[arg-type]
            )
        except InfisicalError:
            raise
        except Exception as exc:
            raise _translate(exc, f"read {name} from Infisical") from None
        return str(secret.secretValue)


def _translate(exc: Exception, doing: str) -> InfisicalError:
    status: Any = getattr(exc, "status_code", None)
    response: Any = getattr(exc, "response", None)
    message = str(getattr(exc, "message", "") or exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(response, dict) and response.get("error") == "TokenError":
        return InfisicalError(f"cannot {doing}: the token was rejected ({message})", status)
    if status:
        return InfisicalError(f"cannot {doing}: HTTP {status}: {message}", status)
    return InfisicalError(f"cannot {doing}: {message}")
