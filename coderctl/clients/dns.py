"""DNS lookups with dnspython against explicit nameservers (--nameserver ADDRESS[:PORT])."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from coderctl.errors import UsageError

if TYPE_CHECKING:
    import dns.resolver


@dataclass(frozen=True)
class Nameserver:
    address: str
    port: int = 53

    @classmethod
    def parse(cls, text: str) -> Nameserver:
        """`1.1.1.1`, `1.1.1.1:5353`, `::1`, `[::1]:5353`."""
        text = text.strip()
        if text.startswith("["):
            address, _, rest = text[1:].partition("]")
            port = rest.lstrip(":") or "53"
        elif text.count(":") == 1:
            address, port = text.split(":")
        else:
            address, port = text, "53"
        import ipaddress

        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise UsageError(f"--nameserver {text!r}: not an IP address") from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--nameserver {text!r}: {port!r} is not a port")
        return cls(address, int(port))

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return host if self.port == 53 else f"{host}:{self.port}"


def resolver_for(server: Nameserver, timeout: float) -> dns.resolver.Resolver:
    """A resolver that asks only `server`, never the system's configuration."""
    import dns.resolver

    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [server.address]
    res.port = server.port
    res.timeout = timeout
    res.lifetime = timeout
    return res
