"""Files that are either complete or absent: `.partial` names, fsync, atomic rename, private modes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coderctl.errors import CoderctlError, UsageError

PARTIAL = ".partial"
READ_CHUNK = 1 << 20


def private_dir(path: Path, warn: Callable[[str], None] | None = None) -> Path:
    """The backup directory: a new one is created 0700 (its missing parents with the usual mode); an
    existing one is used as it is, never chmod-ed (it may be /tmp, or a directory its owner made read-only
    on purpose), but refused when others could replace or remove what coderctl writes there:

    - writable by everyone (even with the sticky bit: others can take the names coderctl would use);
    - writable by a group this process is not in, or owned by another user (other than root);
    - writable by a group this process is in (a Kubernetes volume with fsGroup) is used, with a warning.
    """
    path = path.expanduser()
    try:
        created = _make_dirs(path)
        info = path.stat()
    except PermissionError:
        raise UsageError(f"backup directory {path}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"backup directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"backup directory {path} is not a directory")
    if created:
        return path
    problem, note = _too_open(info)
    if problem:
        raise UsageError(f"backup directory {path} {problem} (mode {stat.S_IMODE(info.st_mode):04o}): coderctl "
                         "does not write backups there, nor change its mode; use a directory only you can write "
                         "to, or a new one (created with mode 0700)")
    if note and warn is not None:
        warn(f"backup directory {path} {note} (mode {stat.S_IMODE(info.st_mode):04o})")
    return path


def _make_dirs(path: Path) -> bool:
    """Create `path` (mode 0700) and its missing parents; True when `path` itself was created here."""
    if path.exists():
        return False
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    return True


def _too_open(info: os.stat_result) -> tuple[str, str]:
    """(why the directory is refused, or ""; why it deserves a warning, or "")."""
    mode = stat.S_IMODE(info.st_mode)
    me = os.geteuid()
    if mode & stat.S_IWOTH:
        return "is writable by every user", ""
    if info.st_uid not in (me, 0):
        return f"belongs to another user (uid {info.st_uid})", ""
    if mode & stat.S_IWGRP:
        if info.st_gid not in {os.getegid(), *os.getgroups()}:
            return f"is writable by a group this process is not in (gid {info.st_gid})", ""
        return "", f"is writable by its group (gid {info.st_gid}), which this process is in"
    return "", ""


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

    def splice_from(self, fd: int, limit: int) -> int:
        """Move up to `limit` bytes from the pipe `fd` to the end of the file inside the kernel (Linux splice(2):
        no copy through Python); 0 at the pipe's end. OSError where the kernel or filesystem cannot splice."""
        moved = os.splice(fd, self._file.fileno(), limit)
        self.size += moved
        return moved

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
