"""Application destinations answered by a backend over HTTP (stompgate/proxy.py).

A real aiohttp backend runs in the test's loop on a free port; a real node
POSTs to it. The backend checks every request's HMAC signature and answers
per path: replies of every kind, an error, and the failures a backend has in
production: slow, dead, an HTTP error, garbage, and a lying answer (a reply to
a destination or a user no one may name). Each failure is a clear ERROR for
that sender only; the node goes on serving the others.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from harness.nodes import NodeProcess, free_port
from harness.stompclient import WsStomp
from stompgate.stomp import Frame

SECRET = "proxy-secret-0123456789"


def signed(request: web.Request, body: bytes) -> bool:
    """What a backend does first: the node's signature over timestamp and body, and a recent timestamp."""
    stamp = request.headers["X-Stompgate-Timestamp"]
    want = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    recent = abs(time.time() - int(stamp)) < 60
    return recent and hmac.compare_digest(want, request.headers["X-Stompgate-Signature"])


@asynccontextmanager
async def serving(route: str, handler: Any) -> AsyncIterator[str]:
    """An aiohttp backend on a free loopback port, in the test's loop; its base URL."""
    app = web.Application()
    app.router.add_post(route, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Backend:
    """The application backend: what it was asked, and its answers by path."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if not signed(request, body):
            self.bad_signatures += 1
            return web.Response(status=401)
        call = json.loads(body)
        self.requests.append(call)
        path = call["path"]
        if path == "/rooms":
            return web.json_response({"reply": ["lobby", "games"]})
        if path == "/echo":
            echo = {"from": call["user"], "said": call["body"]}
            replies = [
                {"destination": "/topic/echo", "payload": echo},
                {"sender": True, "broadcast": False, "destination": "/queue/me", "payload": "only you"},
                {"user": "bob", "destination": "/user/queue/inbox", "payload": "for bob"},
            ]
            return web.json_response({"replies": replies})
        if path == "/refuse":
            return web.json_response({"error": "no such room"})
        if path == "/slow":
            await asyncio.sleep(5)
            return web.json_response({})
        if path == "/http-error":
            return web.Response(status=500, text="boom")
        if path == "/garbage":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if path == "/lie-destination":
            return web.json_response({"replies": [{"destination": "/secret/x", "payload": "x"}]})
        if path == "/lie-header":
            replies = [{"destination": "/topic/echo", "headers": {"Sender": "root"}, "payload": "x"}]
            return web.json_response({"replies": replies})
        if path == "/lie-user":
            replies = [{"user": "eve\nx", "destination": "/queue/x", "payload": "x"}]
            return web.json_response({"replies": replies})
        return web.Response(status=404)


@pytest.fixture
async def backend() -> AsyncIterator[tuple[Backend, str]]:
    state = Backend()
    async with serving("/stomp", state.handle) as base:
        yield state, f"{base}/stomp"


def proxied(url: str) -> dict[str, Any]:
    return {
        "destinations": {"application_prefixes": ["/app"]},
        "proxy": {"application_url": url, "secret": SECRET, "timeout_s": 1},
    }


async def test_replies_of_every_kind(node_factory, backend, close_ws_clients) -> None:
    state, url = backend
    node: NodeProcess = node_factory(proxied(url))
    alice = await WsStomp.connect(node.ws_url, "alice")
    other = await WsStomp.connect(node.ws_url, "alice")  # another session of alice
    bob = await WsStomp.connect(node.ws_url, "bob")
    await alice.subscribe("/topic/echo", "echo")
    await alice.subscribe("/user/queue/me", "me")
    await other.subscribe("/user/queue/me", "me")
    await bob.subscribe("/user/queue/inbox", "inbox")

    headers = {"destination": "/app/echo", "content-type": "text/plain", "receipt": "r"}
    await alice.send(Frame("SEND", headers, b"hello"))
    frames = [await alice.recv() for _ in range(3)]
    assert frames[-1].command == "RECEIPT"  # once the backend answered and its replies went out
    got = {frame.headers["destination"]: frame for frame in frames[:2]}
    assert json.loads(got["/topic/echo"].body) == {"from": "alice", "said": "hello"}
    assert got["/user/queue/me"].body == b"only you" and got["/topic/echo"].headers["server-sent"] == "true"
    assert (await bob.recv()).body == b"for bob"
    (call,) = state.requests
    assert {k: call[k] for k in ("kind", "destination", "user", "body", "encoding")} == {
        "kind": "send", "destination": "/app/echo", "user": "alice", "body": "hello", "encoding": "text",
    }  # fmt: skip
    assert call["headers"] == {"content-type": "text/plain"} and state.bad_signatures == 0

    with pytest.raises(asyncio.TimeoutError):
        await other.recv(timeout=0.3)  # "only you" went to alice's sending session, not this one

    await alice.send(Frame("SUBSCRIBE", {"destination": "/app/rooms", "id": "rooms"}))
    reply = await alice.recv()
    assert reply.headers["subscription"] == "rooms" and json.loads(reply.body) == ["lobby", "games"]

    await other.send(Frame("SEND", {"destination": "/app/echo", "receipt": "b"}, b"\xff\xfe"))
    while (await other.recv()).command != "RECEIPT":
        pass
    assert state.requests[-1]["encoding"] == "base64"  # not UTF-8: sent as base64
    assert base64.b64decode(state.requests[-1]["body"]) == b"\xff\xfe"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/refuse", "no such room"),
        ("/slow", "the application backend did not answer within 1 s"),
        ("/http-error", "the application backend answered HTTP 500"),
        ("/garbage", "the application backend answered something that is not JSON"),
        ("/lie-destination", "'/secret/x' is not under a broker prefix"),
        ("/lie-header", "header 'Sender': a header the broker sets"),
        ("/lie-user", "contains a control character (U+000A)"),
        ("/missing", "the application backend answered HTTP 404"),
    ],
)
async def test_a_failing_backend_is_an_error_for_its_sender_only(
    node_factory, backend, close_ws_clients, path: str, message: str
) -> None:
    _state, url = backend
    node: NodeProcess = node_factory(proxied(url))
    bystander = await WsStomp.connect(node.ws_url, "bystander")
    await bystander.subscribe("/topic/echo", "echo")
    alice = await WsStomp.connect(node.ws_url, "alice")
    await alice.send(Frame("SEND", {"destination": f"/app{path}", "receipt": "r"}, b"x"))
    error = await alice.recv(timeout=5)
    assert error.command == "ERROR" and message in error.headers["message"], error
    assert error.headers["receipt-id"] == "r"
    await alice.expect_closed()
    await bystander.publish("/topic/echo", "still here", receipt=False)  # the node and the others go on
    assert (await bystander.recv()).body == b"still here"  # and nothing of a lying answer was sent


async def test_a_dead_backend(node_factory, close_ws_clients) -> None:
    node: NodeProcess = node_factory(proxied(f"http://127.0.0.1:{free_port()}/stomp"))
    alice = await WsStomp.connect(node.ws_url, "alice")
    await alice.send(Frame("SEND", {"destination": "/app/echo"}, b"x"))
    error = await alice.recv()
    assert error.headers["message"] == "the application backend is unreachable (ClientConnectorError)"
    assert "application backend" in node.log()


# ------------------------------------------------- connect, subscribe, publish


class Gatekeeper:
    """The backend's connect, subscribe and publish endpoints (the seed's session login)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {"connect": 0, "subscribe": 0, "publish": 0}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        assert signed(request, body)
        call = json.loads(body)
        self.calls[call["kind"]] += 1
        if call["kind"] == "connect":
            cookie = call["handshake"]["headers"].get("cookie", "")
            if cookie == "session=abc123":
                return web.json_response({"user": "alice", "roles": ["admin"]})
            if cookie == "session=slow":
                await asyncio.sleep(5)
            return web.json_response({"error": "no such session"})
        if call["kind"] == "subscribe":
            if call["destination"] == "/topic/private":
                return web.json_response({"allow": False, "reason": "not yours"})
            return web.json_response({"allow": True})
        assert call["user"] == "alice" and call["roles"] == ["admin"]
        if call["destination"] == "/topic/readonly":
            return web.json_response({"allow": False})
        return web.json_response({"allow": True, "cache_s": 60})


