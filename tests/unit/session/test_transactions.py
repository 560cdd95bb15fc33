"""Transactions: BEGIN, COMMIT, ABORT and what is buffered in them."""

from __future__ import annotations

import pytest

from stompgate.broker import SessionLimits

from .harness import Env, deliver, make_env


class TestCommitAndAbort:
    """What a transaction holds back until COMMIT, and drops otherwise."""

    def test_transaction_delivers_in_order_at_commit(self, env: Env) -> None:
        """BEGIN, SEND, SEND: nothing until COMMIT, then both, in order."""
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        sender = env.connected("s")
        sender.send("BEGIN", {"transaction": "t"})
        sender.publish("/topic/a", b"1", transaction="t")
        sender.publish("/topic/b", b"x", transaction="t")
        sender.publish("/topic/a", b"2", transaction="t")
        assert sub.frames() == []
        assert env.broker.stats.messages_published == 0
        sender.send("COMMIT", {"transaction": "t"})
        assert sub.bodies() == [b"1", b"2"]

    def test_non_transactional_send_is_immediate_during_a_transaction(self, env: Env) -> None:
        """Only frames that name the transaction are buffered."""
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        sender = env.connected("s")
        sender.send("BEGIN", {"transaction": "t"})
        sender.publish("/topic/a", b"tx", transaction="t")
        sender.publish("/topic/a", b"now")
        assert sub.bodies() == [b"now"]
        sender.send("COMMIT", {"transaction": "t"})
        assert sub.bodies() == [b"tx"]

    def test_abort_delivers_nothing(self, env: Env) -> None:
        """ABORT drops the buffered SENDs and ends the transaction."""
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        sender = env.connected("s")
        sender.send("BEGIN", {"transaction": "t"})
        sender.publish("/topic/a", b"1", transaction="t")
        sender.send("ABORT", {"transaction": "t", "receipt": "r"})
        sender.receipt("r")
        assert sub.frames() == []
        sender.send("COMMIT", {"transaction": "t"})  # gone
        sender.expect_error(contains="'t'")
        assert sub.frames() == []

    def test_interleaved_transactions(self, env: Env) -> None:
        """Two open transactions are independent."""
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        s = env.connected("s")
        s.send("BEGIN", {"transaction": "t1"})
        s.send("BEGIN", {"transaction": "t2"})
        s.publish("/topic/a", b"1a", transaction="t1")
        s.publish("/topic/a", b"2a", transaction="t2")
        s.publish("/topic/a", b"1b", transaction="t1")
        s.send("COMMIT", {"transaction": "t2"})
        assert sub.bodies() == [b"2a"]
        s.send("ABORT", {"transaction": "t1"})
        assert sub.bodies() == []

    def test_transaction_id_reusable_after_commit(self, env: Env) -> None:
        """A committed transaction id is free again."""
        s = env.connected()
        for _ in range(3):
            s.send("BEGIN", {"transaction": "t"})
            s.send("COMMIT", {"transaction": "t", "receipt": "r"})
            s.receipt("r")

    @pytest.mark.parametrize("command", ["ACK", "NACK"])
    def test_ack_inside_transaction_takes_effect_at_commit(self, command: str) -> None:
        """A transactional ACK/NACK is applied at COMMIT, and never after ABORT."""
        env = make_env(limits=SessionLimits(max_unacked=10))
        client = env.connected()
        client.subscribe("/topic/a", ack="client-individual")
        deliver(env, "/topic/a", 2)
        m1, m2 = client.messages()
        stat = "acked" if command == "ACK" else "nacked"
        client.send("BEGIN", {"transaction": "t"})
        client.ack(m1, command=command, transaction="t")
        assert getattr(env.broker.stats, stat) == 0
        client.send("COMMIT", {"transaction": "t"})
        assert getattr(env.broker.stats, stat) == 1
        client.send("BEGIN", {"transaction": "u"})
        client.ack(m2, command=command, transaction="u")
        client.send("ABORT", {"transaction": "u"})
        assert getattr(env.broker.stats, stat) == 1
        assert client.out.closes == []

    @pytest.mark.parametrize("ending", ["disconnect", "connection_lost", "close"])
    def test_open_transactions_discarded_at_end(self, env: Env, ending: str) -> None:
        """Whatever ends the session, an open transaction is not delivered."""
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        client = env.connected()
        client.send("BEGIN", {"transaction": "t"})
        client.publish("/topic/a", b"x", transaction="t")
        if ending == "disconnect":
            client.send("DISCONNECT", {"receipt": "r"})
        elif ending == "connection_lost":
            client.session.connection_lost()
        else:
            client.session.close()
        client.session.receive_data(client.encode("COMMIT", {"transaction": "t"}))
        assert sub.frames() == []
        assert env.broker.stats.messages_published == 0


