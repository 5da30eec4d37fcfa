"""What tells that Cloudflare sits on the path, and the limit of its Universal SSL certificate.

The address ranges are Cloudflare's published list (https://www.cloudflare.com/ips/); a tunnel's DNS
target is `<tunnel id>.cfargotunnel.com`. Universal SSL covers the zone apex and one level of
subdomain (`*.example.com`), not `*.coder.example.com` (cloudflare/cloudflared#687).
"""

from __future__ import annotations

import ipaddress

TUNNEL_DOMAIN = "cfargotunnel.com"
NS_DOMAIN = "ns.cloudflare.com"

NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "173.245.48.0/20", "103.21.244.0/22", "103.22.200.0/22", "103.31.4.0/22", "141.101.64.0/18",
    "108.162.192.0/18", "190.93.240.0/20", "188.114.96.0/20", "197.234.240.0/22", "198.41.128.0/17",
    "162.158.0.0/15", "104.16.0.0/13", "104.24.0.0/14", "172.64.0.0/13", "131.0.72.0/22",
    "2400:cb00::/32", "2606:4700::/32", "2803:f800::/32", "2405:b500::/32", "2405:8100::/32",
    "2a06:98c0::/29", "2c0f:f248::/32",
))


def is_cloudflare_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in NETWORKS)


def tunnel_id(name: str) -> str | None:
    """The tunnel id when `name` is a Cloudflare tunnel target."""
    name = name.rstrip(".").lower()
    suffix = "." + TUNNEL_DOMAIN
    if name.endswith(suffix) and name.count(".") == TUNNEL_DOMAIN.count(".") + 1:
        return name[: -len(suffix)]
    return None


def levels_below(domain: str, zone: str) -> int:
    """How many labels `domain` has beyond `zone` (`a.b.example.org` in `example.org`: 2)."""
    domain, zone = domain.rstrip(".").lower(), zone.rstrip(".").lower()
    if domain == zone:
        return 0
    if not domain.endswith("." + zone):
        return -1
    return domain[: -len(zone) - 1].count(".") + 1


def universal_ssl_gap(wildcard_domain: str, zone: str) -> str | None:
    """Why Cloudflare's Universal SSL cannot cover hosts under `*.<wildcard_domain>`, or None when it can.

    `wildcard_domain` is the part after `*.`; hosts under it sit one level below it.
    """
    depth = levels_below(wildcard_domain, zone) + 1
    if depth <= 1:
        return None
    return (f"hosts under *.{wildcard_domain} are {depth} levels below the zone {zone}; Cloudflare's "
            "Universal "
            "SSL certificate covers one level only (browsers see ERR_SSL_VERSION_OR_CIPHER_MISMATCH)")
