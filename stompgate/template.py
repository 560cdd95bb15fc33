"""MessagingTemplate: Spring's SimpMessagingTemplate for Python backends.

Django views, FastAPI handlers and Celery tasks publish straight into a
stompgate cluster through its Redis, with no HTTP hop::

    from stompgate.template import MessagingTemplate

    template = MessagingTemplate.from_config("cluster.yaml")   # or MessagingTemplate("redis://...")
    template.convert_and_send("/topic/news", {"title": "hello"})
    template.convert_and_send_to_user("bob", "/queue/reply", "hi bob")

:class:`AsyncMessagingTemplate` has the same methods as coroutines. Payloads:
``str`` is sent as UTF-8 text, ``bytes`` as ``application/octet-stream``,
anything else as JSON. A message for a user with no subscriber anywhere is
stored and replayed when the user subscribes, exactly as from a node, under the
same limits (``offline.*`` of the config file, or the keyword arguments): a
message the store refuses raises :class:`MessageRefused` (``.code``: ``TOOBIG``,
``STOREFULL``, ``OOM``), and was neither delivered nor stored.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

from .broker.destinations import DestinationError, DestinationRules
from .broker.message import Message
from .broker.names import SENDER_HEADER, SERVER_SENT, is_reserved, reserved_headers
from .bus.base import MessageRefused, OfflineLimits, encode, reply_text
from .bus.keys import PUBLISH_USER, Keys, publish_user_args
from .config import load_config
from .convert import to_body

ORIGIN = "template"  # never a node id, so every node delivers what the template sends

__all__ = ["AsyncMessagingTemplate", "MessageRefused", "MessagingTemplate", "OfflineLimits"]


class _Base:
    def __init__(
        self,
        redis_url: str | None = "redis://127.0.0.1:6379/0",
        *,
        cluster_nodes: list[str] | None = None,
        prefix: str = "stompgate",
        routing: str = "directed",
        broker_prefixes: list[str] | None = None,
        user_prefix: str = "/user/",
        max_messages: int = 1000,
        ttl_s: float = 7 * 24 * 3600,
        offline: OfflineLimits | None = None,
        sender_header: str = SENDER_HEADER,
    ) -> None:
        """``offline``: the store's limits (as a node's ``offline.*``); ``max_messages`` and
        ``ttl_s`` are the older spelling of two of them, used when ``offline`` is not given."""
        if routing not in ("directed", "broadcast"):
            raise ValueError(f"routing must be 'directed' or 'broadcast', got {routing!r}")
        self.keys = Keys(prefix)
        self.directed = routing == "directed"
        self.rules = DestinationRules(broker_prefixes or ["/topic", "/queue"], user_prefix)
        self.limits = offline or OfflineLimits(max_messages=max_messages, ttl_s=ttl_s)
        self._seeds = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in cluster_nodes or [])]
        self._url = redis_url
        self._reserved = reserved_headers(sender_header)

    @classmethod
    def from_config(cls, path: str) -> Any:
        """Use the Redis, routing, prefixes and offline limits of a node's config file."""
        config = load_config(path)
        if config.bus.type != "redis":
            raise ValueError(f"{path}: bus.type is {config.bus.type!r}; the template needs a Redis bus")
        r = config.bus.redis
        return cls(
            r.url,
            cluster_nodes=r.cluster_nodes or None,
            prefix=r.prefix,
            routing=config.bus.routing,
            broker_prefixes=config.destinations.broker_prefixes,
            user_prefix=config.destinations.user_prefix,
            offline=config.offline.limits(),
            sender_header=config.stomp.sender_header,
        )

    def _message(
        self, destination: str, payload: Any, headers: dict[str, Any] | None, user: str | None
    ) -> Message:
        h = {str(k): str(v) for k, v in (headers or {}).items()}
        for name in h:
            if is_reserved(name, self._reserved):
                raise ValueError(f"header {name!r} is set by the broker")
        body = to_body(payload, h)
        h[SERVER_SENT] = "true"  # as the broker marks what its API publishes
        if user is None:
            try:
                target = self.rules.send_target(destination)
            except DestinationError as exc:
                raise ValueError(str(exc)) from None
            destination, user = target.destination, target.user
        else:
            try:
                destination = self.rules.user_destination(destination)
            except DestinationError as exc:
                raise ValueError(str(exc)) from None
        return Message(destination, h, body, user=user)

    def _user_call(self, message: Message) -> tuple[list[str], list[Any]]:
        assert message.user is not None
        user, destination = message.user, message.destination
        keys = list(self.keys.publish_keys(user, destination))
        bcast = "" if self.directed else self.keys.user_broadcast(user)
        return keys, [encode(message, ORIGIN), *publish_user_args(self.limits, bcast, user, destination)]


