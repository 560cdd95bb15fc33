"""Start tests/sockjs_echo_server.py as a process on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.nodes import ROOT, free_port

HOST = "127.0.0.1"


@dataclass
class EchoServer:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def http(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def ws(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_echo_server(log_dir: Path) -> EchoServer:
    """The server, answering ``GET /echo``; raises with its log if it does not come up in 20 s."""
    port = free_port()
    log_path = log_dir / "sockjs-echo.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.sockjs_echo_server", "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = EchoServer(port, proc, log_path)
    deadline = time.monotonic() + 20
    while not _answers_200(server.http("/echo")):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"the SockJS echo server did not start (exit {proc.returncode}):\n{server.log()}"
            )
        time.sleep(0.05)
    return server
