"""The greeting example's handler: Spring's GreetingController, in Python.

    @MessageMapping("/hello") @SendTo("/topic/greetings")
    public Greeting greeting(HelloMessage message) {
        return new Greeting("Hello, " + HtmlUtils.htmlEscape(message.getName()) + "!");
    }

Loaded by ``server.extensions``; the page is ``public/index.html``. Spring escapes
the name because its page appends the greeting as HTML; this page writes it as
text (``textContent``), so the name goes as it was typed.
"""

from __future__ import annotations

from typing import Any

from stompgate.application import InboundMessage
from stompgate.extensions import MessagingError, NodeContext


def setup(node: NodeContext) -> None:
    @node.message_mapping("/hello", send_to="/topic/greetings")
    async def greeting(message: InboundMessage) -> dict[str, Any]:
        hello = message.payload
        if not isinstance(hello, dict) or not isinstance(hello.get("name"), str):
            raise MessagingError('send {"name": "..."} as JSON')
        return {"content": f"Hello, {hello['name']}!"}
