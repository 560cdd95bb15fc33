"""STOMP over SockJS at a live node, spoken by hand over the HTTP transports.

What the third-party clients cannot show: heartbeat hand-over from SockJS to
STOMP, text-only delivery of binary bodies, ERROR before the close frame on a
poll, slow consumers and the disconnect delay, the login cookie, origins; and
the node's static files and extensions that the chat example is made of.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from harness.nodes import API_KEY, ROOT, NodeProcess, deep_merge, free_port

Factory = Callable[..., NodeProcess]


def sockjs_node(**endpoint: Any) -> dict[str, Any]:
    return {
        "server": {
            "websocket_paths": ["/ws"],
            "sockjs": [{"path": "/sj", "heartbeat_s": 0.3, "disconnect_delay_s": 1.0, **endpoint}],
        }
    }


def frame(command: str, headers: dict[str, str] | None = None, body: str = "") -> str:
    lines = [command] + [f"{k}:{v}" for k, v in (headers or {}).items()]
    return "\n".join(lines) + "\n\n" + body + "\0"


class Polling:
    """A SockJS session over xhr-polling: one frame per poll."""

    def __init__(self, http: aiohttp.ClientSession, node: NodeProcess, cookie: str | None = None) -> None:
        self.http = http
        self.url = f"{node.http_url}/sj/000/{uuid.uuid4().hex[:8]}"
        self.cookie = cookie

    async def poll(self) -> str:
        headers = {"Cookie": self.cookie} if self.cookie else {}
        async with self.http.post(self.url + "/xhr", headers=headers) as resp:
            assert resp.status == 200
            return (await resp.text()).rstrip("\n")

    async def send(self, *frames: str) -> int:
        headers = {"Cookie": self.cookie} if self.cookie else {}  # a browser sends it on every request
        body = json.dumps(list(frames))
        async with self.http.post(self.url + "/xhr_send", data=body, headers=headers) as resp:
            return resp.status

    async def messages(self) -> list[str]:
        """The next poll's messages (skipping heartbeats)."""
        while True:
            got = await asyncio.wait_for(self.poll(), 5)
            if got != "h":
                assert got.startswith("a"), got
                return json.loads(got[1:])


class Streaming:
    """A SockJS session over xhr-streaming: frames as lines of one response."""

    def __init__(self, http: aiohttp.ClientSession, node: NodeProcess) -> None:
        self.http = http
        self.url = f"{node.http_url}/sj/000/{uuid.uuid4().hex[:8]}"
        self.resp: aiohttp.ClientResponse | None = None

    async def open(self) -> None:
        self.resp = await self.http.post(self.url + "/xhr_streaming")
        assert (await self.line()) == "h" * 2048
        assert (await self.line()) == "o"

    async def line(self, timeout: float = 5) -> str:
        assert self.resp is not None
        raw = await asyncio.wait_for(self.resp.content.readline(), timeout)
        return raw.decode("utf-8").rstrip("\n")

    async def lines_for(self, seconds: float) -> list[str]:
        out: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(await self.line(left))
            except TimeoutError:
                break
        return out

    async def send(self, *frames: str) -> None:
        async with self.http.post(self.url + "/xhr_send", data=json.dumps(list(frames))) as resp:
            assert resp.status == 204

    async def close(self) -> None:
        if self.resp is not None:
            self.resp.close()


