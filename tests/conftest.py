from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import pytest

from .nodes import NodeProcess, start_node
from .stompclient import WsStomp


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Start stompgate processes; each is stopped with SIGTERM and must exit 0."""
    started: list[NodeProcess] = []

    def make(overrides: dict[str, Any] | None = None, name: str | None = None) -> NodeProcess:
        node = start_node(tmp_path, overrides, name or f"node{len(started) + 1}")
        started.append(node)
        return node

    yield make
    codes = [(n, n.stop()) for n in started]
    for n, code in codes:
        assert code == 0, f"node exited with {code}:\n{n.log()}"


@pytest.fixture
def node(node_factory: Callable[..., NodeProcess]) -> NodeProcess:
    return node_factory()


@pytest.fixture
async def close_ws_clients(node_factory: Callable[..., NodeProcess]) -> AsyncIterator[None]:
    """Close the test's WsStomp clients before its nodes are stopped."""
    yield
    await WsStomp.close_all()
