"""What user-controlled text may hold: user names, destinations, header names and values.

Every edge (STOMP frames, logins, the HTTP API, the template, extensions)
checks its text here, so the core, the logs and Redis only ever see strings
that encode to UTF-8 (no lone surrogates), carry no control characters where
a reader could take them for structure (a NUL ends a frame in stompjs 2.x, a
newline ends a log line), and are bounded in length. Each check is one scan
of the string, so its cost is linear in the input.

Each function returns a problem (a sentence for the client) or None.
"""

from __future__ import annotations

import re

# Longest user name accepted at login (characters). E-mail addresses (254) fit.
MAX_USER_NAME = 256
# Longest destination accepted by default (bytes of UTF-8); ``stomp.max_destination_length``.
MAX_DESTINATION = 1024

# C0 controls, DEL, C1 controls, and UTF-16 surrogates (which UTF-8 cannot carry).
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Header values may hold line breaks (escaped on the wire from STOMP 1.1 on) but no NUL.
_NUL_OR_SURROGATE = re.compile("[\x00\ud800-\udfff]")
# Header names: no controls, no surrogates, no ':' (a 1.0 peer would split the line there).
_BAD_HEADER_NAME = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff:]")

# Headers the broker writes itself on a MESSAGE (or reads from a SEND); a client
# or publisher never sets them. Compared after strip() and lower(), because some
# clients trim header names (stompjs 2.x keeps the *last* value of a name, so
# "message-id " after the broker's "message-id" would win there).
RESERVED_HEADERS = frozenset(
    {"destination", "message-id", "subscription", "content-length", "ack", "receipt", "transaction"}
)

# Who sent a message, as the broker writes it: the sender's user name on what a
# client SENT (the header's name is stomp.sender_header), and this one on what the
# HTTP API, an extension or the MessagingTemplate published.
SENDER_HEADER = "sender"
SERVER_SENT = "server-sent"
# A new token on any frame of a session whose token expires (a JWT's exp): the session
# goes on under it. A credential, so never passed on in a message.
REFRESH_TOKEN = "refresh-token"


def reserved_headers(sender_header: str = SENDER_HEADER) -> frozenset[str]:
    """Every header only the broker sets, for a node whose sender header is ``sender_header``."""
    return RESERVED_HEADERS | {canonical(sender_header), SERVER_SENT, REFRESH_TOKEN}


def shown(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error message or a log line: controls escaped, cut to ``limit``."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return ascii(cut) if _CONTROL_OR_SURROGATE.search(cut) else repr(cut)


def _describe(char: str) -> str:
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone UTF-16 surrogate (U+{code:04X})"
    if char == ":":
        return "':'"
    return f"a control character (U+{code:04X})"


def user_name_problem(name: str) -> str | None:
    if name.isascii() and name.isprintable() and 0 < len(name) <= MAX_USER_NAME:
        return None  # the common case, decided in C
    if not name:
        return "the user name is empty"
    if len(name) > MAX_USER_NAME:
        return f"the user name is longer than {MAX_USER_NAME} characters"
    bad = _CONTROL_OR_SURROGATE.search(name)
    if bad is not None:
        return f"the user name {shown(name)} contains {_describe(bad.group())}"
    return None


def destination_problem(destination: str, max_length: int = MAX_DESTINATION) -> str | None:
    if destination.isascii() and destination.isprintable() and 0 < len(destination) <= max_length:
        return None  # the common case, decided in C: printable ASCII has no control character
    if not destination:
        return "the destination is empty"
    # Cheap bound first: UTF-8 takes at most 4 bytes per character, at least 1.
    if len(destination) > max_length or (
        len(destination) * 4 > max_length and len(destination.encode("utf-8", "surrogatepass")) > max_length
    ):
        return f"destination {shown(destination)} is longer than {max_length} bytes"
    bad = _CONTROL_OR_SURROGATE.search(destination)
    if bad is not None:
        return f"destination {shown(destination)} contains {_describe(bad.group())}"
    return None


def header_problem(name: str, value: str) -> str | None:
    if not name:
        return "a header has an empty name"
    bad = _BAD_HEADER_NAME.search(name)
    if bad is not None:
        return f"header name {shown(name)} contains {_describe(bad.group())}"
    bad = _NUL_OR_SURROGATE.search(value)
    if bad is not None:
        what = "a NUL character" if bad.group() == "\x00" else _describe(bad.group())
        return f"the value of header {shown(name)} contains {what}"
    return None


# What str.strip() and JavaScript's String.trim() remove between them (JS also trims U+FEFF).
_BLANKS = "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + "\ufeff"


def canonical(name: str) -> str:
    """A header name as a client that trims and folds case reads it."""
    return name.strip(_BLANKS).lower()


def is_reserved(name: str, reserved: frozenset[str] = RESERVED_HEADERS) -> bool:
    """A header only the broker may set, however it is spelled (case, surrounding blanks)."""
    return canonical(name) in reserved


# Header names repeat from frame to frame (content-type...): what is known of each
# is kept: a problem with it, and its canonical spelling.
_NAMES: dict[str, tuple[str | None, str]] = {}
RESERVED = "reserved"


def header_name_verdict(name: str, reserved: frozenset[str] = RESERVED_HEADERS) -> str | None:
    """None for a name a client may send, RESERVED for one the broker sets, or a problem.

    For STOMP frames, whose values the parser has already checked (no NUL, valid
    UTF-8): only the name is left to judge, and what it takes is cached.
    """
    known = _NAMES.get(name)
    if known is None:
        if not name:
            problem: str | None = "a header has an empty name"
        elif (bad := _BAD_HEADER_NAME.search(name)) is not None:
            problem = f"header name {shown(name)} contains {_describe(bad.group())}"
        else:
            problem = None
        known = (problem, canonical(name))
        if len(_NAMES) >= 4096:  # bounded: a client inventing names only costs a refill
            _NAMES.clear()
        _NAMES[name] = known
    problem, folded = known
    if name and folded in reserved:
        return RESERVED  # dropped, whatever else is wrong with its spelling
    return problem