def _refused(exc: redis.ResponseError) -> MessageRefused | None:
    """The store's refusal that an error reply of PUBLISH_USER is (None: another error)."""
    text = reply_text(exc)
    return MessageRefused(text) if text.split(" ", 1)[0] in ("TOOBIG", "STOREFULL", "OOM") else None


class MessagingTemplate(_Base):
    """Blocking template (Django, Celery, scripts)."""

    def __init__(self, redis_url: str | None = "redis://127.0.0.1:6379/0", **kw: Any) -> None:
        super().__init__(redis_url, **kw)
        if self._seeds:
            nodes = [ClusterNode(h, p) for h, p in self._seeds]  # type: ignore[no-untyped-call]
            self.redis: Any = RedisCluster(startup_nodes=nodes)
        else:
            self.redis = redis.Redis.from_url(self._url or "redis://127.0.0.1:6379/0")
        self._script = self.redis.register_script(PUBLISH_USER)

    def convert_and_send(self, destination: str, payload: Any, headers: dict[str, Any] | None = None) -> None:
        """Publish to a broker destination (``/topic/...``) or a ``/user/{name}/...`` one."""
        message = self._message(destination, payload, headers, None)
        if message.user is not None:
            self._send_user(message)
        else:
            self.redis.spublish(self.keys.topics, encode(message, ORIGIN))

    def convert_and_send_to_user(
        self, user: str, destination: str, payload: Any, headers: dict[str, Any] | None = None
    ) -> bool:
        """Send to every session of ``user`` subscribed to ``/user{destination}``.

        Returns True if a node had a subscriber, False if the message was stored.
        """
        return self._send_user(self._message(destination, payload, headers, user))

    def _send_user(self, message: Message) -> bool:
        keys, args = self._user_call(message)
        try:
            return int(self._script(keys=keys, args=args)) > 0
        except redis.ResponseError as exc:
            refused = _refused(exc)
            if refused is None:
                raise
            raise refused from None

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> MessagingTemplate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMessagingTemplate(_Base):
    """asyncio template (FastAPI, aiohttp)."""

    def __init__(self, redis_url: str | None = "redis://127.0.0.1:6379/0", **kw: Any) -> None:
        super().__init__(redis_url, **kw)
        if self._seeds:
            self.redis: Any = AsyncRedisCluster(
                startup_nodes=[AsyncClusterNode(h, p) for h, p in self._seeds]
            )
        else:
            self.redis = aioredis.Redis.from_url(self._url or "redis://127.0.0.1:6379/0")
        self._script = self.redis.register_script(PUBLISH_USER)

    async def convert_and_send(
        self, destination: str, payload: Any, headers: dict[str, Any] | None = None
    ) -> None:
        message = self._message(destination, payload, headers, None)
        if message.user is not None:
            await self._send_user(message)
        else:
            await self.redis.spublish(self.keys.topics, encode(message, ORIGIN))

    async def convert_and_send_to_user(
        self, user: str, destination: str, payload: Any, headers: dict[str, Any] | None = None
    ) -> bool:
        return await self._send_user(self._message(destination, payload, headers, user))

    async def _send_user(self, message: Message) -> bool:
        keys, args = self._user_call(message)
        try:
            return int(await self._script(keys=keys, args=args)) > 0
        except redis.ResponseError as exc:
            refused = _refused(exc)
            if refused is None:
                raise
            raise refused from None

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> AsyncMessagingTemplate:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
