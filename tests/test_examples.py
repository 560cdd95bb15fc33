"""The examples in examples/ run as documented against a real node."""

from __future__ import annotations

import os
import subprocess
import sys

from .nodes import API_KEY, ROOT


def run(cmd: list[str], node, cwd=ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "STOMPGATE_PORT": str(node.port), **env}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=30)


def test_stomppy_example(node) -> None:
    result = run([sys.executable, "examples/stomppy_chat.py"], node)
    assert result.returncode == 0, result.stderr
    assert "bob got \"hi bob, it's alice\" on /user/queue/chat" in result.stdout


def test_stompjs_example(node) -> None:
    result = run(["node", "../../examples/stompjs_chat.js"], node, cwd=ROOT / "tests" / "js")
    assert result.returncode == 0, result.stderr
    assert "bob got \"hi bob, it's alice\" on /user/queue/chat" in result.stdout


def test_publish_example(node) -> None:
    result = run(["sh", "examples/publish.sh"], node, KEY=API_KEY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['{"delivered":', "0}", '{"delivered":', "0}"]
