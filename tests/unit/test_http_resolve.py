from __future__ import annotations

import pytest

from coderctl.clients.dns import Nameserver
from coderctl.clients.http import Resolver, ResolveRule, Target
from coderctl.clients.postgres import DatabaseURL
from coderctl.errors import UsageError


def test_resolve_rules() -> None:
    r = Resolver.parse(["coder.example.org:443:127.0.0.1", "*.example.org:443:[::1]", "x.org:*:127.0.0.2"])
    assert r.address("coder.example.org", 443) == "127.0.0.1"
    assert r.address("ws-1.example.org", 443) == "::1"
    assert r.address("a.b.example.org", 443) == "::1"
    assert r.address("example.org", 443) == "example.org"
    assert r.address("coder.example.org", 80) == "coder.example.org"
    assert r.address("x.org", 8443) == "127.0.0.2"


@pytest.mark.parametrize("bad", ["nohost", "h:port:1.2.3.4", ":443:1.2.3.4", "h:443:", "h:70000:1.1.1.1"])
def test_bad_resolve_rules(bad: str) -> None:
    with pytest.raises(UsageError):
        ResolveRule.parse(bad)


def test_targets() -> None:
    t = Target.parse("https://coder.example.org/healthz?x=1")
    assert (t.host, t.port, t.path, t.netloc) == ("coder.example.org", 443, "/healthz?x=1", "coder.example.org")
    assert Target.parse("http://h:8080").netloc == "h:8080"
    for bad in ("ftp://x", "coder.example.org", "https://h:99999/"):
        with pytest.raises(UsageError):
            Target.parse(bad)


def test_nameservers() -> None:
    assert Nameserver.parse("127.0.0.1:5353") == Nameserver("127.0.0.1", 5353)
    assert Nameserver.parse("::1") == Nameserver("::1", 53)
    assert Nameserver.parse("[::1]:53") == Nameserver("::1", 53)
    assert str(Nameserver("::1", 5353)) == "[::1]:5353"
    with pytest.raises(UsageError):
        Nameserver.parse("dns.google")


def test_database_url_parsing_never_shows_the_password() -> None:
    u = DatabaseURL.parse("postgresql://coder:p%2Fw%3F@coder-coder-postgresql:5432/coder?sslmode=disable")
    assert (u.user, u.password, u.host, u.port, u.database) == ("coder", "p/w?", "coder-coder-postgresql", 5432,
                                                                 "coder")
    assert u.params == {"sslmode": "disable"}
    assert "p/w?" not in repr(u) and "p/w?" not in str(u)
    with pytest.raises(UsageError, match="percent-encoded"):
        DatabaseURL.parse("postgresql://coder:a?b@host:5432/coder")
    with pytest.raises(UsageError):
        DatabaseURL.parse("mysql://x@y/z")
