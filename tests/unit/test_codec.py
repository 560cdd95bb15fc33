"""Tests for the sans-I/O STOMP codec (``stompgate.stomp``).

Layout:

1. framing: chunking, heart-beats, line endings, content-length, body terminator
2. header escaping by protocol version, and lazy version switching
3. repeated headers
4. which commands may carry a body
5. limits (frame size, header count, header length)
6. commands, malformed input, sticky errors
7. serializer
8. hypothesis properties: round trip and robustness against arbitrary input
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stompgate.stomp import (
    ALL_COMMANDS,
    BODY_COMMANDS,
    CLIENT_COMMANDS,
    SERVER_COMMANDS,
    VERSIONS,
    BodyNotAllowed,
    Frame,
    FrameParser,
    FrameTooLarge,
    HeaderTooLong,
    InvalidEscape,
    LimitExceeded,
    MalformedFrame,
    ProtocolError,
    TooManyHeaders,
    UnknownCommand,
    encode_headers,
    serialize,
)
from stompgate.stomp.frame import UNESCAPED_COMMANDS

# No example database: keep test runs free of side effects on the work tree.
PROPERTY = settings(max_examples=400, database=None, deadline=None)


# --------------------------------------------------------------------------- helpers


def parse(data: bytes, **kwargs) -> list[Frame]:
    """All frames in ``data`` fed as one chunk."""
    parser = FrameParser(**kwargs)
    parser.feed(data)
    return parser.frames()


def parse_one(data: bytes, **kwargs) -> Frame:
    frames = parse(data, **kwargs)
    assert len(frames) == 1, frames
    return frames[0]


def feed_in_chunks(parser: FrameParser, data: bytes, cuts: list[int]) -> list[Frame]:
    """Feed ``data`` split at ``cuts`` and drain frames after every chunk."""
    frames: list[Frame] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        parser.feed(data[prev:cut])
        prev = cut
        frames.extend(parser.frames())
    return frames


def split_points(size: int):
    """Arbitrary chunkings of a ``size``-byte message, including 1-byte chunks."""
    return st.one_of(
        st.lists(st.integers(0, size), max_size=20),
        st.just(list(range(size))),  # byte by byte
    )


# A stream exercising most framing features at once, and what it parses to (1.2).
STREAM = (
    b"\n\r\n"  # heart-beats before the first frame
    b"CONNECT\naccept-version:1.2\nhost:h\n\n\0"
    b"\n"
    b"SEND\r\ndestination:/q\r\nx:a\\cb\r\n\r\nplain body\0"
    b"\r\n\n"
    b"SEND\ndestination:/q\ncontent-length:5\n\nhe\0\0o\0"
    b"SUBSCRIBE\nid:0\ndestination:/q\n\n\0"
    b"\n"
)
STREAM_FRAMES = [
    Frame("CONNECT", {"accept-version": "1.2", "host": "h"}),
    Frame("SEND", {"destination": "/q", "x": "a:b"}, b"plain body"),
    Frame("SEND", {"destination": "/q", "content-length": "5"}, b"he\0\0o"),
    Frame("SUBSCRIBE", {"id": "0", "destination": "/q"}),
]


# --------------------------------------------------------------------------- 1. framing


def test_frame_fed_byte_by_byte():
    """A frame split over many tiny WebSocket messages comes out only once complete."""
    data = b"SEND\ndestination:/q\ncontent-length:3\n\na\0b\0"
    parser = FrameParser()
    for i in range(len(data) - 1):
        parser.feed(data[i : i + 1])
        assert parser.next_frame() is None
        assert parser.buffered == i + 1
    parser.feed(data[-1:])
    assert parser.next_frame() == Frame("SEND", {"destination": "/q", "content-length": "3"}, b"a\0b")
    assert parser.next_frame() is None
    assert parser.buffered == 0


def test_stream_fed_byte_by_byte():
    """Heart-beats, CRLF and NUL-in-body handling must not depend on chunk boundaries."""
    parser = FrameParser(version="1.2")
    assert feed_in_chunks(parser, STREAM, list(range(len(STREAM)))) == STREAM_FRAMES
    assert parser.buffered == 0


@settings(PROPERTY, max_examples=300)
@given(cuts=split_points(len(STREAM)))
def test_stream_in_random_chunks(cuts):
    """Any chunking of a stream yields the same frames as one big chunk."""
    parser = FrameParser(version="1.2")
    assert feed_in_chunks(parser, STREAM, cuts) == STREAM_FRAMES
    assert parser.buffered == 0


def test_many_frames_in_one_chunk():
    """Several frames packed in one message are returned one at a time, in order."""
    assert parse(STREAM, version="1.2") == STREAM_FRAMES
    frames = parse(b"".join(b"SEND\nn:%d\n\n%d\0" % (i, i) for i in range(100)))
    assert [(f.headers["n"], f.body) for f in frames] == [(str(i), b"%d" % i) for i in range(100)]


def test_frames_are_returned_lazily_one_at_a_time():
    """next_frame returns one frame per call and None once the buffer is drained."""
    parser = FrameParser()
    parser.feed(b"SEND\n\na\0SEND\n\nb\0")
    assert parser.next_frame().body == b"a"
    assert parser.buffered == len(b"SEND\n\nb\0")
    assert parser.next_frame().body == b"b"
    assert parser.next_frame() is None


@pytest.mark.parametrize("beat", [b"\n", b"\r\n", b"\n\n\n", b"\r\n\r\n\n"])
def test_heartbeats_before_between_and_after_frames(beat):
    """EOLs outside frames are heart-beats (and 1.2 trailing EOLs) and are skipped."""
    frame = b"SEND\n\nx\0"
    assert parse(beat + frame + beat + frame + beat) == [Frame("SEND", {}, b"x")] * 2


def test_heartbeats_alone_are_consumed():
    """A connection sending only heart-beats yields no frames and buffers nothing."""
    parser = FrameParser()
    for beat in (b"\n", b"\r\n", b"\n\n"):
        parser.feed(beat)
        assert parser.next_frame() is None
        assert parser.buffered == 0


def test_crlf_line_endings():
    """STOMP 1.2 allows CRLF after the command and header lines; CR is not kept."""
    frame = parse_one(b"SEND\r\ndestination:/q\r\nfoo:bar\r\n\r\nbody\0")
    assert frame == Frame("SEND", {"destination": "/q", "foo": "bar"}, b"body")


@pytest.mark.parametrize(
    "data",
    [
        b"SEND\r\nfoo:bar\n\n\0",  # CRLF command line, LF elsewhere
        b"SEND\nfoo:bar\r\n\n\0",  # CRLF header line, LF blank line
        b"SEND\nfoo:bar\n\r\n\0",  # CRLF blank line only
        b"SEND\r\n\r\n\0",  # no headers
    ],
)
def test_mixed_line_endings(data):
    """LF and CRLF may be mixed line by line."""
    frame = parse_one(data)
    assert frame.command == "SEND"
    assert frame.headers in ({"foo": "bar"}, {})
    assert frame.body == b""


def test_header_value_whitespace_is_preserved():
    """STOMP does not trim header values; spaces around them are significant."""
    frame = parse_one(b"SEND\nfoo:  bar \nbaz: \t \n\n\0")
    assert frame.headers == {"foo": "  bar ", "baz": " \t "}
    frame = parse_one(b"SEND\r\nfoo:  bar \r\nbaz: \t \r\n\r\n\0")  # only the CR is dropped
    assert frame.headers == {"foo": "  bar ", "baz": " \t "}


def test_content_length_body_may_contain_nul():
    """With content-length the body is read by count, so NUL octets are data."""
    frame = parse_one(b"SEND\ncontent-length:6\n\n\0a\0\0b\0\0")
    assert frame.body == b"\0a\0\0b\0"


def test_content_length_waits_for_whole_body():
    """A body shorter than content-length is not a frame yet, even if it holds a NUL."""
    parser = FrameParser()
    parser.feed(b"SEND\ncontent-length:4\n\nab\0")
    assert parser.next_frame() is None
    parser.feed(b"c")
    assert parser.next_frame() is None
    parser.feed(b"\0SEND\n\n\0")
    assert parser.next_frame().body == b"ab\0c"
    assert parser.next_frame() == Frame("SEND")


def test_nul_terminated_body_without_content_length():
    """Without content-length the body ends at the first NUL."""
    parser = FrameParser()
    parser.feed(b"SEND\n\nhello\0SEND\n\nworld\0")
    assert [f.body for f in parser.frames()] == [b"hello", b"world"]


def test_content_length_zero():
    """content-length:0 means an empty body; the next octet must be the NUL."""
    assert parse_one(b"SEND\ncontent-length:0\n\n\0").body == b""
    with pytest.raises(MalformedFrame):
        parse(b"SEND\ncontent-length:0\n\nx\0")


def test_body_longer_than_content_length():
    """No NUL right after the declared body is a framing error, not a longer body."""
    with pytest.raises(MalformedFrame):
        parse(b"SEND\ncontent-length:2\n\nabc\0")


def test_body_longer_than_content_length_detected_incrementally():
    """The error is raised as soon as the octet after the body arrives."""
    parser = FrameParser()
    parser.feed(b"SEND\ncontent-length:2\n\nab")
    assert parser.next_frame() is None
    parser.feed(b"c")
    with pytest.raises(MalformedFrame):
        parser.next_frame()


@pytest.mark.parametrize(
    "value", ["-1", "abc", "1.5", "", " ", "+1", "0x10", "1e3", "1 2", "\u0663", "\u00b2"]
)
def test_invalid_content_length(value):
    """content-length must be a non-negative ASCII decimal integer."""
    with pytest.raises(MalformedFrame):
        parse(f"SEND\ncontent-length:{value}\n\n\0".encode())


def test_rebase_keeps_pending_frame_intact():
    """Long-lived buffers are compacted; a half-received frame must survive that."""
    filler = b"SEND\n\n" + b"x" * 1000 + b"\0"
    tail_cl = b"SEND\ncontent-length:5\n\nab\0cd\0"
    tail_nul = b"SEND\nk:v\n\n" + b"y" * 300 + b"\0"
    for tail in (tail_cl, tail_nul):
        parser = FrameParser()
        # Many whole frames plus the start of one more (its header block and some body).
        parser.feed(filler * 80 + tail[:26])
        assert len(parser.frames()) == 80
        # Further chunks trigger compaction while that frame is pending.
        frames = []
        for i in range(26, len(tail), 7):
            parser.feed(tail[i : i + 7])
            frames += parser.frames()
        assert frames == parse(tail)
        assert parser.buffered == 0


# --------------------------------------------------------------------------- 2. escaping


def test_version_10_has_no_escapes():
    """In 1.0 backslash sequences are literal text, even undefined ones."""
    frame = parse_one(b"SEND\na\\cb:x\\ny\\c\\\\z\\t\\r\\\n\n\0", version="1.0")
    assert frame.headers == {"a\\cb": "x\\ny\\c\\\\z\\t\\r\\"}


def test_no_version_means_no_escapes():
    """Before CONNECT has negotiated a version nothing is unescaped."""
    frame = parse_one(b"SEND\nx:a\\cb\\t\n\n\0")
    assert frame.headers == {"x": "a\\cb\\t"}


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_version_11_and_12_escapes(version):
    """1.1 and 1.2 define \\n, \\c and \\\\ in header names and values."""
    frame = parse_one(b"SEND\nna\\cme\\n:a\\nb\\cc\\\\d\n\n\0", version=version)
    assert frame.headers == {"na:me\n": "a\nb:c\\d"}


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_unescaping_is_single_pass(version):
    """An escaped backslash followed by 'n' is a backslash and an 'n', not a newline."""
    frame = parse_one(b"SEND\nx:\\\\n\\\\c\\\\\\\\\n\n\0", version=version)
    assert frame.headers == {"x": "\\n\\c\\\\"}


def test_carriage_return_escape_is_12_only():
    """\\r was added in 1.2; in 1.1 it is an undefined escape."""
    data = b"SEND\nx:a\\rb\n\n\0"
    assert parse_one(data, version="1.2").headers == {"x": "a\rb"}
    with pytest.raises(InvalidEscape):
        parse(data, version="1.1")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize(
    "line", [b"x:a\\tb", b"x:\\", b"x:a\\", b"x\\t:v", b"x:\\C", b"x:\\N", b"x:\\0", b"x:\\\xc3\xa9"]
)
def test_undefined_escape(version, line):
    """Undefined (or truncated) escape sequences are fatal in 1.1 and 1.2."""
    with pytest.raises(InvalidEscape):
        parse(b"SEND\n" + line + b"\n\n\0", version=version)


@pytest.mark.parametrize("command", ["CONNECT", "STOMP"])
@pytest.mark.parametrize("version", VERSIONS)
def test_connect_headers_never_unescaped(command, version):
    """CONNECT/STOMP headers are sent unescaped for 1.0 compatibility."""
    data = f"{command}\nlogin:a\\cb\\nc\\td\\\n\n\0".encode()
    assert parse_one(data, version=version).headers == {"login": "a\\cb\\nc\\td\\"}


@pytest.mark.parametrize("version", VERSIONS)
def test_connected_headers_never_unescaped(version):
    """CONNECTED headers are unescaped too (client-side parser accepting server frames)."""
    data = b"CONNECTED\nserver:a\\cb\\tc\\\n\n\0"
    frame = parse_one(data, version=version, commands=ALL_COMMANDS)
    assert frame.headers == {"server": "a\\cb\\tc\\"}


def test_version_switch_between_frames_in_one_chunk():
    """CONNECT and the first SEND may share a chunk; the negotiated version must
    apply to the SEND. This is why the parser parses frames lazily."""
    data = b"CONNECT\naccept-version:1.2\n\n\0SEND\nx:a\\cb\\rc\n\n\0"
    parser = FrameParser()
    parser.feed(data)
    assert parser.next_frame().command == "CONNECT"
    parser.version = "1.2"
    assert parser.next_frame().headers == {"x": "a:b\rc"}

    # Without the switch the escapes stay literal ...
    assert parse(data)[1].headers == {"x": "a\\cb\\rc"}
    # ... and switching to 1.1 instead makes \r an error.
    parser = FrameParser()
    parser.feed(data)
    parser.next_frame()
    parser.version = "1.1"
    with pytest.raises(InvalidEscape):
        parser.next_frame()


# --------------------------------------------------------------------------- 3. repeated headers


def test_repeated_header_first_value_wins():
    """STOMP: if a header is repeated, only the first occurrence is used."""
    frame = parse_one(b"SEND\nfoo:1\nbar:x\nfoo:2\nfoo:3\n\n\0")
    assert frame.headers == {"foo": "1", "bar": "x"}
    assert list(frame.headers) == ["foo", "bar"]


def test_repeated_content_length_first_wins():
    """The first content-length decides the framing; a later one is ignored."""
    frame = parse_one(b"SEND\ncontent-length:3\ncontent-length:1\n\na\0b\0")
    assert frame.body == b"a\0b"


def test_repeated_header_after_unescaping():
    """Names are compared after unescaping (1.2), so escaped spellings repeat too."""
    frame = parse_one(b"SEND\na\\cb:1\na\\cb:2\n\n\0", version="1.2")
    assert frame.headers == {"a:b": "1"}


def test_header_order_is_kept():
    """Header order is preserved (useful for proxies and debugging)."""
    frame = parse_one(b"SEND\nz:1\na:2\nm:3\n\n\0")
    assert list(frame.headers) == ["z", "a", "m"]


# --------------------------------------------------------------------------- 4. bodies

NO_BODY_COMMANDS = sorted(ALL_COMMANDS - BODY_COMMANDS)


@pytest.mark.parametrize("command", NO_BODY_COMMANDS)
def test_body_not_allowed_without_content_length(command):
    """Only SEND, MESSAGE and ERROR may carry a body."""
    with pytest.raises(BodyNotAllowed):
        parse(f"{command}\nid:0\n\nbody\0".encode(), commands=ALL_COMMANDS)


@pytest.mark.parametrize("command", NO_BODY_COMMANDS)
def test_body_not_allowed_with_content_length(command):
    """A non-zero content-length on such a frame fails before the body arrives."""
    parser = FrameParser(commands=ALL_COMMANDS)
    parser.feed(f"{command}\nid:0\ncontent-length:4\n\n".encode())
    with pytest.raises(BodyNotAllowed):
        parser.next_frame()


@pytest.mark.parametrize("command", NO_BODY_COMMANDS)
def test_empty_body_allowed_everywhere(command):
    """An empty body, with or without content-length:0, is fine on any command."""
    assert parse_one(f"{command}\n\n\0".encode(), commands=ALL_COMMANDS).body == b""
    data = f"{command}\ncontent-length:0\n\n\0".encode()
    assert parse_one(data, commands=ALL_COMMANDS).body == b""


@pytest.mark.parametrize("command", sorted(BODY_COMMANDS))
def test_body_commands_may_carry_bodies(command):
    """SEND, MESSAGE and ERROR carry bodies, NUL-terminated or counted."""
    assert parse_one(f"{command}\n\nbody\0".encode(), commands=ALL_COMMANDS).body == b"body"
    data = f"{command}\ncontent-length:3\n\nb\0y\0".encode()
    assert parse_one(data, commands=ALL_COMMANDS).body == b"b\0y"


# --------------------------------------------------------------------------- 5. limits


@pytest.mark.parametrize("error", [FrameTooLarge, TooManyHeaders, HeaderTooLong])
def test_limit_errors_hierarchy(error):
    """Callers may catch LimitExceeded or ProtocolError for every limit."""
    assert issubclass(error, LimitExceeded)
    assert issubclass(error, ProtocolError)


@pytest.mark.parametrize("error", [MalformedFrame, UnknownCommand, InvalidEscape, BodyNotAllowed])
def test_other_errors_are_protocol_errors(error):
    """Every codec error is a ProtocolError, so callers never need a bare except."""
    assert issubclass(error, ProtocolError)
    assert not issubclass(error, LimitExceeded)
    assert error("boom").message == "boom"


def _counted(body_len: int) -> bytes:
    return b"SEND\ncontent-length:%d\n\n" % body_len + b"b" * body_len + b"\0"


def test_max_frame_size_boundary_with_content_length():
    """A frame of exactly max_frame_size octets (NUL included) is accepted."""
    data = _counted(50)
    assert parse_one(data, max_frame_size=len(data)).body == b"b" * 50
    with pytest.raises(FrameTooLarge):
        parse(data, max_frame_size=len(data) - 1)


def test_declared_content_length_too_large_fails_before_body():
    """A too-large content-length is rejected once the header block is in,
    without buffering the body first."""
    parser = FrameParser(max_frame_size=100)
    parser.feed(b"SEND\ncontent-length:1000\n\n")
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_huge_content_length_digits():
    """A content-length with thousands of digits is a too-large frame, not a crash
    (int() refuses to convert more than 4300 digits)."""
    with pytest.raises(FrameTooLarge):
        parse(b"SEND\ncontent-length:" + b"9" * 5000 + b"\n\n\0")


def test_max_frame_size_boundary_without_content_length():
    """The same limit applies to NUL-terminated frames."""
    data = b"SEND\n\n" + b"b" * 50 + b"\0"
    assert parse_one(data, max_frame_size=len(data)).body == b"b" * 50
    with pytest.raises(FrameTooLarge):
        parse(data, max_frame_size=len(data) - 1)


def test_unterminated_body_fails_once_buffer_passes_limit():
    """Without content-length, a body with no NUL in sight fails as soon as the
    buffered frame grows past the limit, bounding memory per connection."""
    parser = FrameParser(max_frame_size=50)
    parser.feed(b"SEND\n\n")
    while True:
        parser.feed(b"x" * 7)
        if parser.buffered > 50:
            break
        assert parser.next_frame() is None
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_unterminated_header_block_fails_once_buffer_passes_limit():
    """A header block that never ends is bounded by max_frame_size too."""
    parser = FrameParser(max_frame_size=50, max_headers=1000)
    parser.feed(b"SEND\n")
    while True:
        parser.feed(b"h:v\n")
        if parser.buffered > 50:
            break
        assert parser.next_frame() is None
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_max_headers():
    """max_headers header lines are accepted, one more is TooManyHeaders."""
    three = b"SEND\na:1\nb:2\nc:3\n\n\0"
    assert len(parse_one(three, max_headers=3).headers) == 3
    with pytest.raises(TooManyHeaders):
        parse(three, max_headers=2)


def test_max_headers_counts_repeats():
    """Repeated lines count: they cost parsing work even though they are dropped."""
    with pytest.raises(TooManyHeaders):
        parse(b"SEND\na:1\na:2\na:3\n\n\0", max_headers=2)


def test_max_header_length():
    """A header line of max_header_length is accepted, one more is HeaderTooLong;
    the line ending is not counted."""
    line = b"a:" + b"x" * 18  # 20 octets
    assert parse_one(b"SEND\n" + line + b"\n\n\0", max_header_length=20).headers == {"a": "x" * 18}
    assert parse_one(b"SEND\r\n" + line + b"\r\n\r\n\0", max_header_length=20).headers == {"a": "x" * 18}
    with pytest.raises(HeaderTooLong):
        parse(b"SEND\n" + line + b"x\n\n\0", max_header_length=20)


def test_command_line_without_newline_fails_once_past_limit():
    """Garbage with no newline at all must not be buffered up to max_frame_size."""
    parser = FrameParser(max_header_length=16)
    for _ in range(16):
        parser.feed(b"A")
        assert parser.next_frame() is None
    parser.feed(b"A")
    with pytest.raises(HeaderTooLong):
        parser.next_frame()


# --------------------------------------------------------------------------- 6. commands and malformed input


@pytest.mark.parametrize("command", [b"FOO", b"send", b"SEND ", b" SEND", b"SENDX", b"ACK:"])
def test_unknown_command(command):
    """Commands are matched exactly (case-sensitive, no surrounding spaces)."""
    with pytest.raises(UnknownCommand):
        parse(command + b"\n\n\0")


@pytest.mark.parametrize("command", sorted(SERVER_COMMANDS))
def test_default_parser_rejects_server_commands(command):
    """A broker parses client frames; a client must not send MESSAGE etc."""
    with pytest.raises(UnknownCommand):
        parse(f"{command}\n\n\0".encode())


@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
def test_all_commands_parser_accepts_everything(command):
    """commands=ALL_COMMANDS is the client-side (or test) configuration."""
    assert parse_one(f"{command}\n\n\0".encode(), commands=ALL_COMMANDS).command == command


@pytest.mark.parametrize("command", sorted(CLIENT_COMMANDS))
def test_default_parser_accepts_client_commands(command):
    assert parse_one(f"{command}\n\n\0".encode()).command == command


@pytest.mark.parametrize("line", [b"nocolon", b":value", b":", b" ", b"\r\r"])
def test_bad_header_line(line):
    """Every header line needs a non-empty name followed by a colon."""
    with pytest.raises(MalformedFrame):
        parse(b"SEND\n" + line + b"\n\n\0")


@pytest.mark.parametrize(
    "data",
    [
        b"SEND\nfoo:\xff\n\n\0",  # invalid byte in a value
        b"SEND\n\xc3:bar\n\n\0",  # truncated sequence in a name
        b"SEND\nfoo:\xed\xa0\x80\n\n\0",  # encoded surrogate
        b"SE\x80ND\n\n\0",  # in the command line
    ],
)
def test_invalid_utf8_in_header_block(data):
    """Headers are UTF-8 text; anything else is a malformed frame."""
    with pytest.raises(MalformedFrame):
        parse(data)


@pytest.mark.parametrize(
    "data",
    [
        b"SEND\ndestination:/t\nx:a\0b\n\n\0",  # in a value
        b"SEND\nx\0y:z\n\n\0",  # in a name
        b"SEND\0\n\n\0",  # in the command line
    ],
)
def test_nul_in_headers_is_refused(data):
    """stompjs 2.x splits at every NUL: one inside a header would start a forged frame there."""
    with pytest.raises(MalformedFrame, match="NUL"):
        parse(data)


def test_nul_in_a_body_with_content_length_is_kept():
    """Bodies are octets: with content-length they may hold NULs (what reaches whom is the session's call)."""
    assert parse_one(b"SEND\ncontent-length:3\n\na\0b\0").body == b"a\0b"


def test_incomplete_header_block_is_searched_once():
    """A header block that arrives a byte at a time is searched from where the last search stopped.

    Searching it again from its start on every byte made a large header block
    (or a run of packed frames) cost quadratic time.
    """
    head = b"SEND\n" + b"x-h:" + b"v" * 5000 + b"\n"
    parser = FrameParser(max_header_length=10_000)
    for i in range(len(head)):
        parser.feed(head[i : i + 1])
        assert parser.next_frame() is None
        assert parser._head_scanned == parser.buffered  # nothing left to search again
    parser.feed(b"\n\0")
    assert parser.next_frame().headers["x-h"] == "v" * 5000


def test_consumed_counts_every_byte_of_returned_frames():
    """``consumed`` (what rate limits charge) covers frames and the EOLs between them, not what is pending."""
    one = serialize(Frame("SEND", {"destination": "/t"}, b"abc"))
    parser = FrameParser()
    parser.feed(b"\n\r\n" + one + one[:5])
    assert parser.next_frame() is not None
    assert parser.consumed == 3 + len(one)
    assert parser.next_frame() is None
    assert parser.consumed == 3 + len(one)
    parser.feed(one[5:])
    parser.next_frame()
    assert parser.consumed == 3 + 2 * len(one)


def test_body_is_not_decoded():
    """Only the header block is UTF-8; bodies are arbitrary octets."""
    assert parse_one(b"SEND\n\n\xff\xfe\x80\0").body == b"\xff\xfe\x80"


def test_non_ascii_headers():
    """UTF-8 header names and values are decoded."""
    frame = parse_one("SEND\nnäme:välue ✓\n\n\0".encode())
    assert frame.headers == {"näme": "välue ✓"}


def test_error_is_sticky():
    """After a protocol error the stream is out of sync; the parser keeps raising
    the same error instead of resynchronising on attacker-controlled bytes."""
    parser = FrameParser()
    parser.feed(b"FOO\n\n\0")
    with pytest.raises(UnknownCommand) as first:
        parser.next_frame()
    parser.feed(b"SEND\n\n\0")
    for _ in range(3):
        with pytest.raises(UnknownCommand) as again:
            parser.next_frame()
        assert again.value is first.value
    with pytest.raises(UnknownCommand):
        parser.frames()


def test_frames_before_an_error_are_delivered():
    """Frames that precede the bad one in the same chunk are still returned."""
    parser = FrameParser()
    parser.feed(b"SEND\n\nok\0FOO\n\n\0")
    assert parser.next_frame().body == b"ok"
    with pytest.raises(UnknownCommand):
        parser.next_frame()


# --------------------------------------------------------------------------- 7. serializer


def test_serialize_adds_content_length():
    """A body gets a content-length so it may contain NULs."""
    wire = serialize(Frame("SEND", {"destination": "/q"}, b"a\0b"))
    assert wire == b"SEND\ndestination:/q\ncontent-length:3\n\na\0b\0"


def test_serialize_without_body_has_no_content_length():
    assert serialize(Frame("SUBSCRIBE", {"id": "0"})) == b"SUBSCRIBE\nid:0\n\n\0"
    assert serialize(Frame("DISCONNECT")) == b"DISCONNECT\n\n\0"


def test_serialize_keeps_given_content_length():
    """A caller-supplied content-length is not duplicated."""
    wire = serialize(Frame("SEND", {"content-length": "2", "x": "y"}, b"ab"))
    assert wire == b"SEND\ncontent-length:2\nx:y\n\nab\0"
    assert wire.count(b"content-length") == 1


def test_serialize_content_length_can_be_disabled():
    """content_length=False writes a plain NUL-terminated body (1.0 style)."""
    assert serialize(Frame("SEND", {}, b"ab"), content_length=False) == b"SEND\n\nab\0"


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1.2", b"SEND\na\\cb\\r:x\\ny\\cz\\\\w\\rv\n\n\0"),
        ("1.1", b"SEND\na\\cb\r:x\\ny\\cz\\\\w\rv\n\n\0"),  # 1.1 has no \r escape
        ("1.0", b"SEND\na:b :x y:z\\w v\n\n\0"),  # no escapes: line breaks flattened
        (None, b"SEND\na:b :x y:z\\w v\n\n\0"),
    ],
)
def test_serialize_escaping_by_version(version, expected):
    """Names and values are escaped as the peer's version defines."""
    frame = Frame("SEND", {"a:b\r": "x\ny:z\\w\rv"})
    assert serialize(frame, version) == expected


