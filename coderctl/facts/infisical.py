"""What the Infisical Kubernetes operator writes into the Secrets it manages (pure; no I/O)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping

VERSION_ANNOTATION = "secrets.infisical.com/version"
"""On a managed Secret: the ETag of the data the operator last wrote, not Infisical's secret versions."""


def operator_etag(data: Mapping[str, bytes]) -> str:
    """The operator's `crypto.ComputeRenderedEtag` of a Secret's data: CRC32 over the key/value pairs in key
    order, each key and value followed by a NUL byte, as `W/"secrets-<length>-<CRC32 in hex>"`."""
    buf = b"".join(k.encode() + b"\0" + v + b"\0" for k, v in sorted(data.items()))
    return f'W/"secrets-{len(buf)}-{zlib.crc32(buf) & 0xFFFFFFFF:08X}"'
