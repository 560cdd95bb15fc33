"""What the node's own TLS costs: memory per idle session, and sessions opened per second.

    .venv/bin/python bench/tls_cost.py [--sessions 2000]   # prints a markdown table (docs/tls.md)

Two nodes of the same config, one with ``server.tls`` (an ECDSA P-256
certificate from harness/certs.py), one without. On each, ``--sessions`` STOMP
sessions over WebSocket are opened (50 at a time) and subscribed, then held
idle; the node's resident memory before and after gives the cost per session.
The client (``websockets``, in this process) shares the machine's cores with the
node, so the rate is what one client process gets from one node, not the
node's ceiling; what matters is the ratio of the two rows.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.certs import Pki
from harness.nodes import NodeProcess, spawn_node
from harness.stompclient import WsStomp

CONCURRENCY = 50


def resident_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_sessions(
    node: NodeProcess, count: int, tls: ssl.SSLContext | None
) -> tuple[list[WsStomp], float]:
    clients: list[WsStomp] = []
    kw = {"ssl": tls} if tls else {}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with gate:
            client = await WsStomp.open(node.ws_url, ping_interval=None, **kw)
            await client.send_raw(f"CONNECT\naccept-version:1.2\nlogin:u{i}\nheart-beat:0,0\n\n\x00")
            assert (await client.recv(30)).command == "CONNECTED"
            await client.subscribe("/user/queue/in")
            clients.append(client)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return clients, time.perf_counter() - start


async def measure(node: NodeProcess, sessions: int, tls: ssl.SSLContext | None) -> dict[str, float]:
    await asyncio.sleep(0.5)
    before = resident_kb(node.proc.pid)
    clients, elapsed = await open_sessions(node, sessions, tls)
    await asyncio.sleep(1.0)
    after = resident_kb(node.proc.pid)
    for client in clients:
        await client.close()
    return {"kb_per_session": (after - before) / sessions, "sessions_per_s": sessions / elapsed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pki = Pki(Path(tmp) / "pki")
        variants = [("plain (ws://)", {}), ("TLS (wss://)", {"server": {"tls": pki.server_config()}})]
        for name, extra in variants:
            node = spawn_node(Path(tmp), {"logging": {"level": "warning"}, **extra}, name.split()[0])
            node.ssl_context = pki.client_context() if extra else None
            try:
                node.wait_healthy()
                result = await measure(node, args.sessions, node.ssl_context)
            finally:
                node.stop()
            rows.append((name, result))
    print(f"{args.sessions} idle sessions, {platform.python_implementation()} {platform.python_version()}, "
          f"{ssl.OPENSSL_VERSION}\n")  # fmt: skip
    print("| listener | resident memory per idle session | sessions opened per second (50 at a time) |")
    print("|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['kb_per_session']:.1f} KB | {r['sessions_per_s']:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