@pytest.mark.parametrize("command", sorted(UNESCAPED_COMMANDS))
@pytest.mark.parametrize("version", VERSIONS)
def test_serialize_connect_and_connected_unescaped(command, version):
    """CONNECT/STOMP/CONNECTED headers are never escaped, only flattened."""
    frame = Frame(command, {"k": "a:b\\c\nd\re"})
    assert serialize(frame, version) == f"{command}\nk:a:b\\c d e\n\n\0".encode()


def test_serialize_utf8():
    """Header text is written as UTF-8; the body is copied as is."""
    wire = serialize(Frame("MESSAGE", {"ä": "✓"}, b"\xff"))
    assert wire == "MESSAGE\nä:✓\ncontent-length:1\n\n".encode() + b"\xff\0"


def test_encode_headers():
    """Pre-encoded header lines for the broker's fast path, escaped per version."""
    assert encode_headers({}, "1.2") == b""
    headers = {"a:b": "c\nd\\", "e": "f\rg"}
    assert encode_headers(headers, "1.2") == b"a\\cb:c\\nd\\\\\ne:f\\rg\n"
    assert encode_headers(headers, "1.1") == b"a\\cb:c\\nd\\\\\ne:f\rg\n"
    assert encode_headers(headers, "1.0") == b"a:b:c d\\\ne:f g\n"
    assert encode_headers(headers, None) == b"a:b:c d\\\ne:f g\n"
    assert encode_headers({"ü": "✓"}, "1.2") == "ü:✓\n".encode()


