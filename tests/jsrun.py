"""Run a Node.js scenario script of tests/js and read the one JSON report it prints last."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).resolve().parent / "js"


def run_scenario(
    script: str,
    args: list[str],
    *,
    timeout: float,
    server_log: Callable[[], str] | None = None,
    needs: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The report of ``node script *args``, or a test failure with everything it printed."""
    node_bin = shutil.which("node")
    assert node_bin, "Node.js is needed for these tests: scripts/bootstrap.sh test installs it"
    for package in needs:
        assert (JS_DIR / "node_modules" / package).is_dir(), (
            f"{package} missing: run `npm install` in tests/js"
        )
    proc = subprocess.run(
        [node_bin, script, *args], cwd=JS_DIR, capture_output=True, text=True, timeout=timeout
    )
    lines = proc.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        report = None
    if proc.returncode != 0 or not report or not report.get("ok"):
        log = f"\n--- server log ---\n{server_log()[-4000:]}" if server_log is not None else ""
        pytest.fail(
            f"{script} {' '.join(args)} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}{log}"
        )
    return report
