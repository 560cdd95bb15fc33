"""The seed application's two controller endpoints, as a stompgate extension.

The seed's Spring ``RedisMessageController`` checked whether the receiver was
connected locally, or on another node (a Redis set), or offline (a Redis list
read back by ``pullUnreadMessage``). With stompgate all of that is one call:
``convert_and_send_to_user`` reaches every session of the receiver on any
node, or stores the message until the receiver subscribes again.

Loaded by ``server.extensions`` in the node's config; the user is the one the
node's authenticator finds in the request (here the ``chat_user`` cookie).
Because a cookie goes with every request to the node, also with a form that
another site posts here, both endpoints read JSON only (``Content-Type:
application/json``, which a cross-site page cannot send without a CORS
preflight the node does not grant): the seed's page sends its AJAX data as
JSON for that reason. This file lives outside ``public/``, the directory the
node serves, so it cannot be downloaded.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from stompgate.application import InboundMessage
from stompgate.broker.auth import AuthError
from stompgate.bus.base import BusUnavailable
from stompgate.extensions import BadRequest, MessagingError, NodeContext

CHAT = "/topic/reply"  # the seed's WebSocketChannelEnum.CHAT subscribe URL


def _answer(code: int, msg: str | None = None, status: int | None = None, **extra: Any) -> web.Response:
    """The seed's reply shape: {"code": "200"} or {"code": "4xx", "msg": ...}."""
    body: dict[str, Any] = {"code": str(code), **extra}
    if msg is not None:
        body["msg"] = msg
    return web.json_response(body, status=status or code)


def _text(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def setup(node: NodeContext) -> None:
    async def send_to_user(request: web.Request) -> web.Response:
        """POST {"receiver": ..., "msg": ...}: "{sender} say: {msg}" to every session of the receiver."""
        try:
            sender = node.user_of(request)
        except AuthError as exc:
            return _answer(401, str(exc))
        try:
            data = await node.json_body(request)
            receiver = _text(data, "receiver").strip()
            msg = _text(data, "msg")
            if not receiver:
                raise BadRequest("receiver is required")
        except BadRequest as exc:
            return _answer(exc.status, str(exc))
        try:
            await node.convert_and_send_to_user(receiver, CHAT, {"content": f"{sender} say: {msg}"})
        except ValueError as exc:  # a receiver no login could have (a newline in it...)
            return _answer(400, f"receiver: {exc}")
        except RuntimeError as exc:
            return _answer(500, str(exc), status=503)
        return _answer(200)

    async def pull_unread(request: web.Request) -> web.Response:
        """POST {"destination": ...}: the messages stored while the user was away (then gone)."""
        try:
            user = node.user_of(request)
        except AuthError as exc:
            return _answer(401, str(exc))
        try:
            data = await node.json_body(request)
            destination = _text(data, "destination", CHAT)
        except BadRequest as exc:
            return _answer(exc.status, str(exc))
        try:
            messages = await node.pull_unread(user, destination)
        except (BusUnavailable, ValueError) as exc:
            return _answer(500, str(exc), status=200)  # the seed's page shows code 500 as a message
        if not messages:
            return _answer(200)
        return _answer(200, result=[m.body.decode("utf-8", "replace") for m in messages])

    node.app.router.add_post("/wsTemplate/sendToUser", send_to_user)
    node.app.router.add_post("/wsTemplate/pullUnreadMessage", pull_unread)

    if node.application is not None:  # destinations.application_prefixes: [/message], as the seed

        @node.message_mapping("/sendToUser")
        async def send_to_user_over_stomp(msg: InboundMessage) -> None:
            """SEND /message/sendToUser {"receiver": ..., "msg": ...}: the same as the POST,
            over STOMP alone; a problem goes to the sender's /user/queue/errors."""
            data = msg.payload
            if isinstance(data, str):  # stompjs 2.x sends no content-type: JSON in a text body
                try:
                    data = json.loads(data)
                except ValueError:
                    raise MessagingError("the body must be JSON: {receiver, msg}") from None
            if not isinstance(data, dict):
                raise MessagingError("the body must be a JSON object: {receiver, msg}")
            receiver, text = data.get("receiver"), data.get("msg", "")
            if not isinstance(receiver, str) or not receiver.strip() or not isinstance(text, str):
                raise MessagingError("receiver (a user name) and msg (text) are required")
            try:
                content = {"content": f"{msg.user} say: {text}"}
                await node.convert_and_send_to_user(receiver.strip(), CHAT, content)
            except ValueError as exc:
                raise MessagingError(f"receiver: {exc}") from None
