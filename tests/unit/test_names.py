"""What user-controlled text may hold (stompgate.broker.names), against a plain statement of the rules."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from stompgate.broker.names import (
    MAX_USER_NAME,
    destination_problem,
    header_problem,
    is_reserved,
    shown,
    user_name_problem,
)

PROPERTY = settings(max_examples=500, database=None, deadline=None)
TEXT = st.text(st.characters(codec=None), max_size=40) | st.text(alphabet="a\x00\n\x85\ud800:", max_size=8)


def controlled(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


@PROPERTY
@given(TEXT)
def test_user_names(name: str) -> None:
    bad = not name or len(name) > MAX_USER_NAME or controlled(name)
    assert (user_name_problem(name) is not None) is bad


@PROPERTY
@given(TEXT, st.integers(1, 60))
def test_destinations(destination: str, limit: int) -> None:
    bad = (
        not destination
        or len(destination.encode("utf-8", "surrogatepass")) > limit
        or controlled(destination)
    )
    assert (destination_problem(destination, limit) is not None) is bad


@PROPERTY
@given(TEXT, TEXT)
def test_headers(name: str, value: str) -> None:
    bad = not name or controlled(name) or ":" in name or "\x00" in value or any(
        unicodedata.category(c) == "Cs" for c in value
    )
    assert (header_problem(name, value) is not None) is bad


@PROPERTY
@given(TEXT)
def test_shown_is_one_printable_line(text: str) -> None:
    assert not controlled(shown(text)) and len(shown(text)) < 4 * 60 + 10


def test_reserved_names_however_spelled() -> None:
    for name in ("message-id", " Message-Id", "DESTINATION\t", "\ufeffsubscription", "ack\u3000", "receipt"):
        assert is_reserved(name), name
    for name in ("message-idx", "x-message-id", "content-type"):
        assert not is_reserved(name), name