class TestTransactionErrors:
    """Misused transactions are errors, and deliver nothing."""

    @pytest.mark.parametrize(
        "command, headers",
        [
            ("SEND", {"destination": "/topic/a", "transaction": "nope"}),
            ("ACK", {"id": "x", "transaction": "nope"}),
            ("COMMIT", {"transaction": "nope"}),
            ("ABORT", {"transaction": "nope"}),
        ],
    )
    def test_unknown_transaction_is_an_error(self, env: Env, command: str, headers: dict[str, str]) -> None:
        """A transaction never begun cannot be used, committed or aborted."""
        client = env.connected()
        client.send(command, headers)
        client.expect_error(contains="nope")

    @pytest.mark.parametrize("command", ["BEGIN", "COMMIT", "ABORT"])
    def test_transaction_header_required(self, env: Env, command: str) -> None:
        """BEGIN, COMMIT and ABORT all need a transaction header."""
        client = env.connected()
        client.send(command, {})
        client.expect_error(contains="transaction")

    def test_duplicate_begin_is_an_error(self, env: Env) -> None:
        """BEGIN of an open transaction is refused, and its buffered SEND never goes out."""
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        client = env.connected()
        client.send("BEGIN", {"transaction": "t"})
        client.publish("/topic/a", b"x", transaction="t")
        client.send("BEGIN", {"transaction": "t"})
        client.expect_error(contains="'t'")
        assert sub.frames() == []

    def test_bad_destination_in_transaction_fails_at_send(self, env: Env) -> None:
        """A transactional SEND is validated when it arrives, not at COMMIT."""
        client = env.connected()
        client.send("BEGIN", {"transaction": "t"})
        client.publish("/nowhere", b"x", transaction="t")
        client.expect_error(contains="/nowhere")

    def test_failed_commit_delivers_nothing(self, env: Env) -> None:
        """A transaction is all or nothing: an invalid ACK in it must not let the SENDs before it out.

        SEND destinations are validated when buffered so a bad one fails before COMMIT;
        a transactional ACK for a message never issued must not half-commit either.
        """
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        client = env.connected()
        client.send("BEGIN", {"transaction": "t"})
        client.publish("/topic/a", b"1", transaction="t")
        client.send("ACK", {"id": "never-issued", "transaction": "t"})
        client.publish("/topic/a", b"2", transaction="t")
        client.send("COMMIT", {"transaction": "t"})
        client.expect_error(contains="never-issued")
        assert sub.frames() == []


class TestTransactionLimits:
    """limits.max_transactions and limits.max_transaction_frames."""

    def test_max_transactions(self) -> None:
        """limits.max_transactions open at once; COMMIT frees a slot."""
        env = make_env(limits=SessionLimits(max_transactions=2))
        client = env.connected()
        client.send("BEGIN", {"transaction": "a"})
        client.send("BEGIN", {"transaction": "b"})
        client.send("COMMIT", {"transaction": "a"})
        client.send("BEGIN", {"transaction": "c", "receipt": "r"})
        client.receipt("r")
        client.send("BEGIN", {"transaction": "d"})
        client.expect_error(contains="2")

    def test_max_transaction_frames(self) -> None:
        """limits.max_transaction_frames per transaction; nothing buffered is delivered."""
        env = make_env(limits=SessionLimits(max_transaction_frames=2))
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        client = env.connected()
        client.send("BEGIN", {"transaction": "t"})
        client.publish("/topic/a", b"1", transaction="t")
        client.publish("/topic/a", b"2", transaction="t")
        client.publish("/topic/a", b"3", transaction="t")
        client.expect_error(contains="2")
        assert sub.frames() == []
