"""A throw-away certificate authority for the lab, minted per test session with `trustme`."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

__all__ = ["LabCA", "lab_ca"]


class LabCA:
    """A `trustme.CA` whose CA certificate and issued certificates live as PEM files in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="coderctl lab CA")
        self.ca_file = self.directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(
        self,
        hosts: list[str],
        *,
        name: str,
        expired: bool = False,
        not_after: dt.datetime | None = None,
    ) -> tuple[Path, Path]:
        """Issue a leaf certificate for `hosts` (DNS names, wildcards or IPs).

        Returns the paths of the certificate chain PEM (leaf first) and of the private key PEM, written
        as `<name>.pem` and `<name>.key`. `expired=True` makes a certificate that ended yesterday;
        `not_after` sets the end of validity explicitly (e.g. in 3 days, to test expiry warnings).
        """
        if not hosts:
            raise ValueError("a certificate needs at least one host")
        now = dt.datetime.now(dt.UTC)
        not_before: dt.datetime | None = None
        if expired:
            not_before = now - dt.timedelta(days=30)
            not_after = not_after or now - dt.timedelta(days=1)
        elif not_after is not None:
            not_before = min(now - dt.timedelta(hours=1), not_after - dt.timedelta(days=1))
        leaf = self.ca.issue_cert(*hosts, not_before=not_before, not_after=not_after)
        cert_path = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key_path))
        key_path.chmod(0o600)
        return cert_path, key_path

    def ssl_client_context(self) -> ssl.SSLContext:
        """A client context that verifies hostnames and trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="session")
def lab_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCA]:
    yield LabCA(tmp_path_factory.mktemp("lab-ca"))
