"""The JSON envelope of DESIGN.md as a JSON Schema, and a validator for tests."""

from __future__ import annotations

from typing import Any

PROBLEM = {
    "type": "object",
    "required": ["code", "severity", "message", "evidence", "fix", "coder_code"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "string", "pattern": r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$"},
        "severity": {"enum": ["warn", "fail", "error"]},
        "message": {"type": "string", "minLength": 1},
        "evidence": {"type": "array", "items": {"type": "string"}},
        "fix": {"type": "array", "items": {"type": "string"}},
        "coder_code": {"type": ["string", "null"]},
    },
}

CHECK = {
    "type": "object",
    "required": ["id", "category", "title", "status", "detail", "remediation", "duration_s", "data", "problems"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": r"^[a-z0-9-]+(\.[a-z0-9-]+)+$"},
        "category": {"enum": ["cluster", "secrets", "database", "network", "dns"]},
        "title": {"type": "string", "minLength": 1},
        "status": {"enum": ["ok", "warn", "fail", "skip", "error"]},
        "detail": {"type": "string"},
        "remediation": {"type": ["string", "null"]},
        "duration_s": {"type": "number", "minimum": 0},
        "data": {"type": "object"},
        "problems": {"type": "array", "items": PROBLEM},
    },
}

ENVELOPE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["coderctl", "command", "started_at", "duration_s"],
    "properties": {
        "coderctl": {"type": "string", "pattern": r"^\d+\.\d+\.\d+"},
        "command": {"type": "string", "minLength": 1},
        "started_at": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
        "duration_s": {"type": "number", "minimum": 0},
        "summary": {
            "type": "object",
            "required": ["ok", "warn", "fail", "skip", "error"],
            "additionalProperties": False,
            "properties": {k: {"type": "integer", "minimum": 0} for k in ("ok", "warn", "fail", "skip", "error")},
        },
        "checks": {"type": "array", "items": CHECK},
        "result": {},
        "steps": {"type": "array"},
        "findings": {"type": "array"},
    },
}


def validate_envelope(doc: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(doc, ENVELOPE)
    if "checks" in doc:
        assert "summary" in doc
        counts = {k: 0 for k in ("ok", "warn", "fail", "skip", "error")}
        for c in doc["checks"]:
            counts[c["status"]] += 1
        assert counts == doc["summary"]
