"""RECEIPTs in order: each waits behind the earlier ones that are not ready yet.

A SEND's RECEIPT means the cluster has the message, so it waits for the bus; a
SUBSCRIBE's to a user destination means the subscription is live cluster-wide,
so it waits for the bus to subscribe; every later RECEIPT waits behind them, as
STOMP's order requires. DISCONNECT's receipt closes the session once written.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class ReceiptSlot:
    """A place in the order of receipts; ``receipt`` None keeps a place without writing one."""

    __slots__ = ("receipt", "ready", "disconnect")

    def __init__(self, receipt: str | None, ready: bool, disconnect: bool = False) -> None:
        self.receipt = receipt
        self.ready = ready
        self.disconnect = disconnect


class Receipts:
    """Made when a session first needs one: an empty deque is ~600 bytes per idle session."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: deque[ReceiptSlot] = deque()

    def wait(self, slot: ReceiptSlot) -> None:
        self._slots.append(slot)

    def ready(self) -> Iterator[ReceiptSlot]:
        """Take the slots from the front that are ready, in order."""
        slots = self._slots
        while slots and slots[0].ready:
            yield slots.popleft()

    def __bool__(self) -> bool:
        return bool(self._slots)
