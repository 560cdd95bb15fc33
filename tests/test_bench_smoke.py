"""bench/run.py --smoke: every benchmark scenario at a low rate on stompgate.

Two nodes on a Redis, the Node load generator of bench/loadgen. It fails when
a message is lost, duplicated or a session fails to open; it never judges
speed (the rates and latencies are printed, for the curious).
"""

from __future__ import annotations

import subprocess
import sys

from .nodes import ROOT


def test_bench_smoke_run_delivers_everything() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    for scenario in ("p2p", "fanout", "idle", "connect"):
        assert f"stompgate {scenario}" in report, report
    assert "lost 0" in report and "SMOKE FAILED" not in report, report
