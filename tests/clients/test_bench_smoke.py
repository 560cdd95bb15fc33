"""bench/run.py --smoke: every benchmark scenario at a low rate on stompgate; and
bench/redis_sizing.py at its smallest.

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


def test_redis_sizing_runs_and_counts_what_it_stored() -> None:
    """bench/redis_sizing.py, tiny: it must run, and a stored message must cost at least its bytes."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "redis_sizing.py"),
         "--users", "5", "--per-user", "2", "--sizes", "1000", "--online", "5"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| 1,000 |"))
    per_message = int(row.split("|")[3].strip().replace(",", ""))
    assert per_message >= 1000, proc.stdout
    assert "Redis bytes per online user" in proc.stdout
