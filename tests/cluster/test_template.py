"""MessagingTemplate (sync and async) publishing straight into a real cluster through Redis."""

from __future__ import annotations

import json

import pytest
import yaml

from harness.redisproc import start_redis
from harness.stompclient import WsStomp
from stompgate.template import AsyncMessagingTemplate, MessagingTemplate

from .kit import DEPLOYMENTS, started

pytestmark = pytest.mark.usefixtures("close_ws_clients")


@pytest.fixture
def redis_server(tmp_path):
    server = start_redis(tmp_path)
    yield server
    server.stop()


@pytest.fixture(params=DEPLOYMENTS)
def cluster(request, node_factory, bus_config_for):
    """Two nodes on a standalone Redis or a Redis Cluster, in either routing mode."""
    config = bus_config_for(*request.param)
    nodes = started(node_factory, config, 2)
    return request.param[1], config, nodes


async def test_sync_template_reaches_topics_and_users_on_every_node(cluster) -> None:
    routing, _, (n1, n2) = cluster
    t1 = await WsStomp.connect(n1.ws_url, "ann")
    t2 = await WsStomp.connect(n2.ws_url, "ben")
    for c in (t1, t2):
        await c.subscribe("/topic/news")
    bob = await WsStomp.connect(n2.ws_url, "bob")
    await bob.subscribe("/user/queue/reply")
    with MessagingTemplate.from_config(str(n1.config_path)) as template:
        template.convert_and_send("/topic/news", {"title": "hello"})
        assert template.convert_and_send_to_user("bob", "/queue/reply", "hi bob", {"x-id": 7}) is True
        template.convert_and_send("/user/bob/queue/reply", b"\x00\x01")
    for c in (t1, t2):
        msg = await c.recv()
        assert json.loads(msg.body) == {"title": "hello"}
        assert msg.headers["content-type"] == "application/json"
    first, second = await bob.recv(), await bob.recv()
    assert (first.body, first.headers["x-id"], first.headers["destination"]) == (
        b"hi bob",
        "7",
        "/user/queue/reply",
    )
    assert first.headers["content-type"] == "text/plain;charset=UTF-8"
    assert second.body == b"\x00\x01" and second.headers["content-type"] == "application/octet-stream"


async def test_async_template_stores_for_offline_users(cluster) -> None:
    routing, _, (n1, n2) = cluster
    async with AsyncMessagingTemplate.from_config(str(n1.config_path)) as template:
        assert await template.convert_and_send_to_user("carol", "/queue/inbox", "one") is False
        assert await template.convert_and_send_to_user("carol", "/user/queue/inbox", "two") is False
        carol = await WsStomp.connect(n2.ws_url, "carol")
        await carol.subscribe("/user/queue/inbox")
        assert [(await carol.recv()).body for _ in range(2)] == [b"one", b"two"]
        assert await template.convert_and_send_to_user("carol", "/queue/inbox", "live") is True
        assert (await carol.recv()).body == b"live"


def test_from_config_and_errors(tmp_path, redis_server) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({
        "auth": {"mode": "dev"},
        "api": {"enabled": False},
        "bus": {"type": "redis", "routing": "broadcast", "redis": {"url": redis_server.url}},
    }))
    template = MessagingTemplate.from_config(str(path))
    assert not template.directed
    with pytest.raises(ValueError, match="broker prefix"):
        template.convert_and_send("/app/chat", "x")
    with pytest.raises(ValueError, match="broker prefix"):
        template.convert_and_send_to_user("bob", "/elsewhere", "x")
    template.close()
    memory = tmp_path / "memory.yaml"
    memory.write_text(yaml.safe_dump({"auth": {"mode": "dev"}, "api": {"enabled": False}}))
    with pytest.raises(ValueError, match="needs a Redis bus"):
        MessagingTemplate.from_config(str(memory))
