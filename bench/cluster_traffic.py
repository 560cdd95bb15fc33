"""Bus traffic of the two routing modes: 3 nodes, one Redis, the same user-message load.

    .venv/bin/python bench/cluster_traffic.py [--users 60] [--messages 3000]

For each mode it starts a redis-server and 3 stompgate nodes on free loopback
ports, connects ``users`` users (one session each, spread evenly over the nodes,
every one subscribed to ``/user/queue/in``), and sends ``messages`` user
messages, each from a random user to a random other user, every one with a
RECEIPT. It checks that every message arrived exactly once, then reads each
node's bus counters (``GET /api/stats``) and Redis' network counters, and prints
a markdown table. What it measures is traffic, not speed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.clusterkit import api, wait_ready
from harness.nodes import spawn_node
from harness.redisproc import start_redis
from harness.stompclient import WsStomp
from stompgate.stomp import Frame


def redis_bytes(server) -> tuple[int, int]:
    info = server.client().info("stats")
    return info["total_net_input_bytes"], info["total_net_output_bytes"]


async def run_mode(routing: str, users: int, messages: int, seed: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"stompgate-bench-{routing}-"))
    redis = start_redis(tmp)
    config = {"bus": {"type": "redis", "routing": routing, "redis": {"url": redis.url}}}
    nodes = [spawn_node(tmp, config, f"node{i + 1}") for i in range(3)]
    try:
        for node in nodes:
            node.wait_healthy()
            wait_ready(node)
        names = [f"user{i}" for i in range(users)]
        clients = {}
        for i, name in enumerate(names):
            clients[name] = await WsStomp.connect(nodes[i % 3].ws_url, name)
            await clients[name].subscribe("/user/queue/in")
        before = [api(n, "GET", "/api/stats")[1]["bus"] for n in nodes]
        redis_before = redis_bytes(redis)
        rng = random.Random(seed)
        expected: dict[str, int] = dict.fromkeys(names, 0)
        sent_by: dict[str, int] = dict.fromkeys(names, 0)
        for k in range(messages):
            sender, to = rng.sample(names, 2)
            expected[to] += 1
            sent_by[sender] += 1
            await clients[sender].send(
                Frame("SEND", {"destination": f"/user/{to}/queue/in", "receipt": str(k)}, b"x" * 100)
            )
        # Every recipient's messages and every sender's receipts, counted.
        got: dict[str, int] = dict.fromkeys(names, 0)
        receipts = 0

        async def drain(name: str) -> None:
            nonlocal receipts
            while got[name] < expected[name] or sent_by[name] > 0:
                frame = await clients[name].recv(30)
                if frame.command == "MESSAGE":
                    got[name] += 1
                elif frame.command == "RECEIPT":
                    receipts += 1
                    sent_by[name] -= 1

        await asyncio.gather(*(drain(name) for name in names))
        assert got == expected and receipts == messages, "a message was lost or duplicated"
        await asyncio.sleep(0.5)  # let the other nodes finish counting
        after = [api(n, "GET", "/api/stats")[1]["bus"] for n in nodes]
        redis_after = redis_bytes(redis)
        delta = [{k: a[k] - b[k] for k in a} for a, b in zip(after, before)]
        await WsStomp.close_all()
        return {
            "routing": routing,
            "published": sum(d["published"] for d in delta),
            "received": [d["received"] for d in delta],
            "ignored": [d["ignored"] for d in delta],
            "redis_in": redis_after[0] - redis_before[0],
            "redis_out": redis_after[1] - redis_before[1],
        }
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


def table(results: list[dict], users: int, messages: int) -> str:
    lines = [
        f"{messages} user messages (100-byte bodies) among {users} users, one session each, "
        "spread evenly over 3 nodes sharing one Redis:",
        "",
        "| routing | published | received per node | of which ignored | received / published "
        "| Redis bytes out per message |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        received = sum(r["received"])
        lines.append(
            f"| {r['routing']} | {r['published']} | {' / '.join(map(str, r['received']))} | "
            f"{' / '.join(map(str, r['ignored']))} | {received / r['published']:.2f} | "
            f"{r['redis_out'] / r['published']:.0f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results = [
        await run_mode(mode, args.users, args.messages, args.seed) for mode in ("directed", "broadcast")
    ]
    print(table(results, args.users, args.messages))


if __name__ == "__main__":
    asyncio.run(main())
