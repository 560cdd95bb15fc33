"""Messages a session has sent on ``client`` and ``client-individual`` subscriptions
and the client has not acknowledged yet.

``client`` acks are cumulative within their subscription (everything up to the
message), ``client-individual`` ones take one message; NACK settles the same way
(the simple broker, as Spring's, redelivers nothing). The count is bounded by
``max_unacked``: a client that never acks is closed, not followed forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import StompSessionError

if TYPE_CHECKING:
    from .subscriptions import Subscription


class Acks:
    """Made at a session's first subscription that is not ``ack:auto``."""

    __slots__ = ("unacked",)

    def __init__(self) -> None:
        self.unacked: dict[str, Subscription] = {}  # message id -> its subscription

    def track(self, sub: Subscription, mid: str) -> None:
        sub.pending[mid] = None
        self.unacked[mid] = sub

    def settle(self, mid: str) -> bool:
        """ACK or NACK of ``mid``; False when it is not pending (settled already, or never sent)."""
        sub = self.unacked.get(mid)
        if sub is None:
            return False
        if sub.ack == "client":
            # cumulative: everything up to this message in that subscription
            for pending in list(sub.pending):
                del sub.pending[pending]
                del self.unacked[pending]
                if pending == mid:
                    break
        else:
            del sub.pending[mid]
            del self.unacked[mid]
        return True

    def forget(self, sub: Subscription) -> None:
        """``sub`` is gone: its messages need no ack any more."""
        for mid in sub.pending:
            self.unacked.pop(mid, None)
        sub.pending.clear()


def check_issued(mid: str, prefix: str, next_mid: int, command: str) -> None:
    """ERROR for an id this session never sent (ones settled already are fine)."""
    number = mid[len(prefix) :] if mid.startswith(prefix) else ""
    issued = number.isascii() and number.isdigit() and not number.startswith("0")
    if not issued or int(number) >= next_mid:
        raise StompSessionError(f"{command} for unknown message {mid!r}")
