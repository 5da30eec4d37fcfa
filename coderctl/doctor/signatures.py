"""Known failure signatures, as data: log lines of Coder and PostgreSQL (REFERENCE.md, "Failure
signatures"), Warning event reasons, and condition messages, each mapped to a signal code."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Signature:
    code: str
    pattern: re.Pattern[str]
    meaning: str


def _sig(code: str, pattern: str, meaning: str) -> Signature:
    return Signature(code, re.compile(pattern, re.IGNORECASE), meaning)


LOG_SIGNATURES: tuple[Signature, ...] = (
    _sig("LOG-DB-NO-SUCH-HOST", r"lookup \S+.*no such host",
         "the database URL names a host that does not resolve (coder-postgresql instead of coder-coder-postgresql)"),
    _sig("LOG-DB-SSL-NOT-ENABLED", r"SSL is not enabled on the server",
         "lib/pq defaults to sslmode=require and the server has ssl off"),
    _sig("LOG-DB-PASSWORD-FAILED", r"password authentication failed for user",
         "the password in the URL is not the role's password"),
    _sig("LOG-DB-URL-INVALID-PORT", r"invalid port .* after host",
         "a `?`, `#` or `/` in the password is not percent-encoded"),
    _sig("LOG-DB-CONNECT-FAILED", r"connect to postgres failed|dial tcp .*:5432.*(refused|timeout)",
         "Coder gave up connecting to PostgreSQL"),
    _sig("LOG-DB-MIGRATION-DIRTY", r"Dirty database version", "an interrupted migration left the schema dirty"),
    _sig("LOG-DB-MIGRATION-MISSING", r"no migration found for version",
         "an older Coder image runs against a newer schema"),
    _sig("LOG-DB-MIGRATION-LOCK", r"waiting for database migration lock",
         "another instance holds the migration lock"),
    _sig("LOG-DB-TOO-MANY-CLIENTS", r"too many clients already", "PostgreSQL's connection limit is reached"),
    _sig("LOG-PG-DISK-FULL", r"No space left on device", "the PostgreSQL volume is full"),
    _sig("LOG-WS-UPGRADE-STRIPPED", r"Upgrade header \S* does not contain websocket|failed to WebSocket dial",
         "a proxy strips the Upgrade header"),
    _sig("LOG-ACCESS-URL-UNREACHABLE", r"EACS03", "the pod cannot reach its own access URL"),
)

EVENT_REASONS: dict[str, tuple[str, str]] = {
    "BackOff": ("EVENT-BACKOFF", "the kubelet keeps restarting a failed container"),
    "OOMKilling": ("EVENT-OOM", "the kernel killed a container for its memory"),
    "ProvisioningFailed": ("EVENT-PROVISIONING-FAILED", "the volume provisioner could not create the volume"),
    "FailedScheduling": ("EVENT-FAILED-SCHEDULING", "no node can run the pod"),
    "FailedMount": ("EVENT-FAILED-MOUNT", "a volume or Secret could not be mounted"),
    "Failed": ("EVENT-FAILED", "a container could not be created or its image pulled"),
    "ErrImagePull": ("EVENT-IMAGE-PULL", "the image could not be pulled"),
    "Unhealthy": ("EVENT-PROBE-FAILED", "a liveness or readiness probe failed"),
    "AllocationFailed": ("EVENT-LB-ALLOCATION-FAILED", "MetalLB could not give the Service an address"),
}
"""Warning event reason -> (signal code, meaning). Other Warning events are kept as evidence only."""

CONDITION_SIGNATURES: tuple[Signature, ...] = (
    _sig("COND-INFISICAL-TOKEN-EXPIRED", r"token has expired|TokenError|token expired",
         "the operator's Infisical token reached its end of life"),
    _sig("COND-INFISICAL-TOKEN-REVOKED", r"token (has been |was )?revoked|\b401\b.*Unauthori[sz]ed",
         "Infisical refuses the operator's token"),
    _sig("COND-FLUX-UPGRADE-FAILED", r"upgrade retries exhausted|Helm upgrade failed|UpgradeFailed",
         "Flux's last Helm upgrade failed: the previous release still runs"),
)


def match_log(text: str) -> list[tuple[Signature, str]]:
    """Each signature with the last line that matches it (the latest is the most telling)."""
    hits: dict[str, tuple[Signature, str]] = {}
    for line in text.splitlines():
        for sig in LOG_SIGNATURES:
            if sig.pattern.search(line):
                hits[sig.code] = (sig, line.strip())
    return list(hits.values())


def match_condition(message: str) -> list[Signature]:
    return [sig for sig in CONDITION_SIGNATURES if sig.pattern.search(message)]


CODER_CODES: dict[str, str] = {
    "EACS01": "the access URL is not set", "EACS02": "the access URL is not a valid URL",
    "EACS03": "/healthz cannot be reached through the access URL", "EACS04": "/healthz through the access URL "
    "did not answer 200", "EDB01": "the database ping failed", "EDB02": "the database answers slower than the "
    "threshold", "EDERP01": "a relay node fell back to WebSocket: Upgrade: derp is blocked",
    "EDERP02": "a relay node cannot be reached", "ESTUN01": "STUN failed", "ESTUN02": "STUN gave no public "
    "address", "EWS01": "a WebSocket cannot be opened through the access URL", "EWS02": "the WebSocket echo "
    "failed", "EPD01": "no provisioner daemons", "EPD02": "a provisioner daemon runs another version",
    "EPD03": "a provisioner daemon's API version is deprecated", "EWP01": "a workspace proxy failed",
    "EWP02": "a workspace proxy is unreachable", "EWP04": "a workspace proxy reports warnings",
    "EUNKNOWN": "an unknown problem",
}
"""Coder's own health codes (docs/admin/monitoring/health-check.md); doctor's signal is CODER-<code>."""

CODER_WARNING_CODES = frozenset({"EDB02", "EDERP01", "EPD01", "EPD02", "EPD03", "EWP04"})
