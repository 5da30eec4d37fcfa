"""The manifest beside each backup (`NAME.json`): what was dumped, how, and whether it was proven whole."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from coderctl.errors import CoderctlError, UsageError
from coderctl.ops.files import write_json

MANIFEST_VERSION = 1
EXTENSIONS = {"custom": ".dump", "plain": ".sql"}
_STAMP = "%Y%m%dT%H%M%SZ"
_NAME = re.compile(r"^(?P<db>.+)-(?P<stamp>\d{8}T\d{6}Z)(?P<tag>-[a-z0-9-]+)?\.(?:dump|sql)$")


class ManifestError(CoderctlError):
    pass


@dataclass
class Verification:
    status: str  # ok | failed | skipped
    method: str = ""
    detail: str = ""
    at: str | None = None


@dataclass
class Manifest:
    file: str
    created_at: str
    duration_s: float
    via: str
    format: str
    database: str
    size: int
    sha256: str
    verification: Verification
    server_version: str | None = None
    pg_dump_version: str | None = None
    coder_version: str | None = None
    compression: int | None = None
    """The compression level asked of pg_dump (0: none; None: the method's default, or unknown)."""
    compression_method: str | None = None
    """none, gzip, lz4 or zstd, as the archive's header names it; older manifests lack it (their archives
    are gzip, or none at level 0)."""
    source: dict[str, str] = field(default_factory=dict)
    tables: dict[str, int] | None = None
    coderctl: str = ""
    manifest_version: int = MANIFEST_VERSION

    @property
    def time(self) -> datetime:
        return parse_time(self.created_at)

    @property
    def verified(self) -> bool:
        return self.verification.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"manifest_version": data.pop("manifest_version"), "coderctl": data.pop("coderctl"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from its JSON; ManifestError names the first field that is missing or of the wrong
        type, so one damaged manifest is one bad entry, never an error for the whole directory."""
        values = dict(data)
        verification = values.get("verification") or {"status": "skipped"}
        if not isinstance(verification, dict) or not isinstance(verification.get("status"), str):
            raise ManifestError("manifest field verification is not an object with a status")
        known = set(Verification.__dataclass_fields__)
        values["verification"] = Verification(**{k: v for k, v in verification.items() if k in known})
        for name, types, required in _FIELDS:
            if name not in values:
                if required:
                    raise ManifestError(f"manifest has no {name}")
                continue
            value = values[name]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise ManifestError(f"manifest field {name} is {_kind(value)}, expected {_kind_of(types)}")
        if values["format"] not in EXTENSIONS:
            raise ManifestError(f"manifest field format is {values['format']!r}, expected custom or plain")
        if not re.fullmatch(r"[0-9a-f]{64}", values["sha256"]):
            raise ManifestError("manifest field sha256 is not a SHA-256 in hex")
        if values["size"] < 0:
            raise ManifestError("manifest field size is negative")
        tables = values.get("tables")
        if tables is not None and not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                          for k, v in tables.items()):
            raise ManifestError("manifest field tables is not a map of table names to row counts")
        try:
            parse_time(values["created_at"])
        except (ValueError, OverflowError):
            raise ManifestError(f"manifest field created_at is not a time: {values['created_at'][:40]!r}") from None
        fields = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in fields})


_STR = (str,)
_OPT_STR = (str, type(None))
_FIELDS: tuple[tuple[str, tuple[type, ...], bool], ...] = (
    ("file", _STR, True), ("created_at", _STR, True), ("duration_s", (int, float), True), ("via", _STR, True),
    ("format", _STR, True), ("database", _STR, True), ("size", (int,), True), ("sha256", _STR, True),
    ("server_version", _OPT_STR, False), ("pg_dump_version", _OPT_STR, False),
    ("coder_version", _OPT_STR, False), ("compression", (int, type(None)), False),
    ("compression_method", _OPT_STR, False), ("source", (dict,), False),
    ("tables", (dict, type(None)), False), ("coderctl", _STR, False), ("manifest_version", (int,), False),
)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _kind_of(types: tuple[type, ...]) -> str:
    return " or ".join(dict.fromkeys(_kind(t()) if t is not type(None) else "null" for t in types))


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def backup_name(database: str, moment: datetime, fmt: str, tag: str = "") -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", database) or "database"
    return f"{safe}-{moment.astimezone(UTC).strftime(_STAMP)}{'-' + tag if tag else ''}{EXTENSIONS[fmt]}"


def sequence_from_name(name: str) -> int:
    """The -2, -3, ... that a backup started in the same second as another gets (1 without one): the order of
    backups whose times are equal."""
    match = _NAME.match(name.rpartition("/")[2])
    tail = (match.group("tag") or "").rpartition("-")[2] if match else ""
    return int(tail) if tail.isdigit() else 1


def time_from_name(name: str) -> datetime | None:
    match = _NAME.match(name)
    if not match:
        return None
    return datetime.strptime(match.group("stamp"), _STAMP).replace(tzinfo=UTC)


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + ".json")


def encode(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.as_dict(), indent=2) + "\n").encode()


def write(backup: Path, manifest: Manifest) -> Path:
    path = manifest_path(backup)
    write_json(path, manifest.as_dict())
    return path


def read(backup: Path) -> Manifest:
    path = manifest_path(backup)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path.name} is missing: without a manifest there is no checksum to check") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{path.name} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path.name} is not a coderctl manifest")
    try:
        return Manifest.from_dict(data)
    except ManifestError as exc:
        raise ManifestError(f"{path.name}: {exc}") from None


def backup_file(arg: str | Path) -> Path:
    """The backup a user named: the dump itself or its manifest."""
    path = Path(arg).expanduser()
    if path.name.endswith((".dump.json", ".sql.json")):
        path = path.with_name(path.name[: -len(".json")])
    if not path.exists():
        raise UsageError(f"{path}: no such backup file")
    return path


def sniff_format(path: Path) -> str:
    with open(path, "rb") as fh:
        return "custom" if fh.read(5) == b"PGDMP" else "plain"
