"""Real Knot DNS (`knotd`) on loopback, serving the reference `xuperson.org` zone and its tunnel target.

Each `LabDNS` runs one knotd in the foreground with a generated config in a temp dir, listening on
127.0.0.1 (UDP and TCP) on one random free port. Query it only at that address, e.g. with
`dns.query.udp(msg, "127.0.0.1", port=server.port)`; never through the system resolver.

As authoritative servers do, knotd does not follow a CNAME into another zone: asking for
`coder.xuperson.org` gives the CNAME to `<tunnel>.cfargotunnel.com.`, and a resolver asks again for
that name, which the same server answers from its `cfargotunnel.com` zone.
"""

from __future__ import annotations

import ipaddress
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from lab.procguard import die_with_parent, terminate

__all__ = [
    "DEFAULT_TUNNEL_ID",
    "LabDNS",
    "external_dns_txt",
    "lab_dns",
    "make_dns",
    "reference_zone",
    "reference_zones",
    "tunnel_zone",
]

DEFAULT_TUNNEL_ID = "6ff42ae2-765d-4adf-8112-31c55c1551ef"
ZONE = "xuperson.org"
TUNNEL_ZONE = "cfargotunnel.com"


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if not found:
        raise RuntimeError(f"{name} not found (Debian package knot)")
    return found


def _free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP at the time of the call."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for TCP and UDP")


def _name(zone: str) -> str:
    return zone.rstrip(".").lower()


def external_dns_txt(resource: str, owner: str = "default") -> str:
    """The value ExternalDNS's TXT registry writes (endpoint/labels.go SerializePlain, with quotes)."""
    return f'"heritage=external-dns,external-dns/owner={owner},external-dns/resource={resource}"'


def reference_zone(
    *,
    wildcard: bool = True,
    serial: int = 2026112601,
    tunnel_id: str = DEFAULT_TUNNEL_ID,
    coder_target: str | None = None,
) -> str:
    """The `xuperson.org` zone as ExternalDNS keeps it for the reference deployment.

    `coder` and (when `wildcard`) `*` are CNAMEs to the Cloudflare tunnel. `coder_target` replaces the
    `coder` record: an IP address gives an A/AAAA record, a name a CNAME (for stale or wrong zones).

    Ownership TXT records use the registry's current naming, `<record type>-<name>` (registry/mapper):
    `cname-coder` and, since no --txt-wildcard-replacement is set, `cname-*`. The legacy TXT at the
    record's own name cannot sit next to a CNAME, so it exists only for the A record `www`, which shows
    both formats.
    """
    tunnel = f"{tunnel_id}.{TUNNEL_ZONE}."
    if coder_target is None:
        coder = f"coder           CNAME  {tunnel}"
    else:
        try:
            ip = ipaddress.ip_address(coder_target)
            coder = f"coder           {'A' if ip.version == 4 else 'AAAA'}      {ip}"
        except ValueError:
            coder = f"coder           CNAME  {coder_target.rstrip('.')}."
    coder_type = coder.split()[1].lower()
    lines = [
        f"$ORIGIN {ZONE}.",
        "$TTL 300",
        f"@               SOA    ns1.{ZONE}. hostmaster.{ZONE}. {serial} 3600 600 604800 300",
        f"@               NS     ns1.{ZONE}.",
        "ns1             A      127.0.0.1",
        coder,
        f"{coder_type}-coder     TXT    {external_dns_txt('ingress/coder/coder')}",
        "www             A      127.0.0.1",
        f"a-www           TXT    {external_dns_txt('ingress/web/www')}",
        f"www             TXT    {external_dns_txt('ingress/web/www')}",
        f"infisical       CNAME  {tunnel}",
        f"cname-infisical TXT    {external_dns_txt('ingress/infisical/infisical')}",
    ]
    if wildcard:
        lines += [
            f"*               CNAME  {tunnel}",
            f"cname-*         TXT    {external_dns_txt('ingress/coder/coder-workspaces-wildcard')}",
        ]
    return "\n".join(lines) + "\n"


def tunnel_zone(*, tunnel_id: str = DEFAULT_TUNNEL_ID, serial: int = 2026112601) -> str:
    """A `cfargotunnel.com` zone where the tunnel name resolves to loopback."""
    return (
        f"$ORIGIN {TUNNEL_ZONE}.\n"
        "$TTL 300\n"
        f"@            SOA   ns1.{TUNNEL_ZONE}. hostmaster.{TUNNEL_ZONE}. {serial} 3600 600 604800 300\n"
        f"@            NS    ns1.{TUNNEL_ZONE}.\n"
        "ns1          A     127.0.0.1\n"
        f"{tunnel_id}  A     127.0.0.1\n"
        f"{tunnel_id}  AAAA  ::1\n"
    )


def reference_zones(
    *,
    wildcard: bool = True,
    serial: int = 2026112601,
    tunnel_id: str = DEFAULT_TUNNEL_ID,
    coder_target: str | None = None,
) -> dict[str, str]:
    """`xuperson.org` (see `reference_zone`) plus the `cfargotunnel.com` zone its CNAMEs point into."""
    return {
        ZONE: reference_zone(
            wildcard=wildcard, serial=serial, tunnel_id=tunnel_id, coder_target=coder_target
        ),
        TUNNEL_ZONE: tunnel_zone(tunnel_id=tunnel_id),
    }


