"""Real redis-server processes for the tests and benchmarks: a standalone server or a 3-master Cluster."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from .nodes import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@dataclass
class RedisProcess:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    cluster: bool = False
    cluster_port: int = 0
    # Append-only file, fsync'd on every write: what survives a restart is what a
    # production Redis keeping offline messages would keep.
    persistent: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
        ]
        if self.persistent:
            args[args.index("--appendonly") + 1] = "yes"
            args += ["--appendfsync", "always"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.dir / "nodes.conf"),
                     "--cluster-node-timeout", "2000",
                     # the default bus port is port + 10000, too high for ephemeral ports
                     "--cluster-port", str(self.cluster_port or free_port())]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.port} did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


def start_redis(tmp: Path, persistent: bool = False) -> RedisProcess:
    server = RedisProcess(free_port(), tmp / "redis", persistent=persistent)
    server.start()
    return server


def start_cluster(tmp: Path, masters: int = 3, persistent: bool = False) -> list[RedisProcess]:
    servers = [
        RedisProcess(
            free_port(),
            tmp / f"redis-cluster-{i}",
            cluster=True,
            cluster_port=free_port(),
            persistent=persistent,
        )
        for i in range(masters)
    ]
    for s in servers:
        s.start()
    subprocess.run(
        [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers), "--cluster-yes"],
        check=True, capture_output=True, timeout=30,
    )
    deadline = time.monotonic() + 15
    while True:
        # CLUSTER INFO's raw text; redis-py's execute_command is untyped
        raw = servers[0].client().execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        info = raw.decode()
        if "cluster_state:ok" in info:
            return servers
        if time.monotonic() > deadline:
            raise RuntimeError(f"cluster not ready:\n{info}")
        time.sleep(0.1)
