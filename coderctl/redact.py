"""Keeping secret values out of everything coderctl prints or writes.

Two layers. Every secret value a run reads is registered with that run's Redactor (one per App) and
replaced wherever it appears: as is, percent-encoded, and base64-encoded. Then patterns mask credentials
by where they stand, values coderctl never saw included: the password of a URL, `password: ...` and
`PASSWORD=...` settings, Kubernetes env pairs whose name looks secret, a Secret's `data`/`stringData`,
bearer tokens, JWTs and Infisical service tokens.

Every pattern runs in time linear in the length of the text: quantifiers that could rescan are bounded,
and the URL scan remembers, per line, where the last `@` is. Masking errs on the side of hiding too much.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote

if TYPE_CHECKING:
    import logging

MASK = "***"

_WORDS = ("password", "passwd", "pwd", "secret", "token", "credential", "credentials", "authorization",
          *(f"{a}{sep}key" for a in ("api", "access", "private") for sep in ("", "_", "-")))
"""What a key or variable name holding a secret ends with (any case)."""
_GATES = ("pass", "pwd", "secret", "token", "key", "credential", "authorization")
_WORD = "(?:" + "|".join(
    "".join(f"[{c.upper()}{c}]" if c.isalpha() else re.escape(c) for c in word)
    for word in sorted(_WORDS, key=len, reverse=True)) + ")"
_STRING = r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'"
"""A JSON (or Python repr) string literal on one line, escapes included."""

_LONG = 256
_MIN_EMBEDDED_BASE64 = 4
"""Shortest base64 run, taken from inside a longer blob, that is worth masking."""


class Redactor:
    """Thread-safe set of known secret values plus credential patterns; call it on any text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._known: tuple[tuple[str, ...], re.Pattern[str] | None] | None = None

    def add(self, *values: str | None) -> None:
        """Register secret values (any length); their escaped, percent-encoded and base64 forms too."""
        with self._lock:
            for value in values:
                if value:
                    self._values.update(_forms(value))
                    self._known = None

    def _matchers(self) -> tuple[tuple[str, ...], re.Pattern[str] | None]:
        """Forms longer than _LONG (replaced one by one with str.replace, which is linear and needs no
        compiling), and one alternation of the others, longest first."""
        with self._lock:
            if self._known is None:
                ordered = sorted(self._values, key=lambda v: (-len(v), v))
                long = tuple(v for v in ordered if len(v) > _LONG)
                short = [re.escape(v) for v in ordered if len(v) <= _LONG]
                self._known = (long, re.compile("|".join(short)) if short else None)
            return self._known

    def __call__(self, text: str) -> str:
        if not text:
            return text
        long, short = self._matchers()
        for value in long:
            if value in text:
                text = text.replace(value, MASK)
        if short is not None:
            text = short.sub(MASK, text)
        return scrub(text)

    def deep(self, value: object) -> object:
        """Redact every string inside JSON-like data. Values under password keys, the value of an env pair
        whose name looks secret and the data of a Secret object are masked whole."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            is_secret = value.get("kind") == "Secret"
            out: dict[object, object] = {}
            for key, item in value.items():
                if isinstance(item, str) and item and _secret_field(key, value):
                    out[key] = MASK
                elif is_secret and key in ("data", "stringData") and isinstance(item, dict):
                    out[key] = {k: MASK if isinstance(v, str) and v else self.deep(v) for k, v in item.items()}
                else:
                    out[key] = self.deep(item)
            return out
        if isinstance(value, (list, tuple)):
            return [self.deep(v) for v in value]
        return value


def _secret_field(key: object, mapping: dict[object, object]) -> bool:
    if not isinstance(key, str):
        return False
    if key == "value":
        name = mapping.get("name")
        return isinstance(name, str) and _looks_secret(name)
    return _patterns().password_key.fullmatch(key) is not None


def _looks_secret(name: str) -> bool:
    return _patterns().secret_name.search(name) is not None


def _forms(value: str) -> set[str]:
    """The value and the forms it takes in URLs, Secrets, JSON, reprs and headers; also those of the value
    without surrounding whitespace (a token read with its trailing newline is sent without it)."""
    import json

    bases = {value, value.strip()}
    try:
        bases.add(unquote(value, errors="strict"))
    except UnicodeDecodeError:
        pass  # `%80` and the like decode to no text: the value stands only as it is
    forms: set[str] = set()
    for base in filter(None, bases):
        forms |= {base, quote(base, safe="", errors="surrogatepass"), quote(base, errors="surrogatepass"),
                  quote_plus(base, errors="surrogatepass"), repr(base)[1:-1]}
        forms |= {json.dumps(base)[1:-1], json.dumps(base, ensure_ascii=False)[1:-1]}
        forms |= _base64_forms(base.encode("utf-8", "surrogatepass"))
    forms |= {_lower_hex(f) for f in forms}
    return {f for f in forms if f}


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def _base64_forms(raw: bytes) -> set[str]:
    """Standalone base64 (standard and URL-safe, padded or not), and the characters that only `raw`
    decides when it sits at any of the three byte offsets inside a longer base64 blob."""
    import base64

    out: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode("ascii")
        out |= {whole, whole.rstrip("=")}
        for offset, skip in ((0, 0), (1, 2), (2, 3)):
            padded = b"\0" * offset + raw
            full = len(padded) // 3 * 3
            tail = {0: 0, 1: 1, 2: 2}[len(padded) - full]
            encoded = encode(padded[:full]).decode("ascii") + encode(padded[full:]).decode("ascii")[:tail]
            inner = encoded[skip:]
            if len(inner) >= _MIN_EMBEDDED_BASE64:
                out.add(inner)
    return out


_ENV_ORDERS = (("name", "value"), ("value", "name"))
_ENV_YAML_VALUES = {"name": r"[^\n]{1,160}", "value": r"[^\n]*"}


def _env_json(first: str, second: str) -> str:
    """A JSON env entry's `"name": "...", "value": "..."` members in this order, one quote character for both."""

    def member(key: str, quote: str) -> str:
        return rf"{quote}{key}(?P=q)[ \t]{{0,16}}:[ \t]{{0,16}}(?P<{key}>{_STRING})"

    return member(first, r"(?P<q>[\"'])") + r"[ \t]{0,16},[ \t\n]{0,64}" + member(second, "(?P=q)")


