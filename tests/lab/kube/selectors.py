"""Label selectors (equality and set-based) and field selectors (any dotted field, = == !=)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([\w./-]+)\s*(==|!=|=)\s*([\w./-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*$")


class SelectorError(ValueError):
    """An unparsable selector (the server answers 400 BadRequest)."""


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def _requirement(part: str) -> Callable[[dict[str, str]], bool]:
    if m := _SET_RE.match(part):
        key, op, raw = m.group(1), m.group(2), m.group(3)
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQ_RE.match(part):
        key, op, value = m.group(1), m.group(2), m.group(3)
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS_RE.match(part):
        negate, key = m.group(1) == "!", m.group(2)
        return lambda labels: (key in labels) != negate
    raise SelectorError(f"unable to parse requirement: {part.strip()!r}")


def parse_label_selector(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """A predicate over a labels dict."""
    tests = [_requirement(part) for part in _split(selector or "")]
    return lambda labels: all(t(labels) for t in tests)


def match_expressions_to_string(selector: dict[str, Any]) -> str:
    """A LabelSelector object (matchLabels/matchExpressions) as a selector string."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op = expr.get("operator")
        key = expr.get("key")
        values = ",".join(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _field_requirement(part: str) -> Matcher:
    m = re.match(r"^\s*([\w.-]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
    if not m:
        raise SelectorError(f"invalid selector: {part.strip()!r}; can't understand {part.strip()!r}")
    path, op, value = m.groups()
    if op == "!=":
        return lambda obj: field_value(obj, path) != value
    return lambda obj: field_value(obj, path) == value


def parse_field_selector(selector: str | None) -> Matcher:
    tests = [_field_requirement(part) for part in _split(selector or "")]
    return lambda obj: all(t(obj) for t in tests)


def matcher(label_selector: str | None, field_selector: str | None) -> Matcher:
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector)
    return lambda obj: labels((obj.get("metadata") or {}).get("labels") or {}) and fields(obj)
