"""SockJS framing, without I/O: what the server writes and how it reads what the client sent.

Server to client, every transport carries the same four frames: ``o`` (open),
``h`` (heartbeat), ``a[...]`` (a JSON array of messages) and ``c[code,"reason"]``
(close). Client to server there is no framing: a JSON array of strings (or, on
the WebSocket transport, a single JSON string).
"""

from __future__ import annotations

import json
import re

OPEN = "o"
HEARTBEAT = "h"

# Characters the server must escape so that browsers and proxies do not mangle
# them: control characters (json already escapes those), invisible formatting
# characters, line/paragraph separators, specials, and lone surrogates, which
# are no valid UTF-8 at all.
_ESCAPED = re.compile("[\u200c-\u200f\u2028-\u202f\u2060-\u206f\ufff0-\uffff\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def encode_messages(messages: list[str]) -> str:
    """The ``a[...]`` frame carrying ``messages``, in order."""
    body = json.dumps(messages, ensure_ascii=False, separators=(",", ":"))
    return "a" + _ESCAPED.sub(_escape, body)


def close_frame(code: int, reason: str) -> str:
    """The ``c[code,"reason"]`` frame."""
    return "c" + _ESCAPED.sub(_escape, json.dumps([code, reason], ensure_ascii=False, separators=(",", ":")))


class PayloadError(ValueError):
    """What the client sent is not a SockJS payload; the message is the protocol's wording."""


def decode_payload(text: str, single_allowed: bool = False) -> list[str]:
    """Messages from one client payload: a JSON array of strings, or one string on WebSocket."""
    if not text:
        raise PayloadError("Payload expected.")
    try:
        # The standard library's json, not orjson: a payload may hold half of a
        # surrogate pair that stompjs 2.x cut between two messages (rejoined later).
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." thousands deep
        raise PayloadError("Broken JSON encoding.") from None
    if isinstance(value, str) and single_allowed:
        return [value]
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise PayloadError("Broken JSON encoding.")
    return value


def json_string(text: str) -> str:
    """``text`` as a JavaScript string literal that is safe inside an HTML ``<script>``."""
    return json.dumps(text).replace("<", "\\u003c")  # ensure_ascii: U+2028 and the like escaped too
