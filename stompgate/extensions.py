"""Extensions: an application's own HTTP endpoints, running inside the node.

A Spring application keeps controllers beside its broker (the seed's
``/wsTemplate/sendToUser``). Here such endpoints live in a Python file named in
``server.extensions``; its ``setup(node)`` gets a :class:`NodeContext` and adds
aiohttp routes. Through it they send with the node's broker (to its local
sessions and to the cluster) and authenticate requests as CONNECT frames are.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .convert import to_body
from .http.api import publish, user_of

if TYPE_CHECKING:
    from .broker import Broker
    from .broker.message import Message


class ExtensionError(Exception):
    pass


class NodeContext:
    """What an extension's ``setup`` receives: the aiohttp app and a small sending API."""

    def __init__(self, app: web.Application, broker: Broker, bus: Any, node_id: str) -> None:
        self.app = app
        self.broker = broker
        self.bus = bus
        self.node_id = node_id

    def user_of(self, request: web.Request) -> str:
        """The request's user, by the node's authenticator; raises ``AuthError``."""
        return user_of(self.broker, request)

    async def convert_and_send_to_user(
        self, user: str, destination: str, payload: Any, headers: dict[str, str] | None = None
    ) -> int:
        """Like Spring's ``convertAndSendToUser``: every session of ``user``, on any node, or stored."""
        return await self._send(destination, payload, headers, user)

    async def convert_and_send(self, destination: str, payload: Any, headers: dict[str, str] | None = None) -> int:
        return await self._send(destination, payload, headers, None)

    async def _send(self, destination: str, payload: Any, headers: dict[str, str] | None, user: str | None) -> int:
        rules = self.broker.rules
        if user is not None and destination.startswith(rules.user_prefix):
            destination = destination[len(rules.user_root) :]
        if not rules.is_broker(destination):
            raise ValueError(f"destination {destination!r} must start with a broker prefix")
        hdrs = dict(headers or {})
        body = to_body(payload, hdrs)
        delivered, error = await publish(self.broker, self.broker.message(destination, hdrs, body, user))
        if error is not None:
            raise RuntimeError(f"message not accepted: {error}")
        return delivered

    async def pull_unread(self, user: str, destination: str) -> list[Message]:
        """Take the messages stored for ``user`` at ``destination`` (they are gone afterwards)."""
        rules = self.broker.rules
        if destination.startswith(rules.user_prefix):
            destination = destination[len(rules.user_root) :]
        if not rules.is_broker(destination):
            raise ValueError(f"destination {destination!r} must start with a broker prefix")
        return list(await self.bus.pull(user, destination))


def load_extension(path: str, node: NodeContext) -> None:
    """Import the file at ``path`` and call its ``setup(node)``."""
    name = f"stompgate_extension_{Path(path).stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ExtensionError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ExtensionError(f"{path}: import failed: {exc!r}") from exc
    setup = getattr(module, "setup", None)
    if not callable(setup):
        raise ExtensionError(f"{path}: defines no setup(node) function")
    try:
        setup(node)
    except Exception as exc:
        raise ExtensionError(f"{path}: setup(node) failed: {exc!r}") from exc