async def api(
    http: aiohttp.ClientSession, node: NodeProcess, method: str, path: str, body: Any = None
) -> Any:
    async with http.request(
        method, node.http_url + path, json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as resp:
        return resp.status, await resp.json()


async def test_sockjs_heartbeats_give_way_to_stomp_heartbeats(node_factory: Factory) -> None:
    beats = {"stomp": {"heartbeat": {"send_ms": 400, "receive_ms": 0}}}
    node = node_factory(deep_merge(sockjs_node(), beats))
    async with aiohttp.ClientSession() as http:
        quiet = Streaming(http, node)  # no STOMP heart-beats: SockJS keeps the line alive
        await quiet.open()
        await quiet.send(frame("CONNECT", {"accept-version": "1.2", "login": "a", "heart-beat": "0,0"}))
        assert (await quiet.line()).startswith('a["CONNECTED')
        assert (await quiet.lines_for(1.0)).count("h") >= 2

        beating = Streaming(http, node)  # STOMP heart-beats negotiated: no more 'h'
        await beating.open()
        await beating.send(frame("CONNECT", {"accept-version": "1.2", "login": "b", "heart-beat": "0,400"}))
        connected = await beating.line()
        assert "heart-beat:400,0" in json.loads(connected[1:])[0]
        lines = await beating.lines_for(1.2)
        assert "h" not in lines, lines
        assert lines.count('a["\\n"]') >= 2, lines  # the STOMP EOLs
        await quiet.close()
        await beating.close()


async def test_binary_body_reaches_a_sockjs_session_as_text(node_factory: Factory) -> None:
    node = node_factory(sockjs_node())
    async with aiohttp.ClientSession() as http:
        sub = Streaming(http, node)
        await sub.open()
        await sub.send(
            frame("CONNECT", {"accept-version": "1.2", "login": "a", "heart-beat": "0,0"}),
            frame("SUBSCRIBE", {"id": "1", "destination": "/topic/bin", "receipt": "r"}),
        )
        got = json.loads((await sub.line())[1:])
        if len(got) == 1:
            got += json.loads((await sub.line())[1:])
        assert got[1].startswith("RECEIPT")
        raw = b"ok\xff\xfe"
        status, _ = await api(
            http,
            node,
            "POST",
            "/api/publish",
            {"destination": "/topic/bin", "payload_base64": base64.b64encode(raw).decode()},
        )
        assert status == 200
        message = json.loads((await sub.line())[1:])[0]
        head, _, body = message.partition("\n\n")
        assert body == "ok\ufffd\ufffd\0"
        assert "content-length:8" in head.split("\n")  # the UTF-8 length of what is sent
        assert "content-type:application/octet-stream" in head.split("\n")
        await sub.close()


async def test_error_frame_comes_before_the_close_frame_on_polling(node_factory: Factory) -> None:
    node = node_factory(sockjs_node())
    async with aiohttp.ClientSession() as http:
        session = Polling(http, node)
        assert await session.poll() == "o"
        assert await session.send(frame("CONNECT", {"accept-version": "1.2"})) == 204  # no login
        error = await session.messages()
        assert error[0].startswith("ERROR\nmessage:authentication failed")
        close = await session.poll()
        assert close.startswith("c[1008,") and "authentication failed" in close
        assert await session.poll() == close  # served again until the session is forgotten


async def test_login_cookie_of_the_sockjs_handshake(node_factory: Factory) -> None:
    node = node_factory(deep_merge(sockjs_node(), {"auth": {"mode": "dev", "cookie": "chat_user"}}))
    async with aiohttp.ClientSession() as http:
        session = Polling(http, node, cookie="chat_user=al%C3%AFce")
        assert await session.poll() == "o"
        await session.send(frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0"}))
        connected = (await session.messages())[0]
        assert "user-name:alïce" in connected.split("\n")


async def test_disconnect_delay_ends_the_stomp_session(node_factory: Factory) -> None:
    node = node_factory(sockjs_node())
    async with aiohttp.ClientSession() as http:
        session = Polling(http, node)
        assert await session.poll() == "o"
        await session.send(
            frame("CONNECT", {"accept-version": "1.2", "login": "dora", "heart-beat": "0,0"}),
            frame("SUBSCRIBE", {"id": "1", "destination": "/user/queue/x"}),
        )
        assert (await session.messages())[0].startswith("CONNECTED")
        _, info = await api(http, node, "GET", "/api/users/dora")
        assert info["online"] is True
        # No poll from now on: after disconnect_delay_s (1 s) the page is gone.
        deadline = time.monotonic() + 5
        while (await api(http, node, "GET", "/api/users/dora"))[1]["online"]:
            assert time.monotonic() < deadline, "the session outlived the disconnect delay"
            await asyncio.sleep(0.1)
        async with http.post(session.url + "/xhr_send", data='["x"]') as resp:
            assert resp.status == 404  # forgotten
        status, _ = await api(
            http,
            node,
            "POST",
            "/api/send-to-user",
            {"user": "dora", "destination": "/queue/x", "payload": "later"},
        )
        assert status == 200
        _, unread = await api(http, node, "POST", "/api/unread", {"user": "dora", "destination": "/queue/x"})
        assert [m["payload"] for m in unread["messages"]] == ["later"]  # kept, not sent to a dead session


async def test_slow_consumer_over_polling_is_closed(node_factory: Factory) -> None:
    node = node_factory(
        deep_merge(sockjs_node(disconnect_delay_s=30), {"server": {"max_outbound_buffer": 20000}})
    )
    async with aiohttp.ClientSession() as http:
        session = Polling(http, node)
        assert await session.poll() == "o"
        await session.send(
            frame("CONNECT", {"accept-version": "1.2", "login": "slow", "heart-beat": "0,0"}),
            frame("SUBSCRIBE", {"id": "1", "destination": "/topic/flood", "receipt": "r"}),
        )
        got: list[str] = []
        while not any(m.startswith("RECEIPT") for m in got):
            got += await session.messages()
        for _ in range(5):  # 40 KB for a client that does not poll
            await api(
                http, node, "POST", "/api/publish", {"destination": "/topic/flood", "payload": "x" * 8000}
            )
        frames = []
        for _ in range(5):
            frames.append(await asyncio.wait_for(session.poll(), 5))
            if frames[-1].startswith("c"):
                break
        assert frames[-1] == 'c[1008,"slow consumer: too much unsent data"]', frames
        assert "slow consumer" in node.log()


async def test_same_origin_by_default(node_factory: Factory) -> None:
    """A page from another site cannot use the endpoints with the user's cookies:
    every SockJS request and the WebSocket handshake are refused, as Spring does."""
    node = node_factory(sockjs_node())
    own = f"http://127.0.0.1:{node.port}"
    async with aiohttp.ClientSession() as http:
        for origin, status in [("http://evil.example", 403), (own, 200)]:
            async with http.get(node.http_url + "/sj/info", headers={"Origin": origin}) as resp:
                assert resp.status == status
        evil = {"Origin": "http://evil.example"}
        async with http.post(node.http_url + "/sj/0/abcd/xhr", headers=evil) as resp:
            assert resp.status == 403
        headers = {"Origin": "http://evil.example", "Cookie": "chat_user=alice"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(node.ws_url, headers=headers, protocols=["v12.stomp"])
        assert info.value.status == 403
        async with http.ws_connect(node.ws_url, headers={"Origin": own}, protocols=["v12.stomp"]) as ws:
            await ws.send_str(frame("CONNECT", {"accept-version": "1.2", "login": "a"}))
            assert (await asyncio.wait_for(ws.receive_str(), 5)).startswith("CONNECTED")
    assert "origin http://evil.example is not allowed" in node.log()


async def test_a_sockjs_session_belongs_to_whoever_opened_it(node_factory: Factory) -> None:
    """The session id travels in URLs; a request for it with another user's cookie
    gets 404 (Spring's answer), and the owner's session goes on untouched."""
    node = node_factory(deep_merge(sockjs_node(), {"auth": {"mode": "dev", "cookie": "chat_user"}}))
    async with aiohttp.ClientSession() as http:
        alice = Polling(http, node, cookie="chat_user=alice")
        assert await alice.poll() == "o"
        mallory = Polling(http, node, cookie="chat_user=mallory")
        mallory.url = alice.url  # the stolen id
        async with http.post(mallory.url + "/xhr", headers={"Cookie": mallory.cookie}) as resp:
            assert resp.status == 404
        assert await mallory.send(frame("SEND", {"destination": "/topic/x"}, "forged")) == 404
        async with http.post(alice.url + "/xhr") as resp:  # no cookie at all: someone else too
            assert resp.status == 404
        assert await alice.send(frame("CONNECT", {"accept-version": "1.2"})) == 204
        (connected,) = await alice.messages()
        assert connected.startswith("CONNECTED") and "user-name:alice" in connected


async def test_allowed_origins(node_factory: Factory) -> None:
    node = node_factory(sockjs_node(allowed_origins=["http://app.example"]))
    async with aiohttp.ClientSession() as http:
        async with http.get(node.http_url + "/sj/info", headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403
        async with http.post(
            node.http_url + "/sj/0/abc/xhr", headers={"Origin": "http://evil.example"}
        ) as resp:
            assert resp.status == 403
        async with http.get(node.http_url + "/sj/info", headers={"Origin": "http://app.example"}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == "http://app.example"
        async with http.get(node.http_url + "/sj/info") as resp:  # same-origin requests send no Origin
            assert resp.status == 200


CHAT_NODE = {
    "server": {
        "websocket_paths": ["/ws"],
        "sockjs": [{"path": "/chat-websocket"}],
        "static": [{"path": "/chat", "dir": str(ROOT / "examples" / "chat" / "public")}],
        "extensions": [str(ROOT / "examples" / "chat" / "backend.py")],
    },
    "auth": {"mode": "dev", "cookie": "chat_user"},
    "destinations": {"application_prefixes": ["/message"]},  # as config.yaml, the seed's
}


async def test_chat_over_stomp_alone(node_factory: Factory) -> None:
    """SEND /message/sendToUser {receiver, msg}, as the POST endpoint does: the
    receiver's sessions get it, the sender hears of a bad request on /user/queue/errors."""
    node = node_factory(CHAT_NODE)
    async with aiohttp.ClientSession() as http:

        async def connect(user: str) -> aiohttp.ClientWebSocketResponse:
            cookie = {"Cookie": f"chat_user={user}"}
            ws = await http.ws_connect(node.ws_url, headers=cookie, protocols=["v12.stomp"])
            await ws.send_str(frame("CONNECT", {"accept-version": "1.2"}))
            assert (await asyncio.wait_for(ws.receive_str(), 5)).startswith("CONNECTED")
            return ws

        alice, bob = await connect("alice"), await connect("bob")
        for ws, destination in [(bob, "/user/topic/reply"), (alice, "/user/queue/errors")]:
            await ws.send_str(frame("SUBSCRIBE", {"destination": destination, "id": "s", "receipt": "s"}))
            assert "receipt-id:s" in await asyncio.wait_for(ws.receive_str(), 5)

        body = json.dumps({"receiver": "bob", "msg": "hi over stomp"})
        await alice.send_str(frame("SEND", {"destination": "/message/sendToUser"}, body))
        got = await asyncio.wait_for(bob.receive_str(), 5)
        assert got.startswith("MESSAGE") and json.loads(got.split("\n\n", 1)[1].rstrip("\0")) == {
            "content": "alice say: hi over stomp"
        }
        await alice.send_str(frame("SEND", {"destination": "/message/sendToUser"}, '{"msg": "to nobody"}'))
        error = await asyncio.wait_for(alice.receive_str(), 5)
        assert "receiver (a user name) and msg (text) are required" in error


async def test_chat_example_files_and_endpoints(node_factory: Factory) -> None:
    node = node_factory(CHAT_NODE)
    async with aiohttp.ClientSession() as http:
        async with http.get(node.http_url + "/chat", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/chat/"
        async with http.get(node.http_url + "/chat/") as resp:
            assert resp.status == 200 and "Chat With STOMP Message" in await resp.text()
        for lib in (
            "sockjs-client/dist/sockjs.min.js",
            "stompjs/lib/stomp.min.js",
            "jquery/dist/jquery.min.js",
        ):
            async with http.get(f"{node.http_url}/chat/node_modules/{lib}") as resp:
                assert resp.status == 200, lib
        async with http.get(node.http_url + "/chat/../config.yaml") as resp:
            assert resp.status in (403, 404)
        async with http.get(node.http_url + "/chat/backend.py") as resp:
            assert resp.status == 404  # the extension's source is not among the page's files

        send = node.http_url + "/wsTemplate/sendToUser"
        pull = node.http_url + "/wsTemplate/pullUnreadMessage"
        async with http.post(send, json={"receiver": "bob", "msg": "hi"}) as resp:
            assert resp.status == 401  # who is sending?
        alice = {"Cookie": "chat_user=alice"}
        async with http.post(send, json={"receiver": "bob", "msg": "hi bob"}, headers=alice) as resp:
            assert resp.status == 200 and (await resp.json())["code"] == "200"
        async with http.post(send, json={"receiver": "", "msg": "x"}, headers=alice) as resp:
            assert resp.status == 400
        bob = {"Cookie": "chat_user=bob"}
        async with http.post(pull, json={"destination": "/topic/reply"}, headers=bob) as resp:
            result = await resp.json()
        assert [json.loads(item)["content"] for item in result["result"]] == ["alice say: hi bob"]
        async with http.post(pull, json={"destination": "/topic/reply"}, headers=bob) as resp:
            assert "result" not in await resp.json()  # taken: gone
        async with http.post(pull, json={"destination": "/nowhere"}, headers=bob) as resp:
            assert (await resp.json())["code"] == "500"


@pytest.mark.parametrize(
    "source",
    ["raise RuntimeError('boom')\n", "def setup(node):\n    raise RuntimeError('boom')\n"],
    ids=["import", "setup"],
)
def test_an_extension_that_fails_stops_the_node_with_its_name(tmp_path: Path, source: str) -> None:
    ext = tmp_path / "broken_ext.py"
    ext.write_text(source)
    config = {
        "server": {"port": free_port(), "extensions": [str(ext)]},
        "auth": {"mode": "dev"},
        "api": {"key": "k"},
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "stompgate", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "server.extensions" in proc.stderr and "broken_ext.py" in proc.stderr and "boom" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_a_surrogate_pair_split_across_messages_is_joined(node_factory: Factory) -> None:
    """stompjs 2.x cuts frames every 16384 UTF-16 units, sometimes inside an emoji."""
    node = node_factory(sockjs_node())
    async with aiohttp.ClientSession() as http:
        sub = Streaming(http, node)
        await sub.open()
        await sub.send(
            frame("CONNECT", {"accept-version": "1.2", "login": "e", "heart-beat": "0,0"}),
            frame("SUBSCRIBE", {"id": "1", "destination": "/topic/emoji", "receipt": "r"}),
        )
        got: list[str] = []
        while not any(m.startswith("RECEIPT") for m in got):
            got += json.loads((await sub.line())[1:])
        body = "a\U0001F600b"  # 6 bytes of UTF-8
        whole = frame("SEND", {"destination": "/topic/emoji", "content-length": "6"}, body)
        cut = whole.index("\U0001F600") + 1  # in UTF-16, between the two halves
        halves = [whole[: cut - 1] + "\ud83d", "\ude00" + whole[cut:]]
        # json.dumps keeps lone surrogates as \uXXXX escapes, as JavaScript's JSON does
        for half in halves:
            async with http.post(sub.url + "/xhr_send", data="[" + json.dumps(half) + "]") as resp:
                assert resp.status == 204
        message = json.loads((await sub.line())[1:])[0]
        assert message.startswith("MESSAGE") and message.endswith("\n\n" + body + "\0"), message
        await sub.close()
