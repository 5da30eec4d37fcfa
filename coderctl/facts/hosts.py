"""Host names: matching a name against a pattern, reading the wildcard access URL, hosts under a wildcard."""

from __future__ import annotations

from urllib.parse import urlsplit


def host_matches(pattern: str, host: str, *, any_depth: bool = False) -> bool:
    """`host` against an exact name or `*.domain`, case- and trailing-dot-insensitive.

    A `*` label stands for exactly one label (RFC 6125, Ingress rule hosts, certificate names); with
    `any_depth` it stands for one or more (curl-style `--resolve *.domain`).
    """
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern.startswith("*."):
        return pattern == host
    head, _, rest = host.partition(".")
    if any_depth:
        return bool(head) and (rest == pattern[2:] or rest.endswith("." + pattern[2:]))
    return bool(head) and rest == pattern[2:]


def url_host(raw: str) -> str:
    """The host of a URL or a bare `host[:port][/path]` (`*.example.org` from `https://*.example.org:443`)."""
    return (urlsplit(raw if "://" in raw else f"//{raw}").hostname or "").rstrip(".")


def is_wildcard(pattern: str) -> bool:
    """A wildcard host pattern has `*` in its first label and a domain after it."""
    first, _, parent = pattern.partition(".")
    return "*" in first and bool(parent)


def wildcard_parent(pattern: str) -> str:
    """The domain the wildcard's hosts sit directly under (`xuperson.org` for `*.xuperson.org`)."""
    return pattern.partition(".")[2]


def host_under(pattern: str, label: str) -> str:
    """A concrete host the pattern covers: its `*` replaced by `label`; a plain name is itself."""
    return pattern.replace("*", label, 1)


def url_for_host(access_url: str, host: str, path: str = "/") -> str:
    """`path` on `host` with the access URL's scheme and port (Coder serves subdomain apps that way)."""
    parts = urlsplit(access_url)
    scheme = parts.scheme or "https"
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    return f"{scheme}://{host}{'' if port == default else f':{port}'}{path}"