def test_encode_headers_matches_serialize():
    """encode_headers produces exactly the header lines serialize would."""
    headers = {"destination": "/q", "x": "a:b\nc"}
    for version in VERSIONS:
        wire = serialize(Frame("MESSAGE", headers), version)
        assert wire == b"MESSAGE\n" + encode_headers(headers, version) + b"\n\0"


# --------------------------------------------------------------------------- 8. properties

_WS = st.sampled_from(["", " ", "  ", "\t", " \t "])


def _text(exclude: str, *, min_size: int = 0):
    # NUL never appears in headers: the parser refuses it (stompjs 2.x would split a frame there).
    return st.text(
        st.characters(codec="utf-8", exclude_characters=exclude + "\0"), min_size=min_size, max_size=16
    )


@st.composite
def frames_for(draw, version: str) -> Frame:
    """Any frame that ``version`` can represent exactly."""
    command = draw(st.sampled_from(sorted(ALL_COMMANDS)))
    if version == "1.0" or command in UNESCAPED_COMMANDS:
        names, values = _text("\n\r:", min_size=1), _text("\n\r")
    elif version == "1.1":
        names, values = _text("\r", min_size=1), _text("\r")
    else:
        names, values = _text("", min_size=1), _text("")
    # Make leading/trailing whitespace common: the parser must not trim it.
    values = st.one_of(values, st.builds(lambda a, v, b: a + v + b, _WS, values, _WS))
    names = names.filter(lambda n: n != "content-length")
    headers = draw(st.dictionaries(names, values, max_size=8))
    body = draw(st.binary(max_size=64)) if command in BODY_COMMANDS else b""
    return Frame(command, headers, body)


