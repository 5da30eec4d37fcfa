"""Just enough Kubernetes protobuf to read what kubectl's typed clients POST (SelfSubjectAccessReview).

Wire format: the 4-byte magic ``k8s\\0`` then a ``runtime.Unknown`` message (1 typeMeta{1 apiVersion, 2 kind},
2 raw); ``raw`` is the object, whose fields follow the generated.proto of its API group.
"""

from __future__ import annotations

from typing import Any

MAGIC = b"k8s\x00"
_RESOURCE_ATTRIBUTES = ("namespace", "verb", "group", "version", "resource", "subresource", "name")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> dict[int, list[bytes | int]]:
    """Field number -> values (length-delimited fields as bytes, varints as int)."""
    out: dict[int, list[bytes | int]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _text(values: dict[int, list[bytes | int]], number: int) -> str:
    raw = values.get(number, [b""])[0]
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded SelfSubjectAccessReview as its JSON form; anything else is a ValueError."""
    if not body.startswith(MAGIC):
        raise ValueError("not a Kubernetes protobuf message")
    unknown = fields(body[len(MAGIC):])
    type_meta = fields(unknown.get(1, [b""])[0])  # type: ignore[arg-type]
    kind = _text(type_meta, 2)
    if kind != "SelfSubjectAccessReview":
        raise ValueError(f"protobuf bodies are only understood for SelfSubjectAccessReview, not {kind!r}")
    review = fields(unknown.get(2, [b""])[0])  # type: ignore[arg-type]
    spec = fields(review.get(2, [b""])[0])  # type: ignore[arg-type]
    out_spec: dict[str, Any] = {}
    if 1 in spec:
        attrs = fields(spec[1][0])  # type: ignore[arg-type]
        out_spec["resourceAttributes"] = {
            name: _text(attrs, i + 1) for i, name in enumerate(_RESOURCE_ATTRIBUTES) if _text(attrs, i + 1)
        }
    if 2 in spec:
        attrs = fields(spec[2][0])  # type: ignore[arg-type]
        out_spec["nonResourceAttributes"] = {"path": _text(attrs, 1), "verb": _text(attrs, 2)}
    return {"apiVersion": _text(type_meta, 1), "kind": kind, "metadata": {}, "spec": out_spec}