class LabDNS:
    """One knotd serving `zones` (zone name -> zone file text); `start()`/`stop()` or a context manager."""

    address = "127.0.0.1"

    def __init__(self, zones: dict[str, str]) -> None:
        if not zones:
            raise ValueError("LabDNS needs at least one zone")
        self.zones = {_name(z): text for z, text in zones.items()}
        self.port = 0
        self.root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def nameserver(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("LabDNS is not started")
        return self.root

    @property
    def logfile(self) -> Path:
        return self._root() / "knotd.log"

    def _write_zones(self) -> None:
        for zone, text in self.zones.items():
            (self._root() / f"{zone}.zone").write_text(text)

    def _write_config(self) -> Path:
        root = self._root()
        zones = "".join(f"  - domain: {zone}.\n    file: {zone}.zone\n" for zone in self.zones)
        conf = root / "knot.conf"
        conf.write_text(
            "server:\n"
            f"    listen: {self.address}@{self.port}\n"
            f"    rundir: {root}\n"
            f"    pidfile: {root}/knot.pid\n"
            "    udp-workers: 1\n"
            "    tcp-workers: 1\n"
            "    background-workers: 1\n"
            "database:\n"
            f"    storage: {root}/db\n"
            "control:\n"
            f"    listen: {root}/knot.sock\n"
            "log:\n"
            "  - target: stderr\n"
            "    any: info\n"
            "template:\n"
            "  - id: default\n"
            f"    storage: {root}\n"
            "    journal-content: none\n"
            "    zonefile-load: whole\n"
            "    zonefile-sync: -1\n"
            "zone:\n" + zones
        )
        return conf

    def start(self, *, port: int | None = None) -> Self:
        """Start knotd; `port` pins the port (used by restarts), otherwise a free one is picked."""
        if self._proc is not None:
            raise RuntimeError("already started")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="coderctl-lab-dns-"))
        self._write_zones()
        try:
            for attempt in range(3):
                self.port = port or _free_port()
                conf = self._write_config()
                with open(self.logfile, "ab") as log:
                    self._log_offset = log.tell()
                    self._proc = subprocess.Popen(
                        die_with_parent([_binary("knotd"), "-c", str(conf)]),
                        cwd=self.root,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                if self._wait_ready():
                    return self
                log_text = self._log_since_start()
                self._terminate()
                if port is not None or "Address already in use" not in log_text or attempt == 2:
                    raise RuntimeError(f"knotd did not start:\n{log_text[-3000:]}")
        except BaseException:
            self.stop()
            raise
        return self

    def _soa_serials(self, timeout: float = 0.3) -> dict[str, int | None]:
        """The SOA serial each zone answers with authoritatively, None where it does not (yet)."""
        serials: dict[str, int | None] = {}
        for zone in self.zones:
            try:
                reply = self.query(zone, "SOA", timeout=timeout)
            except (dns.exception.Timeout, OSError):
                serials[zone] = None
                continue
            ok = reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA and reply.answer
            serials[zone] = int(reply.answer[0][0].serial) if ok else None
        return serials

    def _log_since_start(self) -> str:
        with open(self.logfile, "rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            log = self._log_since_start()
            if "zone event 'load' failed" in log:
                return False
            # Querying earlier would only wait for UDP timeouts.
            if "server started" in log and all(s is not None for s in self._soa_serials()):
                return True
            time.sleep(0.02)
        return False

    def query(
        self, qname: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 2.0
    ) -> dns.message.Message:
        """Ask this server (and only it) one question."""
        msg = dns.message.make_query(qname, dns.rdatatype.from_text(rdtype))
        if tcp:
            return dns.query.tcp(msg, self.address, port=self.port, timeout=timeout)
        return dns.query.udp(msg, self.address, port=self.port, timeout=timeout)

    def reload(self, zones: dict[str, str]) -> None:
        """Serve `zones` from now on.

        Same zone names: the files are rewritten and reloaded with `knotc zone-reload` (blocking), so
        the serial may also go down. Other zone names: knotd restarts on the same port.
        """
        new = {_name(z): text for z, text in zones.items()}
        if set(new) != set(self.zones) or self._proc is None:
            port = self.port or None
            self._terminate()
            self.zones = new
            self.start(port=port)
            return
        self.zones = new
        self._write_zones()
        result = subprocess.run(
            [_binary("knotc"), "-s", str(self._root() / "knot.sock"), "-b", "-t", "10", "zone-reload"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"knotc zone-reload failed: {result.stdout}{result.stderr}\n"
                f"{self.logfile.read_text(errors='replace')[-2000:]}"
            )

    def _terminate(self) -> None:
        if self._proc is None:
            return
        terminate(self._proc)
        self._proc = None

    def stop(self) -> None:
        self._terminate()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def lab_dns() -> Iterator[LabDNS]:
    """The healthy DNS for the whole session: `reference_zones()`. Do not reload it; use `make_dns`."""
    with LabDNS(reference_zones()) as server:
        yield server


@pytest.fixture
def make_dns() -> Iterator[Callable[[dict[str, str]], LabDNS]]:
    """Factory: `make_dns(zones)` starts another knotd; all of them stop at the end of the test."""
    servers: list[LabDNS] = []

    def factory(zones: dict[str, str]) -> LabDNS:
        server = LabDNS(zones)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()
