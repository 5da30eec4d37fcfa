"""A streamed multipart upload that is either completed whole or aborted: nothing is ever visible under the
key until `complete()`, which the caller only calls once the dump is proven whole.

Memory is bounded: one part filling, one queued, one in flight (8 MiB each, 16 MiB after 2500 parts and
32 MiB after 5000, so 10000 parts reach 220 GB). Parts go up in order from one thread (servers such as
rclone stream them to their backend in part order). Each part carries its Content-MD5, which the server
checks; its ETag must echo that MD5 (unless the server encrypts with KMS, where ETags are opaque), and the
completed object must have the multipart ETag of those MD5s and the size that was written.
"""

from __future__ import annotations

import base64
import hashlib
import queue
import re
import threading
from collections.abc import Mapping
from typing import Any

from coderctl.errors import CoderctlError
from coderctl.ops.s3 import Bucket, S3Error

BASE_PART = 8 << 20
MAX_PARTS = 10000
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})(-\d+)?"?$')


def part_size(number: int, base: int = BASE_PART) -> int:
    """The size of part `number` (1-based): doubling twice so that 10000 parts hold 220 GB at 8 MiB."""
    return base << min((number - 1) // 2500, 2)


class MultipartWriter:
    def __init__(self, bucket: Bucket, key: str, *, base_part: int | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        """Start the upload; `extra` adds arguments to CreateMultipartUpload (an object lock)."""
        self.bucket = bucket
        self.key = key
        self.base_part = base_part or bucket.settings.part_size
        self.size = 0
        self.completed = False
        self._buf = bytearray()
        self._next = 1
        self._md5s: list[bytes] = []
        self._parts: list[dict[str, Any]] = []
        self._error: CoderctlError | None = None
        self._queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        created = bucket._call(f"start the upload of {key}", "create_multipart_upload", Key=key,
                               ContentType="application/octet-stream", **bucket.settings.encryption(),
                               **(extra or {}))
        self.upload_id: str = created["UploadId"]
        self._thread = threading.Thread(target=self._upload_parts, name="s3-parts", daemon=True)
        self._thread.start()

    @property
    def _opaque_etags(self) -> bool:
        return self.bucket.settings.sse == "aws:kms" or bool(self.bucket.settings.kms_key_id)

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data
        self.size += len(data)
        while len(self._buf) >= part_size(self._next, self.base_part):
            cut = part_size(self._next, self.base_part)
            with memoryview(self._buf) as view:
                part = bytes(view[:cut])
            del self._buf[:cut]
            self._send(part)

    def _send(self, part: bytes) -> None:
        if self._next > MAX_PARTS:
            raise S3Error(f"the dump is larger than {MAX_PARTS} parts: too large for one S3 object")
        self._md5s.append(hashlib.md5(part, usedforsecurity=False).digest())
        item = (self._next, part)
        self._next += 1
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._error is not None:
                    raise self._error from None

    def _upload_parts(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            if self._error is not None:
                continue
            number, part = item
            digest = self._md5s[number - 1]
            try:
                r = self.bucket.client.upload_part(
                    Bucket=self.bucket.name, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=part,
                    ContentMD5=base64.b64encode(digest).decode())
            except Exception as exc:
                self._error = self.bucket.error(exc, f"upload part {number} of {self.key}")
                continue
            etag = str(r.get("ETag") or "")
            match = _MD5_ETAG.match(etag)
            if not self._opaque_etags and match and match.group(1) != digest.hex():
                self._error = S3Error(f"part {number} of {self.key}: the server's ETag {etag} is not the part's "
                                      "MD5: the bytes stored differ from the bytes sent")
                continue
            self._parts.append({"PartNumber": number, "ETag": etag})

    def finish(self) -> None:
        """Send what is left and wait until every part is stored (before the dump is declared whole)."""
        if self._buf or self._next == 1:
            self._send(bytes(self._buf))
            self._buf = bytearray()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def complete(self) -> str:
        """Make the object visible; its size and ETag are checked against what was sent. Returns the ETag."""
        done = self.bucket._call(f"complete the upload of {self.key}", "complete_multipart_upload", Key=self.key,
                                 UploadId=self.upload_id, MultipartUpload={"Parts": self._parts})
        self.completed = True
        info = self.bucket.head(self.key)
        if info is None or info.size != self.size:
            raise S3Error(f"s3://{self.bucket.name}/{self.key} holds {info.size if info else 'no'} bytes after the "
                          f"upload of {self.size}")
        etag = str(done.get("ETag") or info.etag)
        expected = f"{hashlib.md5(b''.join(self._md5s), usedforsecurity=False).hexdigest()}-{len(self._md5s)}"
        match = _MD5_ETAG.match(etag)
        if not self._opaque_etags and match and match.group(2) and etag.strip('"') != expected:
            raise S3Error(f"s3://{self.bucket.name}/{self.key}: the completed object's ETag {etag} is not that of "
                          "the parts sent")
        return etag

    def abort(self) -> str:
        """Stop and abort the upload; '' when aborted, else why it could not be (the upload is left)."""
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=5)
        if self.completed:
            try:
                self.bucket.delete(self.key)
            except CoderctlError as exc:
                return str(exc)
            return ""
        try:
            self.bucket.abort(self.key, self.upload_id)
        except CoderctlError as exc:
            return str(exc)
        return ""
