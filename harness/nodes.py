"""Start real stompgate node processes for the tests and the benchmarks, on free loopback ports."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-api-key"


def _local_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _local_port_range()
_handed_out: set[int] = set()


# How the tests and benchmarks start a node: this interpreter, the package as a module.
STOMPGATE = [sys.executable, "-m", "stompgate"]


def free_port() -> int:
    """A free loopback port below the ephemeral range.

    Ports from bind(0) come from the ephemeral range, where the outgoing
    connections of other processes (Redis clients, WebSocket clients) may take
    them before a node started in parallel binds them. Ports below it are only
    ever taken on purpose. Each is handed out once per process (test or benchmark run).
    """
    low = 20000 if _EPHEMERAL[0] > 21000 else 1024
    high = min(_EPHEMERAL[0], 65536) if _EPHEMERAL[0] > 21000 else 65536
    for _ in range(1000):
        port = random.randrange(low, high)
        if port in _handed_out or _EPHEMERAL[0] <= port <= _EPHEMERAL[1]:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def base_config(port: int, tcp_port: int) -> dict[str, Any]:
    return {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "websocket_paths": ["/ws", "/chat-websocket"],
            "tcp": {"enabled": True, "host": "127.0.0.1", "port": tcp_port},
            # SIGTERM drains (stompgate/drain.py): quickly here, so that stopping stays fast.
            "drain_s": 0.5,
        },
        "auth": {"mode": "dev"},
        "api": {"key": API_KEY},
        "logging": {"level": "info"},
        # Each scrape built afresh, so that a test sees what it just did (metrics.cache_s).
        "metrics": {"cache_s": 0},
    }


@dataclass
class NodeProcess:
    """A running ``stompgate serve`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    tcp_port: int
    config_path: Path
    log_path: Path
    config: dict[str, Any] = field(default_factory=dict)
    killed: bool = False
    # With server.tls: how the harness's own requests (health) trust the node (harness/certs.py).
    ssl_context: ssl.SSLContext | None = None

    @property
    def tls(self) -> bool:
        return bool(self.config.get("server", {}).get("tls", {}).get("certificate"))

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.http_url + "/health", timeout=2, context=self.ssl_context) as resp:
            health: dict[str, Any] = json.loads(resp.read())
            return health

    @property
    def id(self) -> str:
        return str(self.config["node_id"]) if "node_id" in self.config else self.health()["node"]

    def kill(self) -> None:
        """SIGKILL: the node dies without a word to Redis or its clients."""
        self.killed = True
        self.proc.kill()
        self.proc.wait(5)

    def wait_healthy(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stompgate exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.health()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"stompgate did not become healthy:\n{self.log()}")

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_node(tmp_path: Path, overrides: dict[str, Any] | None = None, name: str = "node") -> NodeProcess:
    node = spawn_node(tmp_path, overrides, name)
    node.wait_healthy()
    return node


def spawn_node(tmp_path: Path, overrides: dict[str, Any] | None = None, name: str = "node") -> NodeProcess:
    """Start the process without waiting for it (start several, then wait for each)."""
    port, tcp_port = free_port(), free_port()
    config = deep_merge(base_config(port, tcp_port), overrides or {})
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOMPGATE_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*STOMPGATE, "serve", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
    return NodeProcess(
        proc, config["server"]["port"], config["server"]["tcp"]["port"], config_path, log_path, config
    )
