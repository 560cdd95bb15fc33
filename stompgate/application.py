"""Python handlers for application destinations, in the spirit of Spring's ``@MessageMapping``.

An extension registers handlers on destination templates (``/chat/{room}``)
through its ``NodeContext``::

    def setup(node):
        @node.message_mapping("/hello")                 # SEND /app/hello
        async def hello(msg):
            return {"content": f"Hello, {msg.payload['name']}!"}   # -> /topic/hello

        @node.message_mapping("/chat/{room}", send_to="/topic/rooms/{room}")
        def chat(msg): ...                               # a plain function runs in a thread

        @node.subscribe_mapping("/rooms")               # SUBSCRIBE /app/rooms: one reply
        async def rooms(msg): return ["lobby", "games"]

Where a return value goes is Spring's default unless the mapping says
otherwise: the first broker prefix plus the same path (``/topic/hello``), or
``send_to`` (a destination, template variables filled in), or ``send_to_user``
(the sender's user destination: every session of the user, or with
``broadcast=False`` only the session that sent). None sends nothing.

A handler that raises :class:`MessagingError` has its message sent to the
sender's session on ``/user/queue/errors`` (Spring's ``@MessageExceptionHandler``
with ``@SendToUser("/queue/errors")``); any other exception is logged and the
sender gets "internal error" there. With ``errors="frame"`` either becomes an
ERROR frame and the session closes. A SEND no handler takes is an ERROR.

Calls of one session run one after the other, in the order sent; all sessions'
calls together are bounded (``concurrency``), one user's to a share of that
(:class:`CallRunner`), each by ``timeout_s``; a call
counts against its session's in-flight share until it is done, so a client
sending faster than its handlers finish is paused, not queued without limit.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .broker.application import AppCall, Application
from .broker.authz import SUBSCRIBE, Principal
from .buckets import CALLS
from .convert import to_body

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger(__name__)

Handler = Callable[["InboundMessage"], Any]


class MessagingError(Exception):
    """Raised by a handler: its text is what the sender is told."""


@dataclass(slots=True)
class InboundMessage:
    """What a handler gets: the frame, who sent it, and the template's variables."""

    destination: str  # as the client wrote it: /app/chat/lobby
    path: str  # without the application prefix: /chat/lobby
    variables: dict[str, str]  # {"room": "lobby"} for /chat/{room}
    headers: dict[str, str]
    body: bytes
    principal: Principal
    session_id: str

    @property
    def user(self) -> str | None:
        return self.principal.name

    @property
    def payload(self) -> Any:
        """The body decoded by its content type: JSON -> objects, text -> str, else bytes."""
        kind = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json" or kind.endswith("+json"):
            try:
                return orjson.loads(self.body)
            except orjson.JSONDecodeError as exc:
                raise MessagingError(f"the body is not valid JSON: {exc}") from None
        if kind.startswith("text/") or not kind:
            try:
                return self.body.decode("utf-8")
            except UnicodeDecodeError:
                if kind:
                    raise MessagingError("the body is not valid UTF-8 text") from None
        return self.body


@dataclass
class Mapping:
    """One registered handler."""

    template: str
    handler: Handler
    frame: str  # SEND (message_mapping) or SUBSCRIBE (subscribe_mapping)
    send_to: str | None = None
    send_to_user: str | None = None
    broadcast: bool = True
    errors: Literal["message", "frame"] = "message"
    _segments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.template.startswith("/"):
            raise ValueError(f"a destination template starts with '/': {self.template!r}")
        self._segments = self.template.split("/")
        if self.send_to is not None and self.send_to_user is not None:
            raise ValueError("send_to and send_to_user: one or the other")

    @property
    def literals(self) -> int:
        return sum(1 for s in self._segments if not _is_variable(s))

    def match(self, path: str) -> dict[str, str] | None:
        parts = path.split("/")
        if len(parts) != len(self._segments):
            return None
        variables: dict[str, str] = {}
        for want, got in zip(self._segments, parts):
            if _is_variable(want):
                if not got:
                    return None
                variables[want[1:-1]] = got
            elif want != got:
                return None
        return variables


