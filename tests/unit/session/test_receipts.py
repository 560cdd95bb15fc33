"""RECEIPT, and receipt-id on ERROR."""

from __future__ import annotations

import pytest

from stompgate.broker.session import CLOSE_NORMAL

from .harness import Client, Env


def _setup_for(command: str, client: Client) -> dict[str, str]:
    """Headers making ``command`` valid on a connected 1.2 ``client``."""
    if command == "SUBSCRIBE":
        return {"id": "new", "destination": "/topic/r"}
    if command == "UNSUBSCRIBE":
        client.subscribe("/topic/r", "old")
        return {"id": "old"}
    if command == "SEND":
        return {"destination": "/topic/r"}
    if command in ("ACK", "NACK"):
        client.subscribe("/topic/r", "c", ack="client-individual")
        client.env.connected("other").publish("/topic/r", b"x")
        return {"id": client.message().headers["ack"]}
    if command == "BEGIN":
        return {"transaction": "t"}
    if command in ("COMMIT", "ABORT"):
        client.send("BEGIN", {"transaction": "t"})
        return {"transaction": "t"}
    raise AssertionError(command)


class TestReceipt:
    """RECEIPT for a frame with a receipt header, and when it comes."""

    @pytest.mark.parametrize(
        "command", ["SUBSCRIBE", "UNSUBSCRIBE", "SEND", "ACK", "NACK", "BEGIN", "COMMIT", "ABORT"]
    )
    def test_receipt_for_every_frame(self, env: Env, command: str) -> None:
        """Every client frame with a receipt header is answered with RECEIPT receipt-id."""
        client = env.connected()
        headers = _setup_for(command, client)
        client.frames()
        client.send(command, {**headers, "receipt": f"r-{command}"})
        client.receipt(f"r-{command}")
        assert client.out.closes == []

    def test_receipt_for_disconnect_then_close(self, env: Env) -> None:
        """DISCONNECT receipt: RECEIPT, then close 1000, nothing else."""
        client = env.connected()
        client.send("DISCONNECT", {"receipt": "bye"})
        client.receipt("bye")
        assert client.out.closes == [(CLOSE_NORMAL, client.out.closes[0][1])]
        assert client.out.writes_after_close == []
        env.assert_empty()

    def test_receipt_id_escaped(self, env: Env) -> None:
        """receipt-id is escaped like any other 1.2 header."""
        client = env.connected()
        client.send("BEGIN", {"transaction": "t", "receipt": "a:b\nc"})
        client.receipt("a:b\nc")

    def test_receipt_inside_transaction_is_immediate(self, env: Env) -> None:
        """A transactional SEND is receipted when buffered, not at COMMIT."""
        client = env.connected()
        client.subscribe("/topic/a")
        client.send("BEGIN", {"transaction": "t"})
        client.publish("/topic/a", b"x", transaction="t", receipt="r")
        client.receipt("r")
        client.send("COMMIT", {"transaction": "t"})
        assert client.bodies() == [b"x"]

    def test_receipt_follows_the_messages_the_frame_caused(self, env: Env) -> None:
        """A SEND to one's own subscription: MESSAGE first, then RECEIPT."""
        client = env.connected()
        client.subscribe("/topic/a")
        client.publish("/topic/a", b"x", receipt="r")
        assert client.commands() == ["MESSAGE", "RECEIPT"]


class TestReceiptIdOnError:
    """An ERROR names the receipt of the frame that caused it, and only that one."""

    @pytest.mark.parametrize(
        "command, headers",
        [
            ("SUBSCRIBE", {"destination": "/topic/a"}),
            ("SEND", {"destination": "/nowhere"}),
            ("ACK", {"id": "never"}),
            ("COMMIT", {"transaction": "nope"}),
            ("NACK", {}),
        ],
    )
    def test_error_carries_receipt_id(self, env: Env, command: str, headers: dict[str, str]) -> None:
        """An ERROR caused by a frame with a receipt names it in receipt-id; no RECEIPT follows."""
        client = env.connected()
        client.send(command, {**headers, "receipt": "r77"})
        error = client.expect_error()
        assert error.headers["receipt-id"] == "r77"

    def test_error_before_connect_carries_receipt_id(self, env: Env) -> None:
        """receipt-id is set even for the 'expected CONNECT' ERROR."""
        client = env.client()
        client.send("SEND", {"destination": "/topic/a", "receipt": "r1"})
        error = client.expect_error()
        assert error.headers["receipt-id"] == "r1"

    def test_error_without_receipt_has_no_receipt_id(self, env: Env) -> None:
        """A receipt of an earlier frame must not leak into a later ERROR."""
        client = env.connected()
        client.send("BEGIN", {"transaction": "t", "receipt": "old"})
        client.receipt("old")
        client.send("SEND", {"destination": "/nowhere"})
        error = client.expect_error()
        assert "receipt-id" not in error.headers
