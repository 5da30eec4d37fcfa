"""Installed in every Python subprocess of the test suite (see loopback_guard.py)."""

import loopback_guard

loopback_guard.install()
