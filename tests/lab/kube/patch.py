"""Patch semantics: JSON merge patch (RFC 7386), a basic strategic merge patch, JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

# Lists the API server merges by key under strategic merge patch instead of replacing them.
STRATEGIC_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "imagePullSecrets": ("name",),
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
}


class PatchError(ValueError):
    """A patch that cannot be applied (the server answers 422 or 400)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch plus the parts of strategic merge patch kubectl relies on.

    Known lists of objects (containers, env, ports, ...) merge by their key; ``$patch: replace|delete``
    and ``$deleteFromPrimitiveList`` are honoured; ``$setElementOrder`` and ``$retainKeys`` are ignored.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    body = {k: v for k, v in patch.items() if not k.startswith("$")}
    if directive == "replace":
        return copy.deepcopy(body)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, values in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in values]
    for key, value in body.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list) and key in STRATEGIC_MERGE_KEYS:
            result[key] = _merge_list(result[key], value, STRATEGIC_MERGE_KEYS[key])
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_list(current: list[Any], patch: list[Any], keys: tuple[str, ...]) -> list[Any]:
    if not all(isinstance(item, dict) for item in current + patch):
        return copy.deepcopy(patch)
    key = next((k for k in keys if all(k in item for item in patch)), None)
    if key is None:
        return copy.deepcopy(patch)
    result = copy.deepcopy(current)
    for item in patch:
        index = next((i for i, old in enumerate(result) if old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test."""
    doc = copy.deepcopy(document)
    for op in operations:
        try:
            kind = op["op"]
            path = op["path"]
        except (KeyError, TypeError):
            raise PatchError(f"invalid JSON patch operation: {op!r}") from None
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            doc, _ = _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "move":
            doc, value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_resolve(doc, op["from"])))
        elif kind == "test":
            if _resolve(doc, path) != op.get("value"):
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}")
    return doc


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _child(container: Any, token: str, *, for_add: bool = False) -> Any:
    if isinstance(container, dict):
        if token not in container:
            raise PatchError(f"missing key {token!r}")
        return container[token]
    if isinstance(container, list):
        index = _index(container, token, for_add=for_add)
        return container[index]
    raise PatchError(f"cannot descend into {type(container).__name__}")


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if token == "-" and for_add:
        return len(container)
    if not token.isdigit():
        raise PatchError(f"invalid list index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not for_add):
        raise PatchError(f"list index {index} out of range")
    return index


def _resolve(doc: Any, path: str) -> Any:
    node = doc
    for token in _tokens(path):
        node = _child(node, token)
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _tokens(path)
    if not tokens:
        return value
    parent = _resolve(doc, "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens[:-1])) \
        if len(tokens) > 1 else doc
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError(f"cannot add to {type(parent).__name__} at {path}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _tokens(path)
    if not tokens:
        return None, doc
    parent = doc
    for token in tokens[:-1]:
        parent = _child(parent, token)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"missing key {last!r} at {path}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, for_add=False))
    raise PatchError(f"cannot remove from {type(parent).__name__} at {path}")
