"""What the Kubernetes API can answer besides the object asked for, as exception classes.

The API reports failures as a `Status` object (in an HTTP error response, or in a watch's ERROR event); one
function turns either into the class a caller can act on: 404 not found, 409 conflict (a stale
resourceVersion or an unmet precondition) or already exists, 410 gone (a compacted watch position), 401, 403.
"""

from __future__ import annotations

import json
from typing import Any

from coderctl.errors import CoderctlError


class KubeError(CoderctlError):
    """The API answered with an error, or could not be reached."""


class KubeUnreachable(KubeError):
    pass


class KubeApiError(KubeError):
    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFound(KubeApiError):
    pass


class KubeConflict(KubeApiError):
    """409: the object changed since the resourceVersion given (or a uid/resourceVersion precondition
    failed). Read it again, decide again, write again."""


class KubeAlreadyExists(KubeConflict):
    """409 AlreadyExists: a create lost to an object of the same name."""


class KubeGone(KubeApiError):
    """410: the resourceVersion a watch would resume from was compacted away; list again."""


class KubeForbidden(KubeApiError):
    def __init__(self, status: int, message: str, reason: str, verb: str, resource: str) -> None:
        super().__init__(status, message, reason)
        self.verb = verb
        self.resource = resource


class KubeUnauthorized(KubeApiError):
    pass


class KubeWaitTimeout(KubeError):
    """A wait reached its deadline; `last` is the object as last seen (None: it did not exist)."""

    def __init__(self, message: str, last: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.last = last


_VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}


def api_error(method: str, path: str, status: int, data: bytes) -> KubeApiError:
    """The error for an HTTP error response (`data` is its body, a Status object or anything else)."""
    try:
        body = json.loads(data)
        message = str(body.get("message") or "")
        reason = str(body.get("reason") or "")
    except (ValueError, AttributeError):
        message, reason = data.decode("utf-8", "replace")[:200], ""
    message = message or f"HTTP {status}"
    if status == 403:
        return _forbidden(method, path, message, reason)
    return status_error(status, message, reason)


def status_error(status: int, message: str, reason: str = "") -> KubeApiError:
    """The error for a Status (`code`, `message`, `reason`), e.g. from a watch's ERROR event."""
    if status == 404:
        return KubeNotFound(status, message, reason)
    if status == 409:
        cls = KubeAlreadyExists if reason == "AlreadyExists" else KubeConflict
        return cls(status, message, reason)
    if status == 410:
        return KubeGone(status, message, reason)
    if status == 401:
        return KubeUnauthorized(status, f"the Kubernetes API rejected the credentials: {message}", reason)
    if status == 403:
        return KubeForbidden(status, message, reason, "", "")
    return KubeApiError(status, message, reason)


def _forbidden(method: str, path: str, message: str, reason: str) -> KubeForbidden:
    parts = [p for p in path.split("?")[0].split("/") if p]
    watch = "watch=true" in path
    verb = "watch" if watch else _VERBS.get(method, method.lower())
    resource = parts[-1] if parts else path
    if "namespaces" in parts:
        after = parts[parts.index("namespaces") + 2:]
        if after:
            resource = after[0] + ("/" + after[2] if len(after) > 2 else "")
            if method == "GET" and len(after) == 1 and not watch:
                verb = "list"
    return KubeForbidden(403, message, reason, verb, resource)
