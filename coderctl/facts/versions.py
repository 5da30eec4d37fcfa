"""Versions as images and APIs show them: image tags, `v`-prefixed and build-suffixed versions."""

from __future__ import annotations

import re

_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def image_tag(image: str) -> str:
    """The tag of an image reference (`latest` when none); the digest when it has only a digest."""
    name = image.rsplit("/", 1)[-1]
    name, _, digest = name.partition("@")
    if ":" in name:
        return name.split(":", 1)[1]
    return digest or "latest"


def bare_version(version: str) -> str:
    """`v2.18.1+abc` -> `2.18.1`: without the `v` and the build metadata, which do not tell versions apart."""
    return version.strip().lstrip("v").split("+", 1)[0]


def same_version(a: str, b: str) -> bool:
    return bare_version(a) == bare_version(b)


def version_tuple(tag: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of a `v1.2.3...` tag, or None when it does not start like one."""
    match = _SEMVER.match(tag.strip())
    return tuple(int(g) for g in match.groups()) if match else None