def _env_yaml(first: str, second: str) -> str:
    """A YAML env entry's `- name: ...` and `value: ...` lines in this order, the second indented under the dash."""
    return (rf"(?m)^(?P<ind>[ \t]{{0,64}})-[ \t]{{1,8}}{first}:[ \t]{{0,8}}(?P<{first}>{_ENV_YAML_VALUES[first]})\n"
            rf"(?P=ind)[ \t]{{1,8}}{second}:[ \t]{{0,8}}(?P<{second}>{_ENV_YAML_VALUES[second]})$")


class _Patterns:
    """The structural patterns, compiled once on first use (not on the `--help` path)."""

    def __init__(self) -> None:
        w = _WORD
        self.secret_name = re.compile(w)
        self.password_key = re.compile(r"[\w.-]{0,64}[Pp][Aa][Ss][Ss](?:[Ww][Oo][Rr][Dd]|[Ww][Dd])")
        self.key = re.compile(rf"(?P<key>{w})(?P<q>\\?[\"']?)[ \t]{{0,16}}(?P<sep>[=:])[ \t]{{0,16}}")
        self.value_equals = re.compile(rf"(?:{_STRING})(?=[\s&,;}}\]]|$)|[^\s&]+")
        self.value_colon = re.compile(rf"(?:{_STRING})(?=[ \t]*(?:[,}}\]#\r\n]|$))|[^ \t\r\n][^\n]*")
        self.key_lead = re.compile(r"[ \t]{0,64}(?:-[ \t]{1,8})?[\w.-]{0,64}")
        self.yaml_block = re.compile(
            rf"(?m)^(?P<ind>[ \t]{{0,64}})(?P<head>(?:-[ \t]{{1,8}})?[\"']?[\w.-]{{0,64}}{w}[\"']?:[ \t]{{0,8}}"
            r"[|>][-+0-9]{0,3}[ \t]*)(?P<block>(?:\n(?P=ind)[ \t]+\S[^\n]*|\n[ \t]*(?=\n))+)")
        self.env_json = tuple(re.compile(_env_json(*order)) for order in _ENV_ORDERS)
        self.env_yaml = tuple(re.compile(_env_yaml(*order)) for order in _ENV_ORDERS)
        self.data_json = re.compile(r"(?P<q>[\"'])(?:data|stringData)(?P=q)[ \t]{0,16}:[ \t\n]{0,64}\{")
        self.data_json_entry = re.compile(rf"\s*(?P<key>{_STRING})\s*:\s*(?P<value>{_STRING})\s*,?")
        self.data_yaml = re.compile(r"(?m)^(?P<ind>[ \t]{0,64})(?:data|stringData):[ \t]*\r?$")
        self.data_yaml_line = re.compile(r"[ \t]*[^:\s][^:\n]{0,255}:[ \t]*(?P<value>[^\n]*)")
        self.placeholder = re.compile(r"<[\w .-]{1,64}>|\$\(.*|\$\{.*|\$[A-Z_][A-Z0-9_]*", re.S)
        self.user = re.compile(r"[^:/\s]{0,256}:")
        self.bearer = re.compile(r"\b(?P<keep>[Bb][Ee][Aa][Rr][Ee][Rr]\s{1,16}[\"']?)[A-Za-z0-9._~+/=-]{8,}")
        self.service_token = re.compile(r"\bst\.[A-Za-z0-9-]+\.[A-Za-z0-9]+\.[A-Za-z0-9]+")
        self.jwt = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