@st.composite
def streams(draw):
    """A version, some frames for it, and their wire form with heart-beats between."""
    version = draw(st.sampled_from(VERSIONS))
    frames = draw(st.lists(frames_for(version), min_size=1, max_size=4))
    wire = b""
    for frame in frames:
        wire += draw(st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"])) + serialize(frame, version)
    return version, frames, wire


@PROPERTY
@given(case=streams(), data=st.data())
def test_round_trip(case, data):
    """serialize() then parse with the same version, in any chunking, gives back
    the same command, headers (plus content-length) and body."""
    version, frames, wire = case
    cuts = data.draw(split_points(len(wire)), label="cuts")
    parser = FrameParser(commands=ALL_COMMANDS, version=version)
    got = feed_in_chunks(parser, wire, cuts)
    assert len(got) == len(frames)
    for sent, received in zip(frames, got):
        expected = dict(sent.headers)
        if sent.body:
            expected["content-length"] = str(len(sent.body))
        assert received.command == sent.command
        assert received.headers == expected
        assert list(received.headers) == list(expected)
        assert received.body == sent.body
    assert parser.buffered == 0


@settings(PROPERTY, max_examples=200)
@given(frame=frames_for("1.2"), data=st.data())
def test_round_trip_with_crlf_lines(frame, data):
    """A 1.2 peer may end every header-block line with CRLF; the result is the same."""
    wire = serialize(frame, "1.2")
    head, _, rest = wire.partition(b"\n\n")
    wire = head.replace(b"\n", b"\r\n") + b"\r\n\r\n" + rest
    cuts = data.draw(split_points(len(wire)), label="cuts")
    parser = FrameParser(commands=ALL_COMMANDS, version="1.2")
    [got] = feed_in_chunks(parser, wire, cuts)
    assert (got.command, got.body) == (frame.command, frame.body)
    assert {k: v for k, v in got.headers.items() if k != "content-length"} == frame.headers


# -- robustness

_TOKENS = [
    *(c.encode() for c in sorted(ALL_COMMANDS)),
    b"\n", b"\r\n", b"\r", b"\n\n", b"\0", b":", b"\\", b"\\c", b"\\n", b"\\r", b"\\t",
    b"content-length:", b"content-length:0", b"content-length:3", b"content-length:-1",
    b"a", b"id", b"1", b" ", b"\xff", b"\xc3", b"\xc3\xa9",
]  # fmt: skip


@st.composite
def mutated_frames(draw):
    """Valid wire data with a few (possibly zero) random byte-level edits."""
    version = draw(st.sampled_from(VERSIONS))
    frames = draw(st.lists(frames_for(version), min_size=1, max_size=3))
    wire = bytearray(b"".join(serialize(f, version) for f in frames))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(wire)))
        if op == "flip" and at < len(wire):
            wire[at] = draw(st.integers(0, 255))
        elif op == "insert":
            wire[at:at] = draw(st.one_of(st.binary(min_size=1, max_size=4), st.sampled_from(_TOKENS)))
        elif op == "delete":
            del wire[at : at + draw(st.integers(1, 4))]
        elif op == "truncate":
            del wire[at:]
    return bytes(wire)


