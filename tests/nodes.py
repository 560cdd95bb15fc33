"""Start real stompgate node processes for tests, on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        },
        "auth": {"mode": "dev"},
        "api": {"key": API_KEY},
        "logging": {"level": "info"},
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

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.http_url + "/health", timeout=2) as resp:
            return json.loads(resp.read())

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
    port, tcp_port = free_port(), free_port()
    config = deep_merge(base_config(port, tcp_port), overrides or {})
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOMPGATE_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stompgate", "serve", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
    node = NodeProcess(proc, config["server"]["port"], config["server"]["tcp"]["port"], config_path, log_path, config)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stompgate exited with {proc.returncode}:\n{node.log()}")
        try:
            node.health()
            return node
        except OSError:
            time.sleep(0.05)
    node.stop()
    raise RuntimeError(f"stompgate did not become healthy:\n{node.log()}")
