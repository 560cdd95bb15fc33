"""Application destinations answered by a backend in any language, over HTTP.

Centrifugo's RPC proxy, for STOMP: a SEND to (or SUBSCRIBE to) an application
destination that no Python handler takes is POSTed as JSON to ``proxy.application_url``::

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

import asyncio
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
from .broker.auth import Credentials
from .broker.authz import SEND, SUBSCRIBE, Principal
from .broker.destinations import DestinationError
from .broker.gate import CheckDone, ConnectDone
from .broker.names import destination_problem, header_problem, is_reserved, user_name_problem
from .buckets import CALLS
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


class Backend:
    """One URL of the backend: signed JSON requests, bounded answers, errors named for the sender."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        name: str,
        max_response_bytes: int = 1024 * 1024,
        kind: str = "proxy-app",
    ) -> None:
        self.url = url
        self.secret = secret
        self.name = name  # "the application backend": how errors name it
        self.kind = kind  # its calls' label in stompgate_call_seconds: proxy-app, connect, subscribe, publish
        self.max_response_bytes = max_response_bytes
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def post(self, request: dict[str, Any]) -> dict[str, Any]:
        """The backend's answer to ``request``; raises :class:`BackendError` or ``aiohttp.ClientError``."""
        body = orjson.dumps(request)
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
                raise BackendError(f"{self.name} answered HTTP {resp.status}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise BackendError(f"{self.name}'s answer is larger than {self.max_response_bytes} bytes")
                chunks.append(chunk)
        try:
            answer = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            raise BackendError(f"{self.name} answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise BackendError(f"{self.name}'s answer is not a JSON object")
        return answer

    async def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """:meth:`post` within ``timeout_s``; every failure a :class:`BackendError` naming it."""
        started = time.perf_counter()
        outcome = "error"
        try:
            answer = await asyncio.wait_for(self.post(request), timeout_s)
            outcome = "ok"
            return answer
        except TimeoutError:
            outcome = "timeout"
            raise BackendError(f"{self.name} did not answer within {timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise BackendError(f"{self.name} is unreachable ({type(exc).__name__})") from None
        finally:
            CALLS.observe((self.kind, outcome), time.perf_counter() - started)


class ProxyApplication:
    """The node's application side when ``proxy.application_url`` is set (behind any Python handlers)."""

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
        self.backend = Backend(url, secret.encode("utf-8"), "the application backend", max_response_bytes)
        self.runner = runner
        self.timeout_s = timeout_s

    def handle(self, call: AppCall) -> None:
        self.runner.run(call, lambda: self._run(call))

    async def stop(self) -> None:
        await self.backend.close()

    # ------------------------------------------------------------- a call

    async def _run(self, call: AppCall) -> None:
        try:
            # The backend's own timeout, so that the error names it.
            answer = await self.runner.bounded(
                self.backend.call(self._request(call), self.timeout_s), None, self.runner.owner(call)
            )
            self._apply(call, answer)
        except BackendError as exc:
            self._fail(call, str(exc))
        except Exception:  # the call must end, or its session waits for it forever
            log.exception("application backend call %s %s", call.frame, call.destination)
            call.finish("internal error while calling the application backend")
        else:
            call.finish(None)

    def _fail(self, call: AppCall, text: str) -> None:
        _failures.log("%s %s: %s", call.frame, call.destination, text, key=self.backend.url)
        call.finish(text)

    def _request(self, call: AppCall) -> dict[str, Any]:
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
        return request

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


class ProxyGate:
    """The connect, subscribe and publish proxies: a :class:`~.broker.gate.Gate` over HTTP.

    connect: ``{"kind": "connect", "remote", "headers" (the CONNECT frame's),
    "handshake": {"headers", "query"}}`` (the WebSocket or SockJS request that
    opened the session: its cookies, for a backend whose login is a session
    cookie) -> ``{"user": "alice", "roles": [...], "expires_at": unix-seconds}``
    or ``{"error": "why"}`` (``"user": null`` is an anonymous session).

    subscribe / publish: ``{"kind", "destination", "user", "roles", "session"}``
    (publish adds ``headers`` and ``body``) -> ``{"allow": true}`` or
    ``{"allow": false, "reason": "why"}``; with ``"cache_s": n`` an allow is
    kept that many seconds for that session, frame and destination, so repeated
    SENDs to one room need one call. A backend that fails, in any way, denies.
    """

    def __init__(
        self,
        broker: Broker,
        secret: str,
        *,
        connect_url: str | None = None,
        subscribe_url: str | None = None,
        publish_url: str | None = None,
        timeout_s: float = 5.0,
        max_response_bytes: int = 1024 * 1024,
    ) -> None:
        key = secret.encode("utf-8")
        self.broker = broker
        self.timeout_s = timeout_s
        self._connect = None
        if connect_url:
            self._connect = Backend(connect_url, key, "the connect backend", max_response_bytes, "connect")
        self._backends: dict[str, Backend] = {}
        for frame, url, name in [(SUBSCRIBE, subscribe_url, "subscribe"), (SEND, publish_url, "publish")]:
            if url:
                self._backends[frame] = Backend(url, key, f"the {name} backend", max_response_bytes, name)
        self.connects = self._connect is not None
        self.checks = frozenset(self._backends)
        self._allowed: dict[tuple[str, str, str], float] = {}  # (session, frame, destination) -> until
        self._tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for backend in [self._connect, *self._backends.values()]:
            if backend is not None:
                await backend.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ connect

    def connect(self, creds: Credentials, remote: str, done: ConnectDone) -> None:
        self._spawn(self._connect_call(creds, remote, done))

    async def _connect_call(self, creds: Credentials, remote: str, done: ConnectDone) -> None:
        assert self._connect is not None
        request = {
            "kind": "connect",
            "remote": remote,
            "headers": creds.connect_headers,
            "handshake": {"headers": creds.handshake_headers, "query": creds.query},
        }
        try:
            answer = await self._connect.call(request, self.timeout_s)
            principal = self._principal(answer)
        except BackendError as exc:
            _failures.log("connect from %s: %s", remote, exc, key=self._connect.url)
            done(None, str(exc))
            return
        except Exception:  # the session waits for an answer: it must get one
            log.exception("connect backend call")
            done(None, "internal error while calling the connect backend")
            return
        done(principal, None)

    def _principal(self, answer: dict[str, Any]) -> Principal:
        error = answer.get("error")
        if error is not None:
            raise BackendError(error[:500] if isinstance(error, str) else "refused by the connect backend")
        if "user" not in answer:
            raise BackendError("the connect backend's answer has no user")
        user = answer["user"]
        if user is not None and (not isinstance(user, str) or user_name_problem(user) is not None):
            raise BackendError("the connect backend's user is not a user name")
        roles = answer.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise BackendError("the connect backend's roles are not a list of names")
        expires = answer.get("expires_at")
        if expires is not None and (not isinstance(expires, (int, float)) or isinstance(expires, bool)):
            raise BackendError("the connect backend's expires_at is not a number")
        extra = self.broker.roles.get(user, frozenset()) if user is not None else frozenset()
        return Principal(user, frozenset(roles) | extra, float(expires) if expires is not None else None)

    # --------------------------------------------------- subscribe, publish

    def check(
        self,
        frame: str,
        destination: str,
        principal: Principal,
        session_id: str,
        headers: dict[str, str],
        body: bytes,
        done: CheckDone,
    ) -> None:
        key = (session_id, frame, destination)
        until = self._allowed.get(key)
        if until is not None and until > time.monotonic():
            done(None)  # cached: the session does not even pause
            return
        request: dict[str, Any] = {
            "kind": "subscribe" if frame == SUBSCRIBE else "publish",
            "destination": destination,
            "user": principal.name,
            "roles": sorted(principal.roles),
            "session": session_id,
        }
        if frame == SEND:
            try:
                request["body"], request["encoding"] = body.decode("utf-8"), "text"
            except UnicodeDecodeError:
                request["body"], request["encoding"] = base64.b64encode(body).decode("ascii"), "base64"
            request["headers"] = headers
        self._spawn(self._check_call(self._backends[frame], key, request, done))

    async def _check_call(
        self, backend: Backend, key: tuple[str, str, str], request: dict[str, Any], done: CheckDone
    ) -> None:
        try:
            answer = await backend.call(request, self.timeout_s)
        except BackendError as exc:
            _failures.log("%s %s: %s", request["kind"], request["destination"], exc, key=backend.url)
            done(str(exc))
            return
        except Exception:  # the session waits for an answer: it must get one
            log.exception("%s backend call", request["kind"])
            done(f"internal error while calling {backend.name}")
            return
        if answer.get("allow") is not True:
            reason = answer.get("reason")
            done(reason[:500] if isinstance(reason, str) and reason else f"refused by {backend.name}")
            return
        cache_s = answer.get("cache_s")
        if isinstance(cache_s, (int, float)) and not isinstance(cache_s, bool) and cache_s > 0:
            if len(self._allowed) >= 10_000:  # bounded: a flood of destinations only costs calls
                self._allowed.clear()
            self._allowed[key] = time.monotonic() + min(float(cache_s), 3600.0)
        done(None)
