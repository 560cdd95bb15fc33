"""Application destinations (Spring's ``setApplicationDestinationPrefixes``): the seam.

A SEND to an application prefix (``/app/hello``) goes to the application, never
to the broker; a SUBSCRIBE to one gets a single reply from the application
(Spring's ``@SubscribeMapping``) and is not kept. The session builds an
:class:`AppCall` and hands it to the node's :class:`Application`; the
application answers through the call (:meth:`AppCall.finish`,
:meth:`AppCall.reply`), from the loop, whenever its handler is done. Nothing
here runs handlers: that is the adapter's business (``stompgate/application.py``
for Python handlers), so this stays free of I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .authz import Principal

if TYPE_CHECKING:
    from .message import Message


class AppCall:
    """One SEND to, or SUBSCRIBE to, an application destination."""

    __slots__ = (
        "frame", "destination", "path", "headers", "body", "principal", "session_id", "subscription",
        "size", "_finish", "_reply",
    )  # fmt: skip

    def __init__(
        self,
        frame: str,
        destination: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        principal: Principal,
        session_id: str,
        subscription: str | None,
        size: int,
        finish: Callable[[str | None], None],
        reply: Callable[[Message], None],
    ) -> None:
        self.frame = frame  # SEND or SUBSCRIBE
        self.destination = destination  # as the client wrote it: /app/hello
        self.path = path  # without the application prefix: /hello
        self.headers = headers  # the frame's own headers, reserved ones left out
        self.body = body
        self.principal = principal
        self.session_id = session_id
        self.subscription = subscription  # a SUBSCRIBE's id
        self.size = size  # what it counts against the session's in-flight share
        self._finish = finish
        self._reply = reply

    @property
    def user(self) -> str | None:
        return self.principal.name

    def reply(self, message: Message) -> None:
        """To the SUBSCRIBE's subscription only, as one MESSAGE (``@SubscribeMapping``)."""
        self._reply(message)

    def finish(self, error: str | None = None) -> None:
        """The application is done with the call: its RECEIPT, or an ERROR (``error``) that
        closes the session. Exactly once."""
        finish, self._finish = self._finish, _done_twice
        finish(error)


def _done_twice(error: str | None) -> None:
    raise RuntimeError("AppCall.finish called twice")


class Application(Protocol):
    """What a node's application side does with calls; ``handle`` must not block."""

    def handle(self, call: AppCall) -> None: ...


class NoApplication:
    """No application prefixes configured: nothing is ever routed here."""

    def handle(self, call: AppCall) -> None:
        call.finish(f"no application handles {call.destination}")
