"""Files that are either complete or absent: `.partial` names, fsync, atomic rename, private modes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from coderctl.errors import CoderctlError, UsageError

PARTIAL = ".partial"
READ_CHUNK = 1 << 20


def private_dir(path: Path) -> Path:
    """Create the directory 0700 (parents too); an existing one that others can read is tightened."""
    path = path.expanduser()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except PermissionError:
        raise UsageError(f"backup directory {path}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"backup directory {path}: {exc.strerror}") from None
    if not path.is_dir():
        raise UsageError(f"backup directory {path} is not a directory")
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PartialFile:
    """A new file written under `NAME.partial` (0600) and renamed to NAME by `commit()`.

    `discard()` (also on any exception inside `with`) removes the partial file; nothing ever appears under
    the final name unless `commit()` ran after a successful fsync.
    """

    def __init__(self, final: Path, *, replace: bool = False) -> None:
        self.final = final
        self.partial = final.with_name(final.name + PARTIAL)
        if final.exists() and not replace:
            raise CoderctlError(f"{final} already exists")
        if replace:
            self.partial.unlink(missing_ok=True)
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self.size = 0
        self.committed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if written is None:
                continue
            view = view[written:]
        self.size += len(data)

    def sync(self) -> None:
        """Flush to disk and close for writing."""
        if not self._file.closed:
            os.fsync(self._file.fileno())
            self._file.close()

    def commit(self) -> Path:
        self.sync()
        os.rename(self.partial, self.final)
        fsync_dir(self.final.parent)
        self.committed = True
        return self.final

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        if not self.committed:
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or not self.committed:
            self.discard()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write (or replace) a JSON file atomically: partial name, fsync, rename; mode 0600."""
    with PartialFile(path, replace=True) as out:
        out.write((json.dumps(data, indent=2) + "\n").encode())
        out.commit()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
