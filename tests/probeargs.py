"""Command-line arguments that point the probes at the lab, never at the built-in (real) deployment."""

from __future__ import annotations

import json
from typing import Any

from clirun import Result, run_cli
from envelope_schema import validate_envelope
from lab.dns import LabDNS
from lab.nginx import ACCESS_HOST, WILDCARD_DOMAIN, LabNginx
from lab.tls import LabCA

WILDCARD = f"*.{WILDCARD_DOMAIN}"


def network_args(nginx: LabNginx, ca: LabCA, dns: LabDNS | list[LabDNS] | None = None) -> list[str]:
    args = ["--access-url", nginx.url,
            "--resolve", f"{ACCESS_HOST}:{nginx.port}:{nginx.address}",
            "--resolve", f"{WILDCARD}:{nginx.port}:{nginx.address}",
            "--ca-file", str(ca.ca_file)]
    for server in dns if isinstance(dns, list) else [dns] if dns else []:
        args += ["--nameserver", server.nameserver]
    return args


def run_json(*args: str, env: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
    """Run coderctl with `-o json`; the result and the parsed envelope."""
    full_env = {"CODERCTL_WILDCARD_URL": WILDCARD, "CODERCTL_EXPECTED_CODER_VERSION": "v2.25.0",
                **(env or {})}
    result = run_cli("-o", "json", *args, env=full_env)
    assert result.stdout.startswith("{"), result.output
    doc = json.loads(result.stdout)
    validate_envelope(doc)
    return result, doc


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in doc["checks"]}


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in doc["checks"]}


def codes(check: dict[str, Any]) -> list[str]:
    """The problem codes a check result carries, in order."""
    return [p["code"] for p in check["problems"]]


def assert_coded(doc: dict[str, Any]) -> None:
    """Every warning or failing check carries at least one problem, each with a registered code."""
    from coderctl.problems import CODES

    for check in doc["checks"]:
        if check["status"] in ("warn", "fail"):
            assert check["problems"], check
            assert all(code in CODES for code in codes(check)), check
