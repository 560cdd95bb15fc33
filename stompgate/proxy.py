"""Application destinations answered by a backend in any language, over HTTP.

Centrifugo's RPC proxy, for STOMP: a SEND to (or SUBSCRIBE to) an application
destination that no Python handler takes is POSTed as JSON to ``proxy.url``::

    {"kind": "send", "destination": "/app/chat/lobby", "path": "/chat/lobby",
     "user": "alice", "roles": ["admin"], "session": "5f0c...",
     "headers": {"content-type": "application/json"},
     "body": "{\\"msg\\": \\"hi\\"}", "encoding": "text"}

(``encoding`` is ``base64`` for a body that is not UTF-8; ``kind`` is
``subscribe`` for a SUBSCRIBE, with ``subscription``.) The backend answers 200
with a JSON object::

    {"replies": [
        {"destination": "/topic/rooms/lobby", "payload": {...}},           # to a broker destination
        {"user": "bob", "destination": "/queue/inbox", "payload": "..."},  # to a user's sessions
        {"sender": true, "destination": "/queue/reply", "payload": ...,    # to the sender's user,
         "broadcast": false}                                                # or only this session
     ]}

or ``{"error": "text"}`` (the sender gets an ERROR with that text, and the
session closes). For a SUBSCRIBE, ``{"reply": payload}`` is the one MESSAGE on
that subscription. Every request is signed: ``X-Stompgate-Timestamp`` (Unix
seconds) and ``X-Stompgate-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<body>" with proxy.secret>``, so the backend can trust the user it
names. A call is never retried (a SEND is not idempotent); a backend that is
slow (``timeout_s``), down, answers another status or garbage gets the sender a
clear ERROR naming that, and the node goes on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from .application import CallRunner
from .broker.application import AppCall
from .broker.authz import SUBSCRIBE
from .broker.destinations import DestinationError
from .broker.names import destination_problem, header_problem, is_reserved, user_name_problem
from .convert import to_body
from .logs import RateLimitedLog

if TYPE_CHECKING:
    from .broker import Broker
    from .broker.message import Message

log = logging.getLogger(__name__)
_failures = RateLimitedLog(log, "application backend failures", burst=20, interval_s=60.0)


class BackendError(Exception):
    """What went wrong with the backend, as the sender is told."""


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class ProxyApplication:
    """The node's application side when ``proxy.url`` is set (behind any Python handlers)."""

    def __init__(
        self,
        broker: Broker,
        url: str,
        secret: str,
        runner: CallRunner,
        *,
        timeout_s: float = 5.0,
        max_response_bytes: int = 1024 * 1024,
    ) -> None:
        self.broker = broker
        self.url = url
        self.secret = secret.encode("utf-8")
        self.runner = runner
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self._http: aiohttp.ClientSession | None = None

    def handle(self, call: AppCall) -> None:
        self.runner.run(call, lambda: self._run(call))

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()

    # ------------------------------------------------------------- a call

    async def _run(self, call: AppCall) -> None:
        try:
            answer = await self.runner.bounded(self._post(self._request(call)), self.timeout_s)
            self._apply(call, answer)
        except TimeoutError:
            self._fail(call, f"the application backend did not answer within {self.timeout_s:g} s")
        except BackendError as exc:
            self._fail(call, str(exc))
        except aiohttp.ClientError as exc:
            self._fail(call, f"the application backend is unreachable ({type(exc).__name__})")
        else:
            call.finish(None)

    def _fail(self, call: AppCall, text: str) -> None:
        _failures.log("%s %s: %s", call.frame, call.destination, text, key=self.url)
        call.finish(text)

    def _request(self, call: AppCall) -> bytes:
        try:
            body, encoding = call.body.decode("utf-8"), "text"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(call.body).decode("ascii"), "base64"
        request: dict[str, Any] = {
            "kind": call.frame.lower(),
            "destination": call.destination,
            "path": call.path,
            "user": call.user,
            "roles": sorted(call.principal.roles),
            "session": call.session_id,
            "headers": call.headers,
            "body": body,
            "encoding": encoding,
        }
        if call.subscription is not None:
            request["subscription"] = call.subscription
        return orjson.dumps(request)

    async def _post(self, body: bytes) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Stompgate-Timestamp": str(stamp),
            "X-Stompgate-Signature": sign(self.secret, body, stamp),
        }
        async with self._http.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                raise BackendError(f"the application backend answered HTTP {resp.status}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > self.max_response_bytes:
                    limit = self.max_response_bytes
                    raise BackendError(f"the application backend's answer is larger than {limit} bytes")
                chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BackendError("the application backend answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise BackendError("the application backend's answer is not a JSON object")
        return answer

    # ------------------------------------------------------------ answers

    def _apply(self, call: AppCall, answer: dict[str, Any]) -> None:
        """Check the whole answer first, then send: a bad reply sends none of them."""
        error = answer.get("error")
        if error is not None:
            raise BackendError(str(error)[:500] if isinstance(error, str) else "the application refused it")
        if call.frame == SUBSCRIBE:
            if "reply" in answer:
                headers: dict[str, str] = {}
                body = to_body(answer["reply"], headers)
                call.reply(self.broker.message(call.destination, headers, body, server_sent=True))
            return
        replies = answer.get("replies", [])
        if not isinstance(replies, list):
            raise BackendError("the application backend's 'replies' is not a list")
        sends = [self._reply(call, reply, i) for i, reply in enumerate(replies)]
        for message, only_session in sends:
            if only_session:
                self.broker.deliver_to_session(call.session_id, message)
            else:
                self.broker.publish(message)

    def _reply(self, call: AppCall, reply: Any, i: int) -> tuple[Message, bool]:
        where = f"the application backend's replies[{i}]"
        if not isinstance(reply, dict):
            raise BackendError(f"{where} is not an object")
        destination = reply.get("destination")
        if not isinstance(destination, str) or not destination:
            raise BackendError(f"{where} has no destination")
        problem = destination_problem(destination, self.broker.limits.max_destination_length)
        if problem is not None:
            raise BackendError(f"{where}: {problem}")
        raw_headers = reply.get("headers", {})
        if not isinstance(raw_headers, dict):
            raise BackendError(f"{where}: headers must be an object")
        headers: dict[str, str] = {}
        for name, value in raw_headers.items():
            if not isinstance(value, str):
                raise BackendError(f"{where}: header values are strings")
            problem = header_problem(name, value) or (
                "a header the broker sets" if is_reserved(name, self.broker.reserved) else None
            )
            if problem is not None:
                raise BackendError(f"{where}: header {name!r}: {problem}")
            headers[name] = value
        body = to_body(reply.get("payload", ""), headers)
        rules = self.broker.rules
        user: str | None = None
        only_session = False
        if reply.get("sender") is True:
            user, only_session = call.user, reply.get("broadcast", True) is False
            if user is None:
                raise BackendError(f"{where}: the sender has no user")
        elif "user" in reply:
            user = reply["user"]
            if not isinstance(user, str) or (problem := user_name_problem(user)) is not None:
                raise BackendError(f"{where}: user: {problem or 'not a string'}")
        if user is not None:
            try:
                destination = rules.user_destination(destination)
            except DestinationError as exc:
                raise BackendError(f"{where}: {exc}") from None
        elif not rules.is_broker(destination):
            raise BackendError(f"{where}: {destination!r} is not under a broker prefix")
        return self.broker.message(destination, headers, body, user, server_sent=True), only_session
