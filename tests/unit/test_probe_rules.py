"""Pure rules behind the network checks: certificate name matching, Cloudflare facts, wildcard hosts."""

from __future__ import annotations

import pytest

from coderctl.checks import cloudflare
from coderctl.checks.tls import covers


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("coder.xuperson.org", "coder.xuperson.org", True),
    ("*.xuperson.org", "coderctl-probe-1a2b.xuperson.org", True),
    ("*.xuperson.org", "xuperson.org", False),
    ("*.xuperson.org", "a.b.xuperson.org", False),  # a wildcard covers exactly one label
    ("*.XUPERSON.org", "Coder.xuperson.org.", True),
    ("other.example.org", "coder.xuperson.org", False),
])
def test_certificate_name_matching(pattern: str, host: str, expected: bool) -> None:
    assert covers(pattern, host) is expected


def test_universal_ssl_covers_one_level() -> None:
    assert cloudflare.universal_ssl_gap("xuperson.org", "xuperson.org") is None
    gap = cloudflare.universal_ssl_gap("coder.xuperson.org", "xuperson.org")
    assert gap is not None and "2 levels below the zone xuperson.org" in gap
    assert cloudflare.levels_below("a.b.example.org", "example.org") == 2


def test_cloudflare_recognition() -> None:
    assert cloudflare.tunnel_id("6ff42ae2-765d-4adf-8112-31c55c1551ef.cfargotunnel.com.") == \
        "6ff42ae2-765d-4adf-8112-31c55c1551ef"
    assert cloudflare.tunnel_id("cfargotunnel.com") is None
    assert cloudflare.tunnel_id("x.y.cfargotunnel.com") is None
    assert cloudflare.is_cloudflare_address("104.16.1.1") and cloudflare.is_cloudflare_address("2606:4700::1")
    assert not cloudflare.is_cloudflare_address("192.168.80.101")
    assert not cloudflare.is_cloudflare_address("not-an-ip")
