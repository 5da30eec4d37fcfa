"""Keeping secret values out of everything coderctl prints or writes.

Two layers: every secret value coderctl reads is registered with the run's Redactor and replaced wherever
it appears, and patterns catch credentials coderctl never saw (a password inside a URL in a pod log, a
bearer token, an Infisical service token).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote, unquote

MASK = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]+)@", re.I),
     r"\g<scheme>\g<user>:" + MASK + "@"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\g<1>" + MASK),
    (re.compile(r"\bst\.[A-Za-z0-9-]+\.[A-Za-z0-9]+\.[A-Za-z0-9]+"), "st." + MASK),
    (re.compile(r"(?i)\b([a-z0-9_-]*(?:password|passwd|pwd|secret|token))(=|\"\s*:\s*)(?![*<$])(\"[^\"]*\"|'[^']*'|[^\s&\"]+)"),
     r"\g<1>\g<2>" + MASK),
)


class Redactor:
    """Thread-safe set of known secret values plus credential patterns."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        """Register secret values; their URL-encoded forms are registered too."""
        with self._lock:
            for value in values:
                if not value or len(value) < 4:
                    continue
                self._values.update({value, quote(value, safe=""), unquote(value)})

    def __call__(self, text: str) -> str:
        if not text:
            return text
        with self._lock:
            known = sorted(self._values, key=len, reverse=True)
        for value in known:
            if value in text:
                text = text.replace(value, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def deep(self, value: object) -> object:
        """Redact every string inside JSON-like data."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.deep(v) for v in value]
        return value


def mask_url(url: str | None) -> str | None:
    """A URL with its password replaced, for display."""
    if url is None:
        return None
    return _PATTERNS[0][0].sub(_PATTERNS[0][1], url)


DEFAULT = Redactor()
"""The process's redactor: every secret a run reads is added here, and every error line passes through it."""
