"""Text from servers made safe for a terminal.

An HTTP reason phrase, a `Server` header, a DNS TXT record or a pod's log line can carry escape sequences
that retitle the terminal, clear it, or (OSC 52) write the clipboard; bidirectional controls can make a
printed command read differently from what runs. Text output shows each such character as an escape
(`\\x1b`, `\\u202e`) instead. JSON needs none of this: its encoder escapes control characters already.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """`text` with control characters (except newline and tab) and bidi overrides escaped; bytes that were not
    UTF-8 (surrogate escapes from argv, the environment or a file) as \\x escapes."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _UNSAFE.sub(_escape, text)