@functools.cache
def _patterns() -> _Patterns:
    return _Patterns()


def scrub(text: str) -> str:
    """Mask credentials by their shape alone, without registered values (every Redactor call ends with it).
    Each pass runs only when a cheap substring test says it could match."""
    if not text:
        return text
    p = _patterns()
    if "://" in text:
        text = _mask_userinfo(text, whole=False)
    lowered = text.lower()
    keyed = any(gate in lowered for gate in _GATES)
    if keyed and ("|" in text or ">" in text):
        text = p.yaml_block.sub(_mask_block, text)
    if "name" in text and "value" in text:
        for pattern in p.env_json:
            text = pattern.sub(functools.partial(_mask_env, quoted=True), text)
        for pattern in p.env_yaml:
            text = pattern.sub(functools.partial(_mask_env, quoted=False), text)
    if "ata" in text:
        text = _mask_yaml_data(_mask_json_data(text))
    if keyed:
        text = _mask_key_values(text)
    if "earer" in lowered:
        text = p.bearer.sub(r"\g<keep>" + MASK, text)
    if "st." in text:
        text = p.service_token.sub("st." + MASK, text)
    if "eyJ" in text:
        text = p.jwt.sub(MASK, text)
    return text


def _mask_key_values(text: str) -> str:
    """`KEY=value`, `"key": "value"`, `password: value`, and `key: value` where the key starts its line."""
    p = _patterns()
    out: list[str] = []
    pos = search = 0
    while (m := p.key.search(text, search)) is not None:
        search = m.end()
        equals = m.group("sep") == "="
        if not (equals or m.group("q") or m.group("key").lower() in ("password", "passwd")
                or _starts_line(text, m.start())):
            continue
        value = (p.value_equals if equals else p.value_colon).match(text, m.end())
        if value is None:
            continue
        literal = value.group()
        opener = literal.rstrip()
        nested = not equals and opener in ("{", "[") and _CLOSERS[opener] in text[value.end():]
        if p.placeholder.fullmatch(literal.strip("\"'")) or nested:
            continue  # a placeholder, or a nested object whose own keys are looked at one by one
        out.append(text[pos:value.start()] + _masked_literal(literal))
        pos = search = value.end()
    out.append(text[pos:])
    return "".join(out)


_CLOSERS = {"{": "}", "[": "]"}


def _starts_line(text: str, key_end_start: int) -> bool:
    """Whether the key whose last word starts at `key_end_start` is the first thing on its line (YAML)."""
    lo = max(0, key_end_start - 160)
    newline = text.rfind("\n", lo, key_end_start)
    if newline == -1 and lo > 0:
        return False
    return _patterns().key_lead.fullmatch(text, newline + 1, key_end_start) is not None


