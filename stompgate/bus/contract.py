"""The bus contract, both ways: what the node asks of a bus, and what a bus may ask of the broker.

``broker.Bus`` is the part the broker calls on every publish and subscription.
:class:`ClusterBus` adds what the rest of the node uses (lifecycle, health, the
cluster view of the HTTP API and extensions). :class:`BrokerPort` is the inbound
direction: the only broker calls a bus makes. ``MemoryBus`` and ``RedisBus`` are
checked against both by mypy (the ``_conforms`` functions at the end), and
``tests/cluster/test_bus_contract.py`` runs the same cases against each.

Guarantees every bus gives:

- ``publish``: ``done`` (when given) is called exactly once, with None once the
  cluster has the message or a reason when it was refused; ``sender.settle(size)``
  is called exactly once either way. A user message with no subscriber anywhere
  is stored (refusals: ``STOREFULL``, ``TOOBIG``, ``NODEFULL``, ``OOM`` at the
  start of the reason).
- The store keeps the newest ``max_messages`` per (user, destination), in order,
  for ``ttl_s``; ``user_subscribed``'s ``replay`` and ``pull`` hand them over once,
  oldest first, and remove them.
- ``user_subscribed``'s ``replay`` is called exactly once (with ``[]`` when nothing
  was stored), after live delivery to that subscription is assured.
- ``status()`` is JSON-ready; ``healthy`` says whether the node can reach its
  cluster; the cluster view answers for every live node or raises
  :class:`~.base.BusUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol

from ..broker.broker import Bus
from ..broker.destinations import DestinationRules
from ..broker.message import Message
from .admin import AdminCommand, AdminHandler, AdminReplies
from .base import BusStats

if TYPE_CHECKING:
    from ..broker import Broker
    from .memory import MemoryBus
    from .redis_bus import RedisBus


class ClusterBus(Bus, Protocol):
    """A bus as the node uses it: the broker's :class:`~stompgate.broker.broker.Bus` and more."""

    node_id: str
    stats: BusStats

    @property
    def healthy(self) -> bool:
        """The node can reach its cluster (``/ready``)."""
        ...

    def status(self) -> dict[str, Any]:
        """What ``/ready`` shows about the bus."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Hand over what is queued, leave the cluster; bounded in time."""
        ...

    async def release(self, users: Collection[str], timeout_s: float) -> bool:
        """Stop routing these users' messages to this node before their sessions close:
        what was routed here before is delivered to them, what comes after is stored or
        goes to their other nodes. Waits at most ``timeout_s``; True if all done in time."""
        ...

    async def settle(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` until nothing is in flight between this node and
        the cluster (fetches of stored messages, unsubscriptions, the outbox); True if
        so. A drain calls it before closing sessions and before the node exits."""
        ...

    def expire(self) -> None:
        """Periodic upkeep of what the bus keeps in this process (called every few seconds)."""
        ...

    async def pull(self, user: str, destination: str) -> list[Message]:
        """The user's stored messages for ``destination``, oldest first, removed from the store."""
        ...

    async def user_nodes(self, user: str, sessions_here: int) -> dict[str, int]:
        """Node id -> sessions of ``user`` there, for the nodes that have any."""
        ...

    async def online_users(self) -> list[str]:
        """Users with a session on any live node, sorted."""
        ...

    async def live_nodes(self) -> list[str]:
        """Ids of the nodes that are alive, sorted."""
        ...

    def serve_admin(self, handler: AdminHandler) -> None:
        """How this node answers the admin commands of any node (bus/admin.py)."""
        ...

    async def admin_call(self, command: AdminCommand, timeout_s: float = 2.0) -> AdminReplies:
        """Every live node's answer to ``command`` (this one's too), waiting at most ``timeout_s``
        for them; the nodes that did not answer in time are named in ``missing``."""
        ...


class BrokerPort(Protocol):
    """The broker as a bus sees it: the whole inbound direction of the contract."""

    @property
    def rules(self) -> DestinationRules: ...

    def dispatch(self, message: Message) -> int:
        """Deliver a message from the cluster to this node's subscribers; how many got it."""
        ...

    def begin_recovery(self, user: str, destination: str) -> Callable[[list[Message]], None] | None:
        """The bus lost its subscription for a while: hold live deliveries until the
        returned callable gets the messages stored meanwhile (None: nobody subscribed)."""
        ...

    def room(self) -> None:
        """The bus has drained: sessions paused for it may go on."""
        ...

    def session_counts(self) -> list[tuple[str, int]]:
        """Every user with sessions on this node, and how many (to write the registry again)."""
        ...


if TYPE_CHECKING:  # conformance, checked by mypy (a mismatch is a type error here)

    def _memory_conforms(bus: MemoryBus) -> ClusterBus:
        return bus

    def _redis_conforms(bus: RedisBus) -> ClusterBus:
        return bus

    def _broker_conforms(broker: Broker) -> BrokerPort:
        return broker
