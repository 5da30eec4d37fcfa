"""A newer PostgreSQL client (pg_dump, pg_restore, psql 17, built with lz4 and zstd) beside the lab's server.

Debian 12 has PostgreSQL 15, whose pg_dump compresses with zlib only; pg_dump 16 and newer also write lz4 and
zstd archives, which is what a deployment on PostgreSQL 16 or 17 makes. No Debian 12 package has that
client, so the lab takes Debian 13's: the packages are fetched from the Debian archive (found through its
Packages index, so a point release does not break the download), unpacked (dpkg -x) into a directory and run
with Debian 13's own C library through its dynamic loader (`ld-linux-x86-64.so.2 --library-path`), the
system's libraries filling in the rest. Nothing is installed on the system.

    python tests/lab/pgclient.py fetch DIR     # .ci/run does this; DIR/bin then holds the wrappers

The tests find the client through CODERCTL_LAB_PG_CLIENT (DIR/bin), or in .lab/pg17/bin of the checkout.
pg_dump 17 dumps the lab's PostgreSQL 15 server: compression is the client's business.
"""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ARCHIVE = "http://deb.debian.org/debian"
SUITE = "trixie"
PACKAGES = ("postgresql-client-17", "libpq5", "libc6", "libzstd1", "libldap2", "liblz4-1")
TOOLS = ("pg_dump", "pg_restore", "psql")
DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".lab" / "pg17"
LIBDIR = "usr/lib/x86_64-linux-gnu"


def bindir() -> Path | None:
    """The wrappers' directory when the client is there and runs, else None."""
    given = os.environ.get("CODERCTL_LAB_PG_CLIENT")
    where = Path(given) if given else DEFAULT_DIR / "bin"
    pg_dump = where / "pg_dump"
    return where if pg_dump.exists() and _runs(pg_dump) else None


def _index() -> dict[str, dict[str, str]]:
    url = f"{ARCHIVE}/dists/{SUITE}/main/binary-amd64/Packages.xz"
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (a fixed https/http URL)
        text = lzma.decompress(response.read()).decode("utf-8", "replace")
    packages: dict[str, dict[str, str]] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if "Package" in fields:
            packages[fields["Package"]] = fields
    return packages


def fetch(dest: Path) -> Path:
    """Download and unpack the client into `dest`; the wrappers' directory."""
    if os.uname().machine != "x86_64":
        raise SystemExit(f"pgclient: only x86_64 is set up (this machine: {os.uname().machine})")
    index = _index()
    root = dest / "root"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="pgclient-"))
    try:
        for name in PACKAGES:
            fields = index[name]
            deb = staging / Path(fields["Filename"]).name
            with urllib.request.urlopen(f"{ARCHIVE}/{fields['Filename']}", timeout=120) as response, \
                    open(deb, "wb") as fh:  # noqa: S310
                shutil.copyfileobj(response, fh)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    bins = dest / "bin"
    bins.mkdir(parents=True, exist_ok=True)
    libs = f"{root / LIBDIR}:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu"
    for tool in TOOLS:
        wrapper = bins / tool
        wrapper.write_text(f'#!/bin/sh\nexec "{root / LIBDIR}/ld-linux-x86-64.so.2" --library-path "{libs}" '
                           f'"{root}/usr/lib/postgresql/17/bin/{tool}" "$@"\n')
        wrapper.chmod(0o755)
    if not _runs(bins / "pg_dump"):
        raise SystemExit("pgclient: the unpacked pg_dump does not run")
    return bins


def _runs(pg_dump: Path) -> bool:
    out = subprocess.run([str(pg_dump), "--version"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and "(PostgreSQL) 17" in out.stdout


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "fetch":
        raise SystemExit("usage: python tests/lab/pgclient.py fetch DIR")
    where = fetch(Path(sys.argv[2]).resolve())
    print(f"pg_dump 17 with lz4 and zstd: {where}")