def _masked_literal(literal: str) -> str:
    """A quoted literal with its content masked; anything else masked whole."""
    if len(literal) >= 2 and literal[0] in "\"'" and literal[-1] == literal[0]:
        return literal[0] + MASK + literal[0] if len(literal) > 2 else literal
    return MASK


def _mask_env(m: re.Match[str], *, quoted: bool) -> str:
    name = m.group("name").strip()
    if quoted:
        name = name[1:-1]
    value = m.group("value")
    if not _looks_secret(name.strip("\"'")) or not value.strip(" \t\r"):
        return m.group(0)
    text, base = m.group(0), m.start(0)
    return text[:m.start("value") - base] + _masked_literal(value) + text[m.end("value") - base:]


def _mask_block(m: re.Match[str]) -> str:
    lines = m.group("block").split("\n")
    return m.group("ind") + m.group("head") + "\n".join(
        _indent(line) + MASK if line.strip() else line for line in lines)


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip(" \t"))]


def _mask_json_data(text: str) -> str:
    p = _patterns()
    out: list[str] = []
    pos = 0
    for m in p.data_json.finditer(text):
        if m.start() < pos:
            continue
        out.append(text[pos:m.end()])
        pos = m.end()
        while (entry := p.data_json_entry.match(text, pos)) is not None:
            value_start, value_end = entry.span("value")
            out.append(text[pos:value_start] + _masked_literal(entry.group("value")) + text[value_end:entry.end()])
            pos = entry.end()
    out.append(text[pos:])
    return "".join(out)


def _mask_yaml_data(text: str) -> str:
    """Each value of a block-style `data:` or `stringData:` map (and any deeper line) masked."""
    p = _patterns()
    out: list[str] = []
    pos = 0
    for m in p.data_yaml.finditer(text):
        if m.start() < pos:
            continue
        base = len(m.group("ind"))
        line_start = m.end() + 1
        out.append(text[pos:min(line_start, len(text))])
        pos = min(line_start, len(text))
        entry_indent: int | None = None
        while pos < len(text):
            end = text.find("\n", pos)
            end = len(text) if end == -1 else end
            line = text[pos:end]
            indent = len(_indent(line))
            if line.strip() and indent <= base:
                break
            if line.strip():
                entry_indent = indent if entry_indent is None else entry_indent
                entry = p.data_yaml_line.fullmatch(line)
                if indent == entry_indent and entry is not None:
                    value = entry.group("value")
                    line = line[:entry.start("value")] + (_masked_literal(value.strip()) if value.strip() else value)
                else:
                    line = _indent(line) + MASK
            out.append(line + text[end:end + 1])
            pos = end + 1
        pos = min(pos, len(text))
    out.append(text[pos:])
    return "".join(out)


def _mask_userinfo(text: str, *, whole: bool) -> str:
    """Every `scheme://user:password@` with the password masked up to the LAST `@` of its line (of the
    text when `whole`): libpq ends the user part at the first `@` or `/`, Go's net/url at the last `@` of
    the authority, so the widest reading is masked."""
    user = _patterns().user
    out: list[str] = []
    pos = 0
    line_end = -1
    last_at = -1
    i = text.find("://")
    while i != -1:
        start = i + 3
        if start > line_end:
            if whole:
                line_end = len(text)
            else:
                newline = text.find("\n", start)
                line_end = len(text) if newline == -1 else newline
            last_at = text.rfind("@", start, line_end)
        m = user.match(text, start)
        if m is not None and last_at >= m.end():
            if last_at > m.end():
                out.append(text[pos:m.end()] + MASK)
                pos = last_at
            i = text.find("://", last_at)
            continue
        i = text.find("://", start)
    out.append(text[pos:])
    return "".join(out)


def mask_url(url: str | None) -> str | None:
    """A URL with its password masked, whatever characters the password holds, for display."""
    if url is None:
        return None
    return scrub(_mask_userinfo(url, whole=True))


def log_filter(redact: Callable[[str], str]) -> Callable[[logging.LogRecord], bool]:
    """A logging filter that redacts a record's message, traceback and stack in place, so that every
    handler after it, and the formatter, only see redacted text."""
    import logging

    formatter = logging.Formatter()

    def apply(record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info:
            record.exc_text = formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True

    return apply
