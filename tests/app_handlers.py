"""Handlers for application destinations that the tests load as an extension
(server.extensions): one of every kind, for stomp.py and the JavaScript clients."""
from __future__ import annotations

import asyncio

from stompgate.extensions import MessagingError


def setup(node):
    @node.message_mapping("/hello")
    async def hello(msg):
        return {"content": f"Hello, {msg.payload['name']}!"}

    @node.message_mapping("/chat/{room}", send_to="/topic/rooms/{room}")
    def chat(msg):  # a plain function: run in a thread
        return {"room": msg.variables["room"], "from": msg.user, "text": msg.payload}

    @node.message_mapping("/whoami", send_to_user="/queue/me", broadcast=False)
    async def whoami(msg):
        return msg.user

    @node.message_mapping("/all-sessions", send_to_user="/queue/me")
    async def all_sessions(msg):
        return msg.payload

    @node.message_mapping("/fail")
    async def fail(msg):
        raise MessagingError("no such room")

    @node.message_mapping("/crash")
    async def crash(msg):
        raise KeyError("internal detail")

    @node.message_mapping("/strict", errors="frame")
    async def strict(msg):
        raise MessagingError("refused by the application")

    @node.message_mapping("/ordered")
    async def ordered(msg):
        await asyncio.sleep(0.05 if msg.payload == "first" else 0)
        return msg.payload

    never = asyncio.Event()

    @node.message_mapping("/stuck")
    async def stuck(msg):
        await never.wait()  # until the handler timeout: a slow backend's worst

    @node.subscribe_mapping("/tasks")
    async def tasks(msg):
        return len(asyncio.all_tasks())

    @node.subscribe_mapping("/rooms")
    async def rooms(msg):
        return ["lobby", "games"]
