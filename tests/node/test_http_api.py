"""The HTTP publish API against a real node: deliveries and every 4xx."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from harness.nodes import API_KEY
from harness.stompclient import WsStomp

pytestmark = pytest.mark.usefixtures("close_ws_clients")


def post(node, path: str, body: Any, key: str | None = API_KEY, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(node.http_url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_send_to_user_reaches_every_session_of_the_user(node) -> None:
    """The seed's POST /wsTemplate/sendToUser, as JSON."""
    tab1 = await WsStomp.connect(node.ws_url, "bob")
    tab2 = await WsStomp.connect(node.ws_url, "bob")
    other = await WsStomp.connect(node.ws_url, "carol")
    for c in (tab1, tab2, other):
        await c.subscribe("/user/queue/reply")
    status, reply = post(
        node,
        "/api/send-to-user",
        {"user": "bob", "destination": "/queue/reply", "payload": {"content": "hi"}, "headers": {"x-n": 1}},
    )
    assert (status, reply) == (200, {"delivered": 2})
    for tab in (tab1, tab2):
        msg = await tab.recv()
        assert msg.headers["destination"] == "/user/queue/reply"
        assert msg.headers["content-type"] == "application/json"
        assert msg.headers["x-n"] == "1"
        assert json.loads(msg.body) == {"content": "hi"}
    # "/user/queue/reply" is accepted as the destination too
    status, reply = post(
        node, "/api/send-to-user", {"user": "carol", "destination": "/user/queue/reply", "payload": "t"}
    )
    assert (status, reply) == (200, {"delivered": 1})
    msg = await other.recv()
    assert msg.body == b"t" and msg.headers["content-type"] == "text/plain;charset=UTF-8"


async def test_publish_to_topic_and_user_destination_and_binary(node) -> None:
    sub = await WsStomp.connect(node.ws_url, "dave")
    await sub.subscribe("/topic/news.*", "t")
    await sub.subscribe("/user/queue/q", "u")
    assert post(node, "/api/publish", {"destination": "/topic/news.eu", "payload": "a"}) == (
        200,
        {"delivered": 1},
    )
    assert post(node, "/api/publish", {"destination": "/user/dave/queue/q", "payload": "b"}) == (
        200,
        {"delivered": 1},
    )
    blob = bytes(range(256))
    body = {"destination": "/topic/news.bin", "payload_base64": base64.b64encode(blob).decode()}
    assert post(node, "/api/publish", body) == (200, {"delivered": 1})
    assert post(node, "/api/publish", {"destination": "/topic/nobody", "payload": "c"}) == (
        200,
        {"delivered": 0},
    )
    first, second, third = await sub.recv(), await sub.recv(), await sub.recv()
    assert (first.headers["destination"], first.body) == ("/topic/news.eu", b"a")
    assert (second.headers["destination"], second.body) == ("/user/queue/q", b"b")
    assert third.body == blob and third.headers["content-type"] == "application/octet-stream"
    assert isinstance(sub.raw[-1], bytes)


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        ("/api/send-to-user", {"destination": "/queue/a", "payload": "x"}, 400, "'user'"),
        ("/api/send-to-user", {"user": "u", "payload": "x"}, 400, "'destination'"),
        ("/api/send-to-user", {"user": "u", "destination": "/queue/a"}, 400, "payload"),
        (
            "/api/send-to-user",
            {"user": "u", "destination": "/queue/a", "payload": "x", "payload_base64": ""},
            400,
            "exactly one",
        ),
        ("/api/send-to-user", {"user": "u", "destination": "/app/a", "payload": "x"}, 400, "broker prefix"),
        (
            "/api/send-to-user",
            {"user": "u", "destination": "/queue/a", "payload": "x", "headers": {"destination": "/x"}},
            400,
            "headers.destination",
        ),
        (
            "/api/send-to-user",
            {"user": "u", "destination": "/queue/a", "payload": "x", "headers": ["a"]},
            400,
            "'headers'",
        ),
        ("/api/publish", {"destination": "/elsewhere", "payload": "x"}, 400, "no broker prefix"),
        ("/api/publish", {"destination": "/topic/a", "payload_base64": "!!"}, 400, "base64"),
        ("/api/publish", [1, 2], 400, "JSON object"),
    ],
)
def test_bad_requests_say_what_is_wrong(node, path, body, status, words) -> None:
    got, reply = post(node, path, body)
    assert got == status
    assert words in reply["error"]


def test_invalid_json_and_missing_key(node) -> None:
    assert post(node, "/api/publish", None, raw=b"{not json")[0] == 400
    status, reply = post(node, "/api/publish", {"destination": "/topic/a", "payload": "x"}, key=None)
    assert status == 401 and "API key" in reply["error"]
    assert post(node, "/api/publish", {"destination": "/topic/a", "payload": "x"}, key="wrong")[0] == 401


def test_payload_over_the_frame_limit_is_413(node_factory) -> None:
    node = node_factory({"stomp": {"max_frame_size": 2048}})
    status, reply = post(node, "/api/publish", {"destination": "/topic/a", "payload": "x" * 3000})
    assert status == 413 and "max_frame_size" in reply["error"]


def test_api_can_be_disabled(node_factory) -> None:
    node = node_factory({"api": {"enabled": False, "key": None}})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(
            urllib.request.Request(node.http_url + "/api/publish", data=b"{}", method="POST"), timeout=5
        )
    assert info.value.code == 404


async def test_a_node_alone_keeps_offline_messages_in_memory(node_factory) -> None:
    """No Redis: the same offline store, pull and registry, within the one node."""
    node = node_factory({"offline": {"max_messages": 2}})
    alice = await WsStomp.connect(node.ws_url, "alice")
    for i in range(3):
        await alice.publish("/user/carol/queue/inbox", f"m{i}")
    await alice.publish("/user/carol/queue/other", "pulled")
    status, reply = get(node, "/api/users/carol")
    assert (status, reply) == (200, {"user": "carol", "online": False, "sessions": 0, "nodes": {}})
    carol = await WsStomp.connect(node.ws_url, "carol")
    await carol.subscribe("/user/queue/inbox")
    assert [(await carol.recv()).body for _ in range(2)] == [b"m1", b"m2"]  # the cap keeps the newest
    node_id = node.health()["node"]
    assert get(node, "/api/users/carol")[1] == {
        "user": "carol",
        "online": True,
        "sessions": 1,
        "nodes": {node_id: 1},
    }
    assert get(node, "/api/users")[1] == {"users": ["alice", "carol"]}
    assert get(node, "/api/nodes")[1] == {"nodes": [node_id]}
    status, reply = post(node, "/api/unread", {"user": "carol", "destination": "/queue/other"})
    assert [m["payload"] for m in reply["messages"]] == ["pulled"]
    assert post(node, "/api/unread", {"user": "carol", "destination": "/queue/other"})[1]["messages"] == []
    second = await WsStomp.connect(node.ws_url, "carol")
    await second.subscribe("/user/queue/inbox")
    with pytest.raises(TimeoutError):  # delivered once: nothing replayed to a later session
        await second.recv(0.3)


def get(node, path: str) -> tuple[int, dict]:
    req = urllib.request.Request(node.http_url + path, headers={"Authorization": f"Bearer {API_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
