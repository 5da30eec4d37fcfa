"""How a custom archive is compressed: `backup create --compress`, and what `auto` picks.

pg_dump up to 15 compresses with zlib only (`-Z 0-9`); 16 and newer also write lz4 and zstd (`-Z zstd:1`) when
built with them. Measured on the lab's 400 MB of Coder-like data with pg_dump 17 (docs/backup.md): zstd at
level 1 took 1.40 s and wrote 47.6 MB, gzip at level 1 1.75 s and 60.2 MB, gzip at 6 (pg_dump's default)
4.2 s and 52.2 MB, lz4 1.47 s and 93.9 MB. So `auto` is zstd:1 where the pg_dump that runs can write it,
else gzip:1 (zlib level 1). Whether it can is asked of pg_dump itself (`supported`, or the pod's shell
script): its version does not tell how it was built.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

METHODS = ("gzip", "lz4", "zstd", "none")
LEVELS = {"gzip": (1, 9), "lz4": (1, 12), "zstd": (1, 22)}
CHOICES = "auto, 0-9 (zlib level), gzip[:1-9], lz4[:1-12], zstd[:1-22] or none"
PROBE_HOST = "/nonexistent/coderctl-probe"
"""A socket directory that cannot exist: the probe's pg_dump stops at the connection, after its options were
checked, or before it at a compression it cannot write."""


@dataclass(frozen=True)
class Compression:
    method: str
    """auto, gzip, lz4, zstd or none."""
    level: int | None = None
    """None: the method's own default (pg_dump's: gzip 6, lz4 1, zstd 3)."""

    def __str__(self) -> str:
        return self.method if self.level is None else f"{self.method}:{self.level}"

    def pg_dump_args(self) -> list[str]:
        """-Z as every pg_dump since 9.x reads it for zlib (and none), as 16+ reads it for lz4 and zstd."""
        if self.method == "auto":
            raise ValueError("auto is resolved before pg_dump runs")
        if self.method == "none":
            return ["-Z", "0"]
        if self.method == "gzip":
            return ["-Z", str(6 if self.level is None else self.level)]
        return ["-Z", str(self)]


AUTO = Compression("auto")
PREFERRED = Compression("zstd", 1)
FALLBACK = Compression("gzip", 1)


def parse(text: str) -> Compression:
    """`--compress`'s value; ValueError with a one-line reason."""
    value = text.strip().lower()
    if value == "auto":
        return AUTO
    if value.isdigit() and len(value) == 1:
        return Compression("none") if value == "0" else Compression("gzip", int(value))
    method, sep, level = value.partition(":")
    if method not in METHODS:
        raise ValueError(f"{text!r} is not a compression: use {CHOICES}")
    if method == "none":
        if sep:
            raise ValueError(f"{text!r}: none takes no level")
        return Compression("none")
    if not sep:
        return Compression(method)
    low, high = LEVELS[method]
    if not (level.isdigit() and low <= int(level) <= high):
        raise ValueError(f"{text!r}: the level of {method} is {low} to {high}")
    return Compression(method, int(level))


def supported(pg_dump: str, wanted: Compression = PREFERRED) -> bool:
    """Whether this pg_dump writes `wanted`: it is run with it against a socket that does not exist, and
    refuses a compression it cannot write (15 and older: "invalid value ... -Z/--compress"; 16+ built without
    it: "this build does not support compression with ZSTD") before it tries to connect."""
    env = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        out = subprocess.run([pg_dump, "-w", "-Fc", *wanted.pg_dump_args(), "-h", PROBE_HOST, "-f", os.devnull],
                             env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode != 0 and "compress" not in out.stderr.lower()


def resolve(wanted: Compression, pg_dump: str, major: int) -> Compression:
    """`auto` made concrete for a local pg_dump; anything else as given."""
    if wanted.method != "auto":
        return wanted
    return PREFERRED if major >= 16 and supported(pg_dump) else FALLBACK
