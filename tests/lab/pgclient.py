"""PostgreSQL 17 (server and client, built with lz4 and zstd) beside the lab's PostgreSQL 15.

Debian 12 has PostgreSQL 15, whose pg_dump compresses with zlib only; pg_dump 16 and newer also write lz4 and
zstd archives, which is what a deployment on PostgreSQL 16 or 17 makes. No Debian 12 package has them, so the
lab takes Debian 13's: the packages are fetched from the Debian archive (found through its Packages index, so a
point release does not break the download) and unpacked (dpkg-deb -x) into a directory. Their programs are
then pointed at Debian 13's own C library and the unpacked libraries (patchelf: the loader, and an RPATH that
also serves the libraries they load), the system's libraries filling in the rest. Nothing is installed on the
system.

    python tests/lab/pgclient.py fetch DIR     # .ci/run does this (DIR/bin then holds the programs)

The tests find it through CODERCTL_LAB_PG_CLIENT (a bin directory), or in .lab/pg17/bin of the checkout.
pg_dump 17 also dumps the lab's PostgreSQL 15 server (compression is the client's business), and
`LabPostgres(bindir=...)` runs a 17 server.
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
PACKAGES = ("postgresql-17", "postgresql-client-17", "libpq5", "libc6", "libzstd1", "libldap2", "liblz4-1",
            "libicu76", "libxml2", "libssl3t64", "libstdc++6", "libgcc-s1")
DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".lab" / "pg17"
LIBDIR = "usr/lib/x86_64-linux-gnu"
PGDIR = "usr/lib/postgresql/17"


def bindir() -> Path | None:
    """The programs' directory when they are there and run, else None."""
    given = os.environ.get("CODERCTL_LAB_PG_CLIENT")
    where = Path(given) if given else DEFAULT_DIR / "bin"
    return where if (where / "pg_dump").exists() and _runs(where / "pg_dump") else None


def _index() -> dict[str, dict[str, str]]:
    url = f"{ARCHIVE}/dists/{SUITE}/main/binary-amd64/Packages.xz"
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (a fixed URL)
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
    """Download, unpack and point the programs at their libraries; the programs' directory (DIR/bin)."""
    if os.uname().machine != "x86_64":
        raise SystemExit(f"pgclient: only x86_64 is set up (this machine: {os.uname().machine})")
    patchelf = shutil.which("patchelf")
    if patchelf is None:
        raise SystemExit("pgclient: patchelf is needed (apt-get install patchelf)")
    index = _index()
    root = dest / "root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
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
    loader = root / LIBDIR / "ld-linux-x86-64.so.2"
    search = f"{root / LIBDIR}:{root / PGDIR / 'lib'}:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu"
    for program in (root / PGDIR / "bin").iterdir():
        if program.is_file() and not program.is_symlink() and program.read_bytes()[:4] == b"\x7fELF":
            subprocess.run([patchelf, "--set-interpreter", str(loader), "--remove-rpath", str(program)], check=True)
            subprocess.run([patchelf, "--force-rpath", "--set-rpath", search, str(program)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(dest)], check=True)  # the lab's server runs as `postgres`
    bins = dest / "bin"
    if bins.is_symlink() or bins.is_file():
        bins.unlink()
    elif bins.exists():
        shutil.rmtree(bins)
    bins.symlink_to(root / PGDIR / "bin")
    if not _runs(bins / "pg_dump") or not _runs(bins / "postgres"):
        raise SystemExit("pgclient: the unpacked programs do not run")
    return bins


def _runs(program: Path) -> bool:
    try:
        out = subprocess.run([str(program), "--version"], capture_output=True, text=True, check=False, timeout=30)
    except OSError:
        return False
    return out.returncode == 0 and "(PostgreSQL) 17" in out.stdout


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "fetch":
        raise SystemExit("usage: python tests/lab/pgclient.py fetch DIR")
    where = fetch(Path(sys.argv[2]).resolve())
    print(f"PostgreSQL 17 with lz4 and zstd: {where}")