def _is_variable(segment: str) -> bool:
    return len(segment) > 2 and segment[0] == "{" and segment[-1] == "}"


class _Share:
    """One owner's part of the slots: its own bound, and who is using or awaiting it."""

    __slots__ = ("slots", "users")

    def __init__(self, size: int) -> None:
        self.slots = asyncio.Semaphore(size)
        self.users = 0


class CallRunner:
    """Runs application calls off the session: one session's in order, all bounded,
    every task kept until done. What a call does is the ``work`` given to :meth:`run`.

    Each session runs one call at a time, so a user with many sessions could
    otherwise hold every shared slot and make everyone else's calls wait for
    its slow ones: a user holds at most ``per_user`` slots, and its other calls
    wait in a queue of its own (an anonymous session is its own owner).
    """

    def __init__(self, concurrency: int = 256, per_user: int | None = None) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self.per_user = per_user if per_user is not None else max(1, concurrency // 8)
        self._shares: dict[str, _Share] = {}  # owners with a call running or waiting
        self._tails: dict[str, asyncio.Task[None]] = {}  # the last call of each session
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, call: AppCall, work: Callable[[], Awaitable[None]]) -> None:
        previous = self._tails.get(call.session_id)
        task = asyncio.get_running_loop().create_task(self._ordered(work, previous))
        self._tails[call.session_id] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(call.session_id, done))

    async def _ordered(
        self, work: Callable[[], Awaitable[None]], previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # one session's calls in the order they were sent
        await work()

    def _done(self, session_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(session_id) is task:
            del self._tails[session_id]

    @staticmethod
    def owner(call: AppCall) -> str:
        """Whose share a call uses: its user's, or an anonymous session's own."""
        name = call.principal.name
        return f"user:{name}" if name is not None else f"session:{call.session_id}"

    async def bounded(self, awaitable: Awaitable[Any], timeout_s: float | None, owner: str) -> Any:
        """``awaitable`` within ``owner``'s share, the concurrency bound and ``timeout_s``
        (None: its own)."""
        share = self._shares.get(owner)
        if share is None:
            share = self._shares[owner] = _Share(self.per_user)
        share.users += 1
        try:
            async with share.slots, self._slots:
                if timeout_s is None:
                    return await awaitable
                return await asyncio.wait_for(awaitable, timeout_s)
        finally:
            share.users -= 1
            if not share.users:
                del self._shares[owner]

    async def stop(self, timeout: float = 2.0) -> None:
        """At shutdown: let calls under way finish for a moment, then cancel the rest."""
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()


class PythonApplication:
    """The node's :class:`~.broker.application.Application`: Python handlers, run off the
    session; a call no handler takes goes to ``fallback`` (the backend proxy) when there is one."""

    def __init__(
        self,
        broker: Broker,
        *,
        concurrency: int = 256,
        timeout_s: float = 30.0,
        fallback: Application | None = None,
        runner: CallRunner | None = None,
    ) -> None:
        self.broker = broker
        self.mappings: list[Mapping] = []
        self.timeout_s = timeout_s
        self.error_destination = "/queue/errors"
        self.fallback = fallback
        # Shared with the proxy, so that one session's calls keep their order across both.
        self.runner = runner or CallRunner(concurrency)

    def add(self, mapping: Mapping) -> None:
        self.mappings.append(mapping)
        # The most literal segments first (Spring picks the most specific match).
        self.mappings.sort(key=lambda m: -m.literals)

    def find(self, call: AppCall) -> tuple[Mapping, dict[str, str]] | None:
        for mapping in self.mappings:
            if mapping.frame == call.frame:
                variables = mapping.match(call.path)
                if variables is not None:
                    return mapping, variables
        return None

    # ----------------------------------------------------------- the seam

    def handle(self, call: AppCall) -> None:
        found = self.find(call)
        if found is None:
            if self.fallback is not None:
                self.fallback.handle(call)
            else:
                call.finish(f"no handler for {call.frame} {call.destination}")
            return
        mapping, variables = found
        self.runner.run(call, lambda: self._run(call, mapping, variables))

    async def stop(self) -> None:
        await self.runner.stop()

    # ------------------------------------------------------------ a call

    async def _run(self, call: AppCall, mapping: Mapping, variables: dict[str, str]) -> None:
        message = InboundMessage(
            call.destination, call.path, variables, call.headers, call.body, call.principal, call.session_id
        )
        started = time.perf_counter()
        outcome = "ok"
        try:
            try:
                result = await self.runner.bounded(
                    self._invoke(mapping.handler, message), self.timeout_s, self.runner.owner(call)
                )
            except Exception as exc:
                outcome = "timeout" if isinstance(exc, TimeoutError) else "error"
                raise
            finally:
                CALLS.observe(("handler", outcome), time.perf_counter() - started)
            self._send_result(call, mapping, variables, result)
        except Exception as exc:  # noqa: BLE001 - a handler's failure is the sender's error, never the node's
            self._failed(call, mapping, exc)
            return
        call.finish(None)

    @staticmethod
    async def _invoke(handler: Handler, message: InboundMessage) -> Any:
        if inspect.iscoroutinefunction(handler):
            return await handler(message)
        result = await asyncio.to_thread(handler, message)  # a plain function must not hold the loop
        if isinstance(result, Awaitable):
            return await result
        return result

    def _send_result(self, call: AppCall, mapping: Mapping, variables: dict[str, str], result: Any) -> None:
        if result is None:
            return
        headers: dict[str, str] = {}
        body = to_body(result, headers)
        broker = self.broker
        if call.frame == SUBSCRIBE:
            call.reply(broker.message(call.destination, headers, body, server_sent=True))
            return
        if mapping.send_to_user is not None:
            if call.user is None:
                raise MessagingError("the session has no user to reply to")
            destination = broker.rules.user_destination(mapping.send_to_user.format_map(variables))
            message = broker.message(destination, headers, body, call.user, server_sent=True)
            if mapping.broadcast:
                broker.publish(message)
            else:
                broker.deliver_to_session(call.session_id, message)
            return
        if mapping.send_to is not None:
            destination = mapping.send_to.format_map(variables)
        else:
            destination = broker.rules.broker_prefixes[0] + call.path
        if not broker.rules.is_broker(destination):
            raise MessagingError(f"the reply's destination {destination!r} is not a broker destination")
        broker.publish(broker.message(destination, headers, body, server_sent=True))

    def _failed(self, call: AppCall, mapping: Mapping, exc: Exception) -> None:
        if isinstance(exc, MessagingError):
            text = str(exc)
        elif isinstance(exc, TimeoutError):
            text = f"the handler took longer than {self.timeout_s:g} s"
            log.warning("handler for %s %s: %s", call.frame, call.destination, text)
        else:
            text = "internal error in the handler"
            log.exception("handler for %s %s failed", call.frame, call.destination)
        if mapping.errors == "frame" or call.user is None:
            call.finish(text)
            return
        error = {"error": text, "destination": call.destination}
        headers: dict[str, str] = {}
        body = to_body(error, headers)
        broker = self.broker
        message = broker.message(self.error_destination, headers, body, call.user, server_sent=True)
        broker.deliver_to_session(call.session_id, message)
        call.finish(None)


def mapping_decorator(
    application: PythonApplication, frame: str, template: str, **options: Any
) -> Callable[[Handler], Handler]:
    """``@node.message_mapping(...)``: register and give the function back unchanged."""

    def register(handler: Handler) -> Handler:
        application.add(Mapping(template, handler, frame, **options))
        return handler

    return register
