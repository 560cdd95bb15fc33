"""server.workers: several processes on one config's ports, each a node of the cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.clusterkit import api, nothing_more, wait_ready
from harness.nodes import ROOT, NodeProcess, base_config, deep_merge, free_port, spawn_node
from harness.stompclient import WsStomp
from stompgate.workers import STARTUP_S

pytestmark = pytest.mark.usefixtures("close_ws_clients")


def workers_of(node: NodeProcess) -> list[int]:
    """The supervisor's child processes (from /proc)."""
    pid = node.proc.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def node_ids(node: NodeProcess) -> list[str]:
    return api(node, "GET", "/api/nodes")[1]["nodes"]


def wait_for(check, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.05)


async def test_two_workers_share_the_port_and_reach_each_other(node_factory, bus_config_for) -> None:
    node = node_factory(
        {"node_id": "wk", "server": {"workers": 2}, **bus_config_for("standalone", "directed")}
    )
    started = time.monotonic()
    wait_for(lambda: node_ids(node) == ["wk-w0", "wk-w1"], "both workers registered")
    # A worker registers (through Redis) before its listener is up: wait until both answer.
    answered: set[str] = set()
    wait_for(lambda: answered.add(node.health()["node"]) or len(answered) == 2, "both workers listening")
    for _ in range(10):
        wait_ready(node)  # whichever worker answers

    # The kernel spreads connections over the workers; messages cross them through Redis.
    users = [f"u{i}" for i in range(16)]
    clients = [await WsStomp.connect(node.ws_url, user) for user in users]
    for client in clients:
        await client.subscribe("/user/queue/in")
    homes = {}
    for user in users:
        wait_for(lambda user=user: api(node, "GET", f"/api/users/{user}")[1]["nodes"], f"{user} registered")
        homes[user] = next(iter(api(node, "GET", f"/api/users/{user}")[1]["nodes"]))
    assert set(homes.values()) == {"wk-w0", "wk-w1"}, homes
    for i, client in enumerate(clients):
        await client.publish(
            f"/user/{users[(i + 1) % len(users)]}/queue/in", f"from {users[i]}", receipt=False
        )
    for i, client in enumerate(clients):
        assert (await client.recv()).body == f"from {users[i - 1]}".encode()
        await nothing_more(client, 0.05)
    for client in clients:
        await client.close()

    # A worker that dies is started again, under the same node id.
    pids = workers_of(node)
    assert len(pids) == 2
    await asyncio.sleep(max(0.0, STARTUP_S - (time.monotonic() - started)) + 0.2)
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: len(workers_of(node)) == 2 and pids[0] not in workers_of(node), "a new worker")
    assert "ended (signal SIGKILL); starting it again" in node.log()
    wait_for(lambda: node_ids(node) == ["wk-w0", "wk-w1"], "both workers registered again")
    wait_for(lambda: all(api(node, "GET", "/ready")[0] == 200 for _ in range(6)), "every worker ready")
    alice = await WsStomp.connect(node.ws_url, "alice")
    await alice.subscribe("/user/queue/in")
    for _ in range(6):  # new connections land on both workers, the new one included
        bob = await WsStomp.connect(node.ws_url, "bob")
        await bob.publish("/user/alice/queue/in", "after the restart")
        assert (await alice.recv()).body == b"after the restart"
        await bob.close()

    # SIGTERM to the parent stops every worker; node_factory checks the exit code is 0.
    assert node.stop() == 0
    for pid in pids[1:]:
        wait_for(lambda pid=pid: gone(pid), f"worker {pid} gone")


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # exited, not yet reaped
    except FileNotFoundError:
        return True


def test_a_taken_port_is_an_error_not_a_shared_one(tmp_path: Path, bus_config_for) -> None:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another node's worker would
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        node = spawn_node(
            tmp_path, {"server": {"port": port, "workers": 2}, **bus_config_for("standalone", "directed")}
        )
        assert node.proc.wait(15) == 1
        assert f"cannot start: server.port: 127.0.0.1:{port} is not free" in node.log()


def test_workers_that_cannot_start_stop_the_node(tmp_path: Path, bus_config_for) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def setup(node):\n    raise RuntimeError('no database')\n")
    node = spawn_node(
        tmp_path,
        {"server": {"workers": 2, "extensions": [str(broken)]}, **bus_config_for("standalone", "directed")},
    )
    assert node.proc.wait(20) == 2  # as one process would: no restart loop
    log = node.log()
    assert "server.extensions: " + str(broken) + ": setup(node) failed: RuntimeError('no database')" in log
    assert "while starting; stopping the node" in log


def test_port_zero_from_the_command_line_is_refused(tmp_path: Path, bus_config_for) -> None:
    path = tmp_path / "c.yaml"
    config = deep_merge(
        base_config(free_port(), free_port()),
        {"server": {"workers": 2}, **bus_config_for("standalone", "directed")},
    )
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [sys.executable, "-m", "stompgate", "serve", "--config", str(path), "--port", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )
    assert out.returncode == 2
    assert "server.workers: more than 1 needs fixed ports" in out.stderr


def test_check_config_names_what_workers_need(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "server": {"workers": 3, "port": 0, "sockjs": [{"path": "/sj"}]},
        "auth": {"mode": "dev"},
        "api": {"enabled": False},
    }))
    out = subprocess.run(
        [sys.executable, "-m", "stompgate", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "server.workers: more than 1 needs bus.type redis" in out.stderr
    assert "server.workers: more than 1 cannot serve server.sockjs" in out.stderr
    assert "server.workers: more than 1 needs fixed ports" in out.stderr
