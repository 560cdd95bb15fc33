"""The log formatters (stompgate.logs): JSON lines with the contract's structured fields, in process."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stompgate import logs


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the node's JSON formatter and node stamp into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs._stamp)
    logger = logging.getLogger("test.logformat")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logs.set_node("n-1")
    yield logger, out
    logger.removeHandler(handler)
    logs.set_node(None)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    text = out.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text[:-1].split("\n")]


def test_session_lines_carry_the_contracts_fields(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    extra = {
        "event": "session.close", "session": "abc123", "user": "bob", "remote": "203.0.113.7",
        "reason": "heartbeat", "transport": "websocket",
    }  # fmt: skip
    logger.info("session %s closed (%s)", "abc123", "heartbeat", extra=extra)
    logger.info("session %s opened", "s2", extra={"event": "session.open", "session": "s2", "user": None})
    (close, opened) = lines(out)
    assert close == {
        "ts": close["ts"], "level": "INFO", "logger": "test.logformat",
        "msg": "session abc123 closed (heartbeat)", "node": "n-1", **extra,
    }  # fmt: skip
    assert list(close)[:5] == ["ts", "level", "logger", "msg", "node"]
    assert "user" not in opened  # None: left out
    assert opened["event"] == "session.open" and opened["session"] == "s2"


def test_the_plain_formatter_ignores_them() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "session %s closed", ("s1",), None)
    record.event, record.reason = "session.close", "client"
    assert logs.SafeFormatter("%(levelname)s %(message)s").format(record) == "INFO session s1 closed"


def test_anything_stays_one_valid_line(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    hostile = 'a\nb\r"c\x00\x1b[2J\x85\u2028\u2029\ud800\udcff}'
    logger.warning("user %s", hostile, extra={"user": hostile, "session": Path("/tmp/x"), "bytes": 12})
    try:
        raise ValueError(hostile)
    except ValueError:
        logger.exception("failed: %s", hostile)
    logger.info("stack", stack_info=True)
    text = out.getvalue()
    assert text.count("\n") == 3 and len(text.splitlines()) == 3  # str.splitlines splits at \x85, \u2028 too
    for char in "\r\x00\x1b\x85\u2028\u2029":
        assert char not in text
    first, failed, stack = lines(out)
    shown = 'a\nb\r"c\x00\x1b[2J\x85\u2028\u2029\\ud800\\udcff}'  # surrogates cannot be JSON text: escaped
    assert first["msg"] == "user " + shown and first["user"] == shown
    assert first["session"] == "/tmp/x" and first["bytes"] == 12
    assert failed["level"] == "ERROR" and "Traceback" in str(failed["exception"])
    assert "ValueError: " + shown in str(failed["exception"])
    assert "test_anything_stays_one_valid_line" in str(stack["stack"])


def test_a_worker_stamps_its_own_node_id(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    root = logging.getLogger()
    text_handler = logging.StreamHandler(io.StringIO())
    text_handler.setFormatter(logs.SafeFormatter("%(name)s: %(message)s"))
    json_handler = logging.StreamHandler(io.StringIO())
    json_handler.setFormatter(logs.JsonFormatter())
    root.addHandler(text_handler)
    root.addHandler(json_handler)
    try:
        logs.label_worker(1, "n-1-w1", "%(name)s: %(message)s")
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
        assert text_handler.format(record) == "w1 x: hello"
        assert isinstance(json_handler.formatter, logs.JsonFormatter)
    finally:
        root.removeHandler(text_handler)
        root.removeHandler(json_handler)
    logger.info("from the worker")
    logger.info("stamped already", extra={"node": "other"})
    assert [r["node"] for r in lines(out)] == ["n-1-w1", "other"]
