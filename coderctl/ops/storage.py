"""Where backups live: a local directory or an S3-compatible bucket (`s3://BUCKET/PREFIX`).

Only names here: nothing imports an S3 library, so `--help` and local backups never pay for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coderctl.errors import UsageError

SCHEME = "s3://"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3(text: object) -> bool:
    return isinstance(text, str) and text.startswith(SCHEME)


@dataclass(frozen=True)
class S3URL:
    """A bucket and a key prefix (a "directory", ending in / unless empty) or a key (an object)."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, text: str) -> S3URL:
        if not is_s3(text):
            raise UsageError(f"{text}: not an s3://BUCKET/PREFIX URL")
        bucket, _, key = text[len(SCHEME):].partition("/")
        if not _BUCKET.match(bucket):
            raise UsageError(f"{text}: {bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, "
                             "dots and hyphens)")
        if "//" in key or any(part in (".", "..") for part in key.split("/")):
            raise UsageError(f"{text}: the key may not hold empty, '.' or '..' segments")
        return cls(bucket, key)

    @property
    def prefix(self) -> str:
        """The key as a directory: '' or ending in '/'."""
        return self.key if not self.key or self.key.endswith("/") else self.key + "/"

    @property
    def name(self) -> str:
        return self.key.rstrip("/").rpartition("/")[2]

    def child(self, name: str) -> S3URL:
        return S3URL(self.bucket, self.prefix + name)

    def sibling(self, name: str) -> S3URL:
        head = self.key.rpartition("/")[0]
        return S3URL(self.bucket, f"{head}/{name}" if head else name)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"
