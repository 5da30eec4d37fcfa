"""Small readings of Kubernetes objects: quantities, conditions, LoadBalancer addresses and pools, Service refs."""

from __future__ import annotations

import base64
import ipaddress
import re
from decimal import Decimal, InvalidOperation
from typing import Any

_SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def quantity(text: str | int | float | None) -> Decimal | None:
    """A Kubernetes quantity as a number ("250m" -> 0.25, "512Mi" -> 536870912); None when unparsable."""
    if text is None:
        return None
    match = _QUANTITY.match(str(text).strip())
    if not match or match.group(2) not in _SUFFIXES:
        return None
    try:
        return Decimal(match.group(1)) * Decimal(_SUFFIXES[match.group(2)])
    except InvalidOperation:
        return None


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def condition_true(obj: dict[str, Any], kind: str) -> tuple[bool | None, str]:
    """(True/False/None when absent, message or reason)."""
    cond = conditions(obj).get(kind)
    if cond is None:
        return None, ""
    return cond.get("status") == "True", str(cond.get("message") or cond.get("reason") or "")


def lb_addresses(service: dict[str, Any]) -> list[str]:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [str(i.get("ip") or i.get("hostname")) for i in ingress if i.get("ip") or i.get("hostname")]


def pool_contains(ranges: list[str], address: str) -> bool:
    """MetalLB pool entries are CIDRs or `first-last` ranges."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in ranges:
        entry = entry.strip()
        try:
            if "-" in entry:
                first, last = (ipaddress.ip_address(p.strip()) for p in entry.split("-", 1))
                if type(first) is type(ip) and first <= ip <= last:  # type: ignore[operator]
                    return True
            elif ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def service_ref(host: str, default_namespace: str) -> tuple[str, str] | None:
    """(name, namespace) for a cluster Service host name, or None for something else (an IP, an FQDN)."""
    host = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    parts = host.split(".")
    if len(parts) == 1:
        return parts[0], default_namespace
    if len(parts) == 2:
        return parts[0], parts[1]
    if parts[2:] in (["svc"], ["svc", "cluster", "local"]):
        return parts[0], parts[1]
    return None


def match_labels_selector(workload: dict[str, Any]) -> str:
    """A workload's spec.selector.matchLabels as a label selector (`a=1,b=2`), empty when it has none."""
    labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def decoded_data(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's data, base64-decoded as UTF-8 text; a value that is not becomes "" (callers register the
    values with their redactor before showing anything)."""
    decoded: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            decoded[key] = base64.b64decode(value).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            decoded[key] = ""
    return decoded
