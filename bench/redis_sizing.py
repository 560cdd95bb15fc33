"""What Redis holds per stored message: the figure docs/operations.md sizes Redis by.

    .venv/bin/python bench/redis_sizing.py [--users 500] [--per-user 10]

Starts a redis-server and one stompgate node (Redis bus) on free loopback ports,
publishes ``per-user`` messages to each of ``users`` offline users through the
HTTP API, for each body size, and reads Redis' ``used_memory`` before and after.
Prints a markdown table: bytes of Redis memory per stored message, and the
figure divided by the message's size on the bus (body plus destination, user
and headers as JSON). Then connects ``online`` users (one subscribed WebSocket
session each) and prints what presence costs Redis per online user, and the
node's resident memory before any session (the process itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.clusterkit import api, wait_ready
from harness.nodes import start_node
from harness.redisproc import start_redis
from harness.stompclient import WsStomp


def used(redis) -> int:  # type: ignore[no-untyped-def]
    return int(redis.client().info("memory")["used_memory"])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def presence(node, redis, online: int) -> float:  # type: ignore[no-untyped-def]
    redis.client().flushall()
    before = used(redis)
    clients = []
    for u in range(online):
        client = await WsStomp.connect(node.ws_url, f"online-{u}")
        await client.subscribe("/user/queue/inbox", "1")
        clients.append(client)
    await asyncio.sleep(3)  # past a presence heartbeat
    after = used(redis)
    for client in clients:
        await client.close()
    return (after - before) / online


def measure(
    users: int, per_user: int, sizes: list[int], online: int
) -> tuple[list[dict[str, float]], float, int]:
    tmp = Path(tempfile.mkdtemp(prefix="stompgate-bench-sizing-"))
    redis = start_redis(tmp)
    node = start_node(tmp, {"bus": {"type": "redis", "redis": {"url": redis.url}}})
    rows = []
    try:
        wait_ready(node)
        process_kb = rss_kb(node.proc.pid)
        for size in sizes:
            redis.client().flushall()
            before = used(redis)
            body = "x" * size
            for u in range(users):
                for _ in range(per_user):
                    status, answer = api(
                        node, "POST", "/api/send-to-user",
                        {"user": f"sizing-{size}-{u}", "destination": "/queue/inbox", "payload": body},
                    )  # fmt: skip
                    assert status == 200 and answer == {"delivered": 0}, (status, answer)
            after = used(redis)
            count = users * per_user
            on_bus = len(json.dumps({"destination": "/user/queue/inbox", "user": f"sizing-{size}-0",
                                     "headers": {"content-type": "text/plain"}, "body": body}))  # fmt: skip
            per = (after - before) / count
            rows.append({"size": size, "messages": count, "per_message": per, "on_bus": on_bus})
        per_online = asyncio.run(presence(node, redis, online))
    finally:
        node.stop()
        redis.stop()
    return rows, per_online, process_kb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--online", type=int, default=500)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, per_online, process_kb = measure(args.users, args.per_user, sizes, args.online)
    print("| body bytes | messages stored | Redis bytes per message | size on the bus | ratio |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['size']:,} | {row['messages']:,} | {row['per_message']:,.0f} | "
            f"{row['on_bus']:,} | {row['per_message'] / row['on_bus']:.2f} |"
        )
    print(f"\npresence: {per_online:,.0f} Redis bytes per online user ({args.online:,} users)")
    print(f"node process before any session: {process_kb / 1024:,.0f} MB resident")


if __name__ == "__main__":
    main()
