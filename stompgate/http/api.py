"""The publish API: backends push to users and destinations over HTTP.

``POST {prefix}/send-to-user`` mirrors the seed's ``/wsTemplate/sendToUser``
(and Spring's ``convertAndSendToUser``); ``POST {prefix}/publish`` mirrors
``convertAndSend``. JSON in, JSON out; a 4xx says what is wrong.

Request bodies are parsed by :func:`read_json_object`, shared with extensions:
``application/json`` only (a cross-site page cannot send that without a CORS
preflight, so a cookie-authenticated call cannot be forged), orjson (which
refuses nesting past 1024 levels and lone surrogates that UTF-8 and Redis
cannot carry), and every refusal is a 4xx that says why, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from ..broker.auth import AuthError, Credentials, login
from ..broker.destinations import DestinationError, DestinationRules
from ..broker.message import Message
from ..broker.names import destination_problem, header_problem, is_reserved, shown, user_name_problem
from ..bus.base import REFUSAL_STATUS, BusUnavailable, refusal_code
from ..convert import to_body

if TYPE_CHECKING:
    from ..broker import Broker
    from ..broker.session import SessionLimits
    from ..bus.contract import ClusterBus

def _user_destination(rules: DestinationRules, destination: str) -> str:
    try:
        return rules.user_destination(destination)
    except DestinationError as exc:
        raise BadRequest(str(exc)) from None


class BadRequest(Exception):
    """A request refused with a 4xx: 400 unless ``status`` says otherwise (413, 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def read_json_object(request: web.Request, timeout_s: float | None = None) -> dict[str, Any]:
    """The request's body as a JSON object, or BadRequest (415, 413, 408 or 400) saying what is wrong.

    ``timeout_s`` bounds the wait for the whole body (server.connections.body_timeout_s).
    """
    if request.content_type != "application/json":
        raise BadRequest(
            f"the request body must be JSON sent as 'Content-Type: application/json', "
            f"not {request.content_type!r}",
            415,
        )
    too_large = BadRequest(f"the request body is larger than {request.client_max_size} bytes", 413)
    if (request.content_length or 0) > request.client_max_size:
        raise too_large  # refused before a byte of it is read
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    except TimeoutError:
        raise BodyTimeout(timeout_s or 0) from None
    if not raw.strip():
        raise BadRequest("the request body is empty: a JSON object is expected")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {_json_problem(exc)}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def _json_problem(exc: orjson.JSONDecodeError) -> str:
    """orjson's reason, in our words (its texts are not an interface)."""
    reason = exc.msg.lower()
    if "depth" in reason or "recursion" in reason:
        what = "nested deeper than 1024 levels"
    elif "utf-8" in reason:
        what = "not UTF-8"
    elif "surrogate" in reason:
        what = "a lone UTF-16 surrogate escape, which UTF-8 cannot carry"
    else:
        what = "a syntax error"
    return f"{what} (line {exc.lineno}, column {exc.colno})"


class BodyTimeout(BadRequest):
    """The request body did not arrive in time: 408, and the connection is closed."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout_s:g} s", 408)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _refused(exc: BadRequest) -> web.Response:
    response = _error(exc.status, str(exc))
    if isinstance(exc, BodyTimeout):  # a client that trickles its body does not keep the connection
        response.force_close()
    return response


def _payload(data: dict[str, Any], headers: dict[str, str]) -> bytes:
    """The body, and a default content-type that says how it was encoded."""
    has_text = "payload" in data
    has_b64 = "payload_base64" in data
    if has_text == has_b64:
        raise BadRequest("give exactly one of 'payload' (text or JSON) and 'payload_base64'")
    if has_b64:
        raw = data["payload_base64"]
        if not isinstance(raw, str):
            raise BadRequest("'payload_base64' must be a base64 string")
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("'payload_base64' is not valid base64") from None
        headers.setdefault("content-type", "application/octet-stream")
        return body
    try:
        return to_body(data["payload"], headers)  # JSON has no bytes: text or a JSON value
    except RecursionError:  # orjson reads 1024 levels; writing them back overflows the stack
        raise BadRequest("'payload' is nested too deeply to be sent") from None


def _headers(data: dict[str, Any], limits: SessionLimits, reserved: frozenset[str]) -> dict[str, str]:
    """The publisher's headers, under the rules and limits a SEND frame's headers have."""
    raw = data.get("headers", {})
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("'headers' must be an object of header names to string values")
    if len(raw) > limits.max_headers:
        raise BadRequest(f"'headers': more than {limits.max_headers} headers (stomp.max_headers)")
    out: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise BadRequest(f"headers.{shown(name)}: must be a string or a number")
        value = str(value)
        problem = header_problem(name, value)
        if problem is not None:
            raise BadRequest(f"headers: {problem}")
        if is_reserved(name, reserved):  # however spelled: " message-id" is message-id to a client that trims
            raise BadRequest(f"headers.{name}: set by the broker, not by the publisher")
        if len(name) + 1 + len(value) > limits.max_header_length:
            raise BadRequest(
                f"headers.{shown(name)}: longer than {limits.max_header_length} characters "
                "(stomp.max_header_length)"
            )
        out[name] = value
    return out


def _string(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{key}' is required and must be a non-empty string")
    return value


def _user(data: dict[str, Any]) -> str:
    user = _string(data, "user")
    problem = user_name_problem(user)
    if problem is not None:
        raise BadRequest(f"'user': {problem}")
    return user


def _destination(data: dict[str, Any], limits: SessionLimits) -> str:
    destination = _string(data, "destination")
    problem = destination_problem(destination, limits.max_destination_length)
    if problem is not None:
        raise BadRequest(f"'destination': {problem}")
    return destination


def _message_json(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"destination": message.shown, "headers": message.headers}
    if message.binary:
        out["payload_base64"] = base64.b64encode(message.body).decode("ascii")
    else:
        out["payload"] = message.body.decode("utf-8")
    return out


async def publish(broker: Broker, message: Message) -> tuple[int, str | None]:
    """Publish; wait until the cluster has it (delivered or stored): (local deliveries, error)."""
    accepted: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def done(error: str | None) -> None:
        if not accepted.done():
            accepted.set_result(error)

    delivered = broker.publish(message, done)
    return delivered, await accepted


def user_of(broker: Broker, request: web.Request) -> str:
    """The user an HTTP request speaks for, by the node's authenticator (as a CONNECT would be).

    HTTP Basic becomes login/passcode; the request's own headers, query and
    cookies count as the handshake's.
    """
    headers: dict[str, str] = {}
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            name, _, passcode = base64.b64decode(value.strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("malformed Basic credentials") from None
        headers = {"login": name, "passcode": passcode}
    creds = Credentials(headers, {k.lower(): v for k, v in request.headers.items()}, dict(request.query))
    user = login(broker.authenticator, creds, request.remote or "", broker.roles).name
    if not user:
        raise AuthError("no user")
    return user


class PublishApi:
    def __init__(self, broker: Broker, bus: ClusterBus, api_key: str, body_timeout_s: float = 15.0) -> None:
        self.broker = broker
        self.bus = bus
        self._key = api_key.encode("utf-8")
        # A client that trickles its body would hold the connection (and this handler) forever.
        self._body_timeout_s = body_timeout_s

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("X-API-Key")
        if given is None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(given.encode("utf-8"), self._key)

    async def _run(self, request: web.Request, user_route: bool) -> web.Response:
        if not self._authorized(request):
            return _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key'")
        try:
            data = await read_json_object(request, self._body_timeout_s)
            limits = self.broker.limits
            destination = _destination(data, limits)
            headers = _headers(data, limits, self.broker.reserved)
            body = _payload(data, headers)
            rules = self.broker.rules
            user: str | None
            if user_route:
                user = _user(data)
                destination = _user_destination(rules, destination)  # "/user/queue/x" accepted too
            else:
                try:
                    target = rules.send_target(destination)
                except DestinationError as exc:
                    raise BadRequest(str(exc)) from None
                destination, user = target.destination, target.user
                if user is not None and (problem := user_name_problem(user)) is not None:
                    raise BadRequest(f"user destination: {problem}")
        except BadRequest as exc:
            return _refused(exc)
        if len(body) > self.broker.limits.max_frame_size:
            return _error(
                413, f"payload larger than stomp.max_frame_size ({self.broker.limits.max_frame_size})"
            )
        message = self.broker.message(destination, headers, body, user, server_sent=True)
        delivered, error = await publish(self.broker, message)
        if error is not None:
            # A store limit says which (413 too large, 507 the user's store full); else 503.
            code = refusal_code(error)
            return _error(REFUSAL_STATUS[code] if code else 503, f"message not accepted: {error}")
        return web.json_response({"delivered": delivered})

    async def send_to_user(self, request: web.Request) -> web.Response:
        return await self._run(request, user_route=True)

    async def publish(self, request: web.Request) -> web.Response:
        return await self._run(request, user_route=False)

    async def unread(self, request: web.Request) -> web.Response:
        """The seed's pullUnreadMessage: return and clear a user's stored messages.

        Called by the user (HTTP Basic login:passcode, or a Bearer JWT, checked by
        the node's authenticator) or by a backend (API key + ``user``).
        """
        try:
            # Who asks comes first: an unknown caller does not get its body parsed.
            backend = self._authorized(request)
            user = None if backend else self._user_of(request)
            data = await read_json_object(request, self._body_timeout_s)
            destination = _destination(data, self.broker.limits)
            destination = _user_destination(self.broker.rules, destination)
            if user is None:
                user = _user(data)
        except BadRequest as exc:
            return _refused(exc)
        except AuthError as exc:
            return _error(401, f"authentication failed: {exc}")
        try:
            messages = await self.bus.pull(user, destination)
        except BusUnavailable as exc:
            return _error(503, str(exc))
        return web.json_response({"user": user, "messages": [_message_json(m) for m in messages]})

    def _user_of(self, request: web.Request) -> str:
        return user_of(self.broker, request)

    async def _view(
        self, request: web.Request, answer: Callable[[], Awaitable[dict[str, Any]]]
    ) -> web.Response:
        """A cluster-view call: API key, then the answer, or 503 while Redis is unreachable."""
        if not self._authorized(request):
            return _error(401, "missing or wrong API key")
        try:
            return web.json_response(await answer())
        except BusUnavailable as exc:
            return _error(503, str(exc))

    async def user_info(self, request: web.Request) -> web.Response:
        """Is a user online, on which nodes, with how many sessions (cluster-wide)."""
        user = request.match_info["user"]

        async def answer() -> dict[str, Any]:
            nodes = await self.bus.user_nodes(user, self.broker.online(user))
            return {"user": user, "online": bool(nodes), "sessions": sum(nodes.values()), "nodes": nodes}

        return await self._view(request, answer)

    async def users(self, request: web.Request) -> web.Response:
        async def answer() -> dict[str, Any]:
            return {"users": await self.bus.online_users()}

        return await self._view(request, answer)

    async def nodes(self, request: web.Request) -> web.Response:
        """The live nodes: those whose heartbeat is younger than bus.node_timeout_s."""

        async def answer() -> dict[str, Any]:
            return {"nodes": await self.bus.live_nodes()}

        return await self._view(request, answer)

    async def stats(self, request: web.Request) -> web.Response:
        async def answer() -> dict[str, Any]:
            return {
                "node": self.bus.node_id,
                "broker": asdict(self.broker.stats),
                "bus": asdict(self.bus.stats),
            }

        return await self._view(request, answer)

    def routes(self, prefix: str) -> list[web.RouteDef]:
        return [
            web.post(f"{prefix}/send-to-user", self.send_to_user),
            web.post(f"{prefix}/publish", self.publish),
            web.post(f"{prefix}/unread", self.unread),
            web.get(f"{prefix}/users", self.users),
            web.get(f"{prefix}/users/{{user}}", self.user_info),
            web.get(f"{prefix}/stats", self.stats),
            web.get(f"{prefix}/nodes", self.nodes),
        ]
