from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from lab.tls import LabCA, lab_ca  # noqa: F401

HOSTS = ["coder.xuperson.org", "*.xuperson.org"]


def _handshake(client: ssl.SSLContext, cert: Path, key: Path, server_hostname: str) -> None:
    """Run a full TLS handshake between two in-memory endpoints: no sockets involved."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for side, obj in (("c", c), ("s", s)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def _not_after(cert: Path) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc


def test_cert_for_access_host_and_wildcard_validates(lab_ca: LabCA) -> None:
    cert, key = lab_ca.issue(HOSTS, name="coder")
    assert lab_ca.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    for host in ("coder.xuperson.org", "my-workspace--main.xuperson.org"):
        _handshake(lab_ca.ssl_client_context(), cert, key, host)
    assert _not_after(cert) > dt.datetime.now(dt.UTC)


def test_wildcard_covers_one_label_only(lab_ca: LabCA) -> None:
    cert, key = lab_ca.issue(HOSTS, name="coder-one-level")
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _handshake(lab_ca.ssl_client_context(), cert, key, "app.ws.xuperson.org")


def test_other_ca_is_not_trusted(lab_ca: LabCA, tmp_path: Path) -> None:
    other = LabCA(tmp_path / "other")
    cert, key = other.issue(HOSTS, name="coder")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(lab_ca.ssl_client_context(), cert, key, "coder.xuperson.org")


def test_expired_cert_is_expired(lab_ca: LabCA) -> None:
    cert, key = lab_ca.issue(HOSTS, name="coder-expired", expired=True)
    assert _not_after(cert) < dt.datetime.now(dt.UTC)
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        _handshake(lab_ca.ssl_client_context(), cert, key, "coder.xuperson.org")


def test_not_after_is_honoured(lab_ca: LabCA) -> None:
    end = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0)
    cert, key = lab_ca.issue(HOSTS, name="coder-soon", not_after=end)
    assert _not_after(cert) == end
    _handshake(lab_ca.ssl_client_context(), cert, key, "coder.xuperson.org")
    assert key.stat().st_mode & 0o077 == 0
