"""All checks, in the order verify shows them. Importing the check modules registers them."""

from __future__ import annotations

# The import order is the display order within a category.
from coderctl.checks import cluster, coder, postgres, services, ingress, flux  # noqa: F401, I001
from coderctl.checks import secrets, database, network  # noqa: F401, I001
from coderctl.checks import infisical  # noqa: F401, I001
from coderctl.checks import roles  # noqa: F401, I001
from coderctl.checks import tls, websocket, derp, dns  # noqa: F401, I001
from coderctl.checks.base import CATEGORIES, REGISTRY, Check
from coderctl.errors import UsageError


def all_checks() -> list[Check]:
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(REGISTRY.values(), key=lambda c: order[c.category])


def select(only: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> list[Check]:
    checks = all_checks()
    known_ids = {c.id for c in checks}
    for cat in only:
        if cat not in CATEGORIES:
            raise UsageError(f"--only {cat!r}: categories are {', '.join(CATEGORIES)}")
    for cid in skip:
        if cid not in known_ids:
            raise UsageError(f"--skip {cid!r}: no such check (coderctl verify --list)")
    return [c for c in checks if (not only or c.category in only) and c.id not in skip]