@pytest.fixture
async def gatekeeper() -> AsyncIterator[tuple[Gatekeeper, str]]:
    state = Gatekeeper()
    async with serving("/{kind}", state.handle) as base:
        yield state, base


def gated(base: str) -> dict[str, Any]:
    """A production node whose logins are the backend's: no auth.mode at all, deny by default."""
    urls = {f"{kind}_url": f"{base}/{kind}" for kind in ("connect", "subscribe", "publish")}
    return {
        "auth": {"mode": None},
        "authorization": {"rules": [{"destination": "/topic/**", "allow": "authenticated"}]},
        "proxy": {**urls, "secret": SECRET, "timeout_s": 1},
    }


async def connect_with(node: NodeProcess, cookie: str) -> tuple[WsStomp, Frame]:
    client = await WsStomp.open(node.ws_url, additional_headers={"Cookie": cookie})
    await client.send(Frame("CONNECT", {"accept-version": "1.2"}))
    return client, await client.recv()


@pytest.mark.parametrize(
    ("cookie", "message"),
    [
        ("session=nope", "authentication failed: no such session"),
        ("session=slow", "authentication failed: the connect backend did not answer within 1 s"),
    ],
)
async def test_the_connect_proxy_refuses(node_factory, gatekeeper, close_ws_clients, cookie, message) -> None:
    _state, base = gatekeeper
    node: NodeProcess = node_factory(gated(base))
    _client, error = await connect_with(node, cookie)
    assert error.command == "ERROR" and error.headers["message"] == message


async def test_the_backend_decides_who_connects_and_what_goes_on(
    node_factory, gatekeeper, close_ws_clients
) -> None:
    state, base = gatekeeper
    node: NodeProcess = node_factory(gated(base))
    alice, connected = await connect_with(node, "session=abc123")  # the seed's session login, no JWT
    assert connected.command == "CONNECTED" and connected.headers["user-name"] == "alice"
    await alice.subscribe("/topic/chat", "chat")  # its RECEIPT waited for the backend's allow
    for i in range(3):
        await alice.send(Frame("SEND", {"destination": "/topic/chat"}, f"m{i}".encode()))
    assert [(await alice.recv()).body for _ in range(3)] == [b"m0", b"m1", b"m2"]  # order kept
    assert state.calls["publish"] == 1  # the allow was cached for 60 s, as the backend said
    await alice.send(Frame("SEND", {"destination": "/topic/readonly", "receipt": "r"}, b"x"))
    error = await alice.recv()
    assert error.headers["message"] == "access denied: SEND /topic/readonly: refused by the publish backend"

    bob, _ = await connect_with(node, "session=abc123")
    await bob.send(Frame("SUBSCRIBE", {"destination": "/topic/private", "id": "p"}))
    error = await bob.recv()
    assert error.headers["message"] == "access denied: SUBSCRIBE /topic/private: not yours"


async def test_a_dead_gate_backend_fails_closed(node_factory, close_ws_clients) -> None:
    node: NodeProcess = node_factory(gated(f"http://127.0.0.1:{free_port()}"))
    _client, error = await connect_with(node, "session=abc123")
    why = "the connect backend is unreachable (ClientConnectorError)"
    assert error.headers["message"] == f"authentication failed: {why}"
