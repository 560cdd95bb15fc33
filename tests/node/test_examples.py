"""The examples in examples/ run as documented against a real node."""

from __future__ import annotations

import os
import subprocess
import sys

from harness.nodes import API_KEY, ROOT, STOMPGATE


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


def test_make_run_config_serves_the_chat_page(tmp_path) -> None:
    """`make run`'s node (the top-level config.yaml, from any directory) serves the seed's page."""
    import time
    import urllib.request

    from harness.nodes import free_port

    port = free_port()
    log = open(tmp_path / "node.log", "wb")
    proc = subprocess.Popen(
        [*STOMPGATE, "serve", "--config", str(ROOT / "config.yaml"), "--port", str(port)],
        cwd=tmp_path,  # paths in the config are relative to the file, not to here
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    (tmp_path / "node.log").read_text()
                )
                time.sleep(0.05)
        with urllib.request.urlopen(base + "/chat/") as resp:
            assert "Chat With STOMP Message" in resp.read().decode()
        for path in (
            "/chat/node_modules/sockjs-client/dist/sockjs.min.js",
            "/chat/node_modules/stompjs/lib/stomp.min.js",
        ):
            with urllib.request.urlopen(base + path) as resp:
                assert resp.status == 200
        with urllib.request.urlopen(base + "/chat-websocket/info") as resp:
            assert b'"websocket":true' in resp.read()
        assert f"at http://127.0.0.1:{port}/chat/" in (tmp_path / "node.log").read_text()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        log.close()
