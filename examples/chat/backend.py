"""The seed application's two controller endpoints, as a stompgate extension.

The seed's Spring ``RedisMessageController`` checked whether the receiver was
connected locally, or on another node (a Redis set), or offline (a Redis list
read back by ``pullUnreadMessage``). With stompgate all of that is one call:
``convert_and_send_to_user`` reaches every session of the receiver on any
node, or stores the message until the receiver subscribes again.

Loaded by ``server.extensions`` in the node's config; the user is the one the
node's authenticator finds in the request (here the ``chat_user`` cookie).
"""

from __future__ import annotations

from aiohttp import web

from stompgate.broker.auth import AuthError
from stompgate.bus.base import BusUnavailable
from stompgate.extensions import NodeContext

CHAT = "/topic/reply"  # the seed's WebSocketChannelEnum.CHAT subscribe URL


def setup(node: NodeContext) -> None:
    async def send_to_user(request: web.Request) -> web.Response:
        """POST receiver=...&msg=...: "{sender} say: {msg}" to every session of the receiver."""
        try:
            sender = node.user_of(request)
        except AuthError as exc:
            return web.json_response({"code": "401", "msg": str(exc)}, status=401)
        form = await request.post()
        receiver = str(form.get("receiver", "")).strip()
        msg = str(form.get("msg", ""))
        if not receiver:
            return web.json_response({"code": "400", "msg": "receiver is required"}, status=400)
        try:
            await node.convert_and_send_to_user(receiver, CHAT, {"content": f"{sender} say: {msg}"})
        except RuntimeError as exc:
            return web.json_response({"code": "500", "msg": str(exc)}, status=503)
        return web.json_response({"code": "200"})

    async def pull_unread(request: web.Request) -> web.Response:
        """POST destination=...: the messages stored while the user was away (then gone)."""
        try:
            user = node.user_of(request)
        except AuthError as exc:
            return web.json_response({"code": "401", "msg": str(exc)}, status=401)
        form = await request.post()
        destination = str(form.get("destination", CHAT))
        try:
            messages = await node.pull_unread(user, destination)
        except (BusUnavailable, ValueError) as exc:
            return web.json_response({"code": "500", "msg": str(exc)})
        result = {"code": "200"}
        if messages:
            result["result"] = [m.body.decode("utf-8", "replace") for m in messages]
        return web.json_response(result)

    node.app.router.add_post("/wsTemplate/sendToUser", send_to_user)
    node.app.router.add_post("/wsTemplate/pullUnreadMessage", pull_unread)
