"""What the cluster tests share besides harness/: the deployments every scenario runs in."""

from __future__ import annotations

from typing import Any

import pytest

from harness.clusterkit import wait_ready
from harness.nodes import NodeProcess

# (Redis deployment, routing mode): every cluster scenario runs in all four.
DEPLOYMENTS = [
    pytest.param(("standalone", "directed"), id="standalone-directed"),
    pytest.param(("standalone", "broadcast"), id="standalone-broadcast"),
    pytest.param(("cluster", "directed"), id="cluster-directed"),
    pytest.param(("cluster", "broadcast"), id="cluster-broadcast"),
]


def started(node_factory: Any, config: dict[str, Any], count: int) -> list[NodeProcess]:
    """``count`` nodes on ``config``, started side by side, each ready (Redis reached)."""
    nodes: list[NodeProcess] = node_factory.many(count, config)
    for node in nodes:
        wait_ready(node)
    return nodes
