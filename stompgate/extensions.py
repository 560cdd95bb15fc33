"""Extensions: an application's own HTTP endpoints, running inside the node.

A Spring application keeps controllers beside its broker (the seed's
``/wsTemplate/sendToUser``). Here such endpoints live in a Python file named in
``server.extensions``; its ``setup(node)`` gets a :class:`NodeContext` and adds
aiohttp routes. Through it they send with the node's broker (to its local
sessions and to the cluster), authenticate requests as CONNECT frames are, and
read JSON bodies as the node's own API does.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from .application import Handler, MessagingError, PythonApplication, mapping_decorator
from .broker.authz import SEND, SUBSCRIBE
from .broker.destinations import DestinationError
from .broker.names import destination_problem, header_problem, is_reserved, user_name_problem
from .convert import to_body
from .http.api import BadRequest, publish, read_json_object, user_of

if TYPE_CHECKING:
    from .broker import Broker
    from .broker.message import Message
    from .bus.contract import ClusterBus


__all__ = ["BadRequest", "ExtensionError", "MessagingError", "NodeContext", "load_extension"]


class ExtensionError(Exception):
    pass


class NodeContext:
    """What an extension's ``setup`` receives: the aiohttp app, a small sending API, and
    the registration of handlers for application destinations (``stompgate/application.py``)."""

    def __init__(
        self,
        app: web.Application,
        broker: Broker,
        bus: ClusterBus,
        node_id: str,
        body_timeout_s: float = 15.0,
        application: PythonApplication | None = None,
    ) -> None:
        self.app = app
        self.broker = broker
        self.bus = bus
        self.node_id = node_id
        self.body_timeout_s = body_timeout_s
        self.application = application

    def message_mapping(
        self,
        template: str,
        *,
        send_to: str | None = None,
        send_to_user: str | None = None,
        broadcast: bool = True,
        errors: Literal["message", "frame"] = "message",
    ) -> Callable[[Handler], Handler]:
        """Decorate a handler for SENDs to ``<application prefix><template>`` (Spring's
        ``@MessageMapping``, with ``@SendTo`` / ``@SendToUser`` as options)."""
        options = {"send_to": send_to, "send_to_user": send_to_user, "broadcast": broadcast, "errors": errors}
        return mapping_decorator(self._application(), SEND, template, **options)

    def subscribe_mapping(
        self, template: str, *, errors: Literal["message", "frame"] = "message"
    ) -> Callable[[Handler], Handler]:
        """Decorate a handler whose return value is the one reply to a SUBSCRIBE to
        ``<application prefix><template>`` (Spring's ``@SubscribeMapping``)."""
        return mapping_decorator(self._application(), SUBSCRIBE, template, errors=errors)

    def _application(self) -> PythonApplication:
        if self.application is None:
            raise ExtensionError(
                "handlers need destinations.application_prefixes in the config (e.g. [/app])"
            )
        return self.application

    def user_of(self, request: web.Request) -> str:
        """The request's user, by the node's authenticator; raises ``AuthError``."""
        return user_of(self.broker, request)

    async def json_body(self, request: web.Request) -> dict[str, Any]:
        """The body as a JSON object; raises ``BadRequest`` (``.status`` 400, 408, 413 or 415, and why).

        Only ``Content-Type: application/json`` is read: a page on another site
        cannot send that without a CORS preflight (which the node does not
        grant), so an endpoint that trusts a login cookie cannot be called
        cross-site by a form. Hostile bodies (deep nesting, lone surrogates,
        too large) are refused, never a 500.
        """
        return await read_json_object(request, self.body_timeout_s)

    async def convert_and_send_to_user(
        self, user: str, destination: str, payload: Any, headers: dict[str, str] | None = None
    ) -> int:
        """Like Spring's ``convertAndSendToUser``: every session of ``user``, on any node, or stored."""
        return await self._send(destination, payload, headers, user)

    async def convert_and_send(
        self, destination: str, payload: Any, headers: dict[str, str] | None = None
    ) -> int:
        return await self._send(destination, payload, headers, None)

    async def _send(
        self, destination: str, payload: Any, headers: dict[str, str] | None, user: str | None
    ) -> int:
        rules = self.broker.rules
        if user is not None:
            destination = self._user_destination(destination)
        self._check(destination, user)
        if not rules.is_broker(destination):
            raise ValueError(
                f"destination {destination!r} must start with a broker prefix "
                f"({', '.join(rules.broker_prefixes)})"
            )
        hdrs = dict(headers or {})
        for name, value in hdrs.items():
            problem = header_problem(name, value) or (
                f"header {name!r} is set by the broker" if is_reserved(name, self.broker.reserved) else None
            )
            if problem is not None:
                raise ValueError(problem)
        body = to_body(payload, hdrs)
        message = self.broker.message(destination, hdrs, body, user, server_sent=True)
        delivered, error = await publish(self.broker, message)
        if error is not None:
            raise RuntimeError(f"message not accepted: {error}")
        return delivered

    async def pull_unread(self, user: str, destination: str) -> list[Message]:
        """Take the messages stored for ``user`` at ``destination`` (they are gone afterwards)."""
        destination = self._user_destination(destination)
        self._check(destination, user)
        return list(await self.bus.pull(user, destination))

    def _user_destination(self, destination: str) -> str:
        try:
            return self.broker.rules.user_destination(destination)
        except DestinationError as exc:
            raise ValueError(str(exc)) from None

    def _check(self, destination: str, user: str | None) -> None:
        """An extension passes on what its requests carried: the same checks as a STOMP frame's."""
        problem = destination_problem(destination, self.broker.limits.max_destination_length)
        problem = problem or (user_name_problem(user) if user is not None else None)
        if problem is not None:
            raise ValueError(problem)


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
