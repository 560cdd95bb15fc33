"""bench/run.py --smoke: every benchmark scenario at a low rate on stompgate.

Two nodes on a Redis, the Node load generator of bench/loadgen. It fails when
a message is lost, duplicated or a session fails to open; it never judges
speed (the rates and latencies are printed, for the curious).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.nodes import ROOT


def test_bench_smoke_run_delivers_everything(tmp_path: Path) -> None:
    results_file = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--json", str(results_file)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    results = json.loads(results_file.read_text())["stompgate"]
    assert sorted(results) == ["connect", "fanout", "idle", "p2p"], report
    for scenario, r in results.items():
        assert r["ok"], (scenario, r)
        for loss in ("lost", "duplicates", "failed", "send_failed", "dropped_sessions"):
            assert r.get(loss, 0) == 0, (scenario, loss, r)
    assert results["p2p"]["delivered"] > 0 and results["fanout"]["delivered"] > 0, results
    assert results["idle"]["sessions"] > 0 and results["connect"]["count"] > 0, results