# Command line, header lines and body made of protocol-significant tokens.
frame_shaped = st.builds(
    lambda command, lines, body: b"\n".join([command, *lines, b"", body + b"\0"]),
    st.sampled_from(sorted(c.encode() for c in ALL_COMMANDS)),
    st.lists(st.lists(st.sampled_from(_TOKENS), max_size=5).map(b"".join), max_size=5),
    st.binary(max_size=8),
)

arbitrary_input = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(_TOKENS), max_size=40).map(b"".join),
    st.lists(frame_shaped, min_size=1, max_size=3).map(b"".join),
    mutated_frames(),
)


@st.composite
def parsers(draw) -> FrameParser:
    """Parsers of every version, both command sets, default or small limits."""
    kwargs = {
        "version": draw(st.sampled_from((None, *VERSIONS))),
        "commands": draw(st.sampled_from((CLIENT_COMMANDS, ALL_COMMANDS))),
    }
    if draw(st.booleans()):
        kwargs["max_frame_size"] = draw(st.integers(1, 400))
        kwargs["max_headers"] = draw(st.integers(0, 10))
        kwargs["max_header_length"] = draw(st.integers(1, 80))
    return FrameParser(**kwargs)


@settings(PROPERTY, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(parser=parsers(), blob=arbitrary_input, data=st.data())
def test_arbitrary_input_never_crashes(parser, blob, data):
    """Whatever a peer sends, the parser yields frames or raises a ProtocolError
    subclass (never another exception) and always makes progress."""
    cuts = data.draw(split_points(len(blob)), label="cuts")
    prev = 0
    try:
        for cut in [*sorted(set(cuts)), len(blob)]:
            parser.feed(blob[prev:cut])
            prev = cut
            # Each frame consumes at least one octet, so this bound proves progress.
            for _ in range(len(blob) + 1):
                frame = parser.next_frame()
                if frame is None:
                    break
                assert isinstance(frame, Frame)
                assert frame.command in parser.commands
                assert not frame.body or frame.command in BODY_COMMANDS
            else:
                pytest.fail("parser returned more frames than there are octets")
    except ProtocolError as exc:
        # Sticky: the same error again, even with more input.
        parser.feed(b"SEND\n\n\0")
        with pytest.raises(type(exc)) as again:
            parser.next_frame()
        assert again.value is exc
    assert 0 <= parser.buffered <= len(blob) + len(b"SEND\n\n\0")


@PROPERTY
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=300),
    crlf=st.booleans(),
    chunk=st.integers(1, 4096),
)
def test_packed_frames_parse_alike_in_any_packing(sizes, crlf, chunk):
    """Hundreds of small frames packed in one feed, or fed in arbitrary chunks,
    give the same frames: the bounded searches miss no boundary."""
    eol = b"\r\n" if crlf else b"\n"
    frames = [
        serialize(Frame("SEND", {"destination": f"/t/{i}"}, b"y" * n), "1.2").replace(b"\n", eol, 2)
        for i, n in enumerate(sizes)
    ]
    wire = b"".join(frames)
    whole = FrameParser(version="1.2")
    whole.feed(wire)
    packed = whole.frames()
    chunked = FrameParser(version="1.2")
    got = []
    for i in range(0, len(wire), chunk):
        chunked.feed(wire[i : i + chunk])
        got += chunked.frames()
    assert [(f.headers["destination"], f.body) for f in packed] == [
        (f"/t/{i}", b"y" * n) for i, n in enumerate(sizes)
    ]
    assert [(f.headers, f.body) for f in got] == [(f.headers, f.body) for f in packed]
    assert whole.consumed == chunked.consumed == len(wire)
