"""A session's open transactions: the frames each holds until COMMIT or ABORT.

Bounded in number, in frames each and in bytes all together, so a client
cannot make the node hold what it will never commit. The session validates a
frame before :meth:`Transactions.hold` takes it, so that COMMIT applies all or
(when a frame is bad) the session has already failed on arrival.
"""

from __future__ import annotations

from ..stomp import Frame
from .closes import LIMIT
from .errors import StompSessionError, required
from .settings import SessionLimits


class Transactions:
    """Made at a session's first BEGIN."""

    __slots__ = ("_open", "_limits", "bytes")

    def __init__(self, limits: SessionLimits) -> None:
        self._limits = limits
        # transaction id -> its frames, each with its size on the wire
        self._open: dict[str, list[tuple[Frame, int]]] = {}
        self.bytes = 0  # held by all open transactions together

    def begin(self, frame: Frame) -> None:
        tx = required(frame, "transaction")
        if tx in self._open:
            raise StompSessionError(f"transaction {tx!r} is already open")
        if len(self._open) >= self._limits.max_transactions:
            cap = self._limits.max_transactions
            raise StompSessionError(f"more than {cap} open transactions", cause=LIMIT)
        self._open[tx] = []

    def end(self, frame: Frame) -> list[tuple[Frame, int]]:
        """COMMIT or ABORT: the transaction's frames, in order, and it is closed."""
        tx = required(frame, "transaction")
        frames = self._open.pop(tx, None)
        if frames is None:
            raise StompSessionError(f"{frame.command} of unknown transaction {tx!r}")
        self.bytes -= sum(size for _frame, size in frames)
        return frames

    def check_room(self, tx: str, frame: Frame, size: int) -> None:
        """Refuse a frame for an unknown transaction, or one past the limits."""
        frames = self._open.get(tx)
        if frames is None:
            raise StompSessionError(f"{frame.command} in unknown transaction {tx!r}")
        limits = self._limits
        if len(frames) >= limits.max_transaction_frames:
            raise StompSessionError(
                f"more than {limits.max_transaction_frames} frames in transaction {tx!r}", cause=LIMIT
            )
        if self.bytes + size > limits.max_transaction_bytes:
            raise StompSessionError(
                f"open transactions would hold more than {limits.max_transaction_bytes} bytes", cause=LIMIT
            )

    def hold(self, tx: str, frame: Frame, size: int) -> None:
        """Keep a frame :meth:`check_room` and the session have accepted."""
        self._open[tx].append((frame, size))
        self.bytes += size

    def clear(self) -> None:
        """The session ends: open transactions abort."""
        self._open.clear()
        self.bytes = 0
