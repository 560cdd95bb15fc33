from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.clusterkit import FAST
from harness.nodes import NodeProcess, spawn_node
from harness.redisproc import RedisProcess, start_cluster, start_redis
from harness.stompclient import WsStomp

from .sockjsecho import EchoServer, start_echo_server


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Start stompgate processes; each is stopped with SIGTERM and must exit 0."""
    started: list[NodeProcess] = []

    def make(overrides: dict[str, Any] | None = None, name: str | None = None) -> NodeProcess:
        node = spawn_node(tmp_path, overrides, name or f"node{len(started) + 1}")
        started.append(node)
        node.wait_healthy()
        return node

    def many(count: int, overrides: dict[str, Any] | None = None) -> list[NodeProcess]:
        """Several nodes started side by side (a cluster comes up faster)."""
        nodes = []
        for _ in range(count):
            nodes.append(spawn_node(tmp_path, overrides, f"node{len(started) + 1}"))
            started.append(nodes[-1])
        for node in nodes:
            node.wait_healthy()
        return nodes

    make.many = many  # type: ignore[attr-defined]

    yield make
    codes = [(n, n.stop()) for n in started]
    for n, code in codes:
        assert n.killed or code == 0, f"node exited with {code}:\n{n.log()}"


@pytest.fixture
def node(node_factory: Callable[..., NodeProcess]) -> NodeProcess:
    return node_factory()


@pytest.fixture
async def close_ws_clients(node_factory: Callable[..., NodeProcess]) -> AsyncIterator[None]:
    """Close the test's WsStomp clients before its nodes are stopped."""
    yield
    await WsStomp.close_all()


@pytest.fixture(scope="session")
def sockjs_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoServer]:
    """tests/sockjs_echo_server.py (the four services of the SockJS protocol suite)."""
    server = start_echo_server(tmp_path_factory.mktemp("sockjs-echo"))
    yield server
    server.stop()


_prefixes = itertools.count()


@pytest.fixture(scope="session")
def standalone_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One redis-server for the cluster tests; each test has its own key prefix."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisProcess]]:
    """A 3-master Redis Cluster made with redis-cli --cluster create."""
    servers = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def bus_config_for(request: pytest.FixtureRequest) -> Callable[[str, str], dict[str, Any]]:
    """Node config overrides for a deployment ("standalone" or "cluster") and routing mode."""

    def make(deployment: str, routing: str) -> dict[str, Any]:
        if deployment == "standalone":
            redis: dict[str, Any] = {"url": request.getfixturevalue("standalone_redis").url}
        else:
            redis = {
                "cluster_nodes": [f"127.0.0.1:{s.port}" for s in request.getfixturevalue("redis_cluster")]
            }
        redis["prefix"] = f"test{next(_prefixes)}"
        return {"bus": {"type": "redis", "routing": routing, "redis": redis, **FAST}}

    return make
