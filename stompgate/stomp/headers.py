"""Header escaping by protocol version.

1.0 has no escaping; 1.1 escapes ``\\n``, ``:`` and ``\\``; 1.2 adds ``\\r``.
CONNECT/CONNECTED headers are never escaped (callers pass ``version=None``).
"""

from __future__ import annotations

import re

from .errors import InvalidEscape

_ESCAPE_11 = {"\\": "\\\\", "\n": "\\n", ":": "\\c"}
_ESCAPE_12 = {**_ESCAPE_11, "\r": "\\r"}
_UNESCAPE_11 = {"\\\\": "\\", "\\n": "\n", "\\c": ":"}
_UNESCAPE_12 = {**_UNESCAPE_11, "\\r": "\r"}

_ESCAPE_RE_11 = re.compile(r"[\\\n:]")
_ESCAPE_RE_12 = re.compile(r"[\\\n:\r]")
_UNESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)


def escape(value: str, version: str | None) -> str:
    if version == "1.2":
        if _ESCAPE_RE_12.search(value) is None:
            return value
        return _ESCAPE_RE_12.sub(lambda m: _ESCAPE_12[m.group()], value)
    if version == "1.1":
        if _ESCAPE_RE_11.search(value) is None:
            return value
        return _ESCAPE_RE_11.sub(lambda m: _ESCAPE_11[m.group()], value)
    return flatten(value)


def unescape(value: str, version: str | None) -> str:
    if version not in ("1.1", "1.2") or "\\" not in value:
        return value
    table = _UNESCAPE_12 if version == "1.2" else _UNESCAPE_11

    def one(m: re.Match[str]) -> str:
        try:
            return table[m.group()]
        except KeyError:
            raise InvalidEscape(f"undefined escape sequence {m.group()!r} in header") from None

    return _UNESCAPE_RE.sub(one, value)


def flatten(value: str) -> str:
    """Make ``value`` writable where no escaping exists (1.0, CONNECTED).

    A raw newline would end the header line, so line breaks become spaces.
    """
    if "\n" in value or "\r" in value:
        return value.replace("\r", " ").replace("\n", " ")
    return value
