"""stompgate and its peers under the same load, side by side, in one run.

    .venv/bin/python bench/run.py                 # every scenario and target; writes docs/benchmarks.md
    .venv/bin/python bench/run.py --smoke         # each scenario at a low rate on stompgate: delivery only
    .venv/bin/python bench/run.py --targets stompgate,echo --scenarios p2p
    .venv/bin/python bench/run.py --quick --targets echo --scenarios p2p --out /tmp/check.md

Targets, all on loopback ports of this machine:
- stompgate: two nodes sharing a Redis (directed routing), dev login;
- stompgate-1node, stompgate-1node-2workers: one node on that Redis, with one
  process or with two (server.workers), for what workers give a single node;
- rabbitmq:  a private RabbitMQ node with Web-STOMP (bench/peers/rabbitmq.py);
- socketio:  two python-socketio nodes on aiohttp sharing a Redis (AsyncRedisManager);
- echo:      a bare aiohttp WebSocket echo server, the floor for a Python server.

The load comes from bench/loadgen (Node, raw `ws`), the same for every target.
p2p and fanout sweep the offered rate and keep the highest one sustained: every
message delivered once, no session closed by the server and no send failed, the
delivered rate within 5 % of the offered one, the generator on its schedule at
the end, and p99 latency under the scenario's bound. The log says why a step
failed. A sweep goes past its planned rates until the limit is bracketed
(bench/sweep.py): below the lowest rate when that fails (halving, down to a
floor), above the highest when that passes (x1.25, up to the generator's
ceiling). The table says for each figure which rate failed next, or that it is
at the generator's ceiling (the limit is there or higher, unmeasured). --quick runs the
same rates with short steps, to check the machinery, not for the table in
docs/benchmarks.md. idle holds N subscribed sessions and
reads the server's resident memory; connect opens sessions as fast as they come.
Each scenario starts the target's servers afresh.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sweep import UNSUPPORTED, SweepPlan, bound_note, run_sweep  # noqa: E402
from harness.nodes import free_port  # noqa: E402
from harness.redisproc import start_redis  # noqa: E402

LOADGEN = ROOT / "bench" / "loadgen" / "run.js"
PEERS = ROOT / "bench" / "peers"
PY = sys.executable

P99_BOUND_MS = {"p2p": 50.0, "fanout": 100.0}
ANALYSIS = "<!-- analysis: kept across runs of bench/run.py -->"


# ----------------------------------------------------------------- processes


@dataclass
class Target:
    """A running system under test: its load-generator config and its server processes."""

    name: str
    config: dict[str, Any]
    pids: Callable[[], list[int]]
    stop: Callable[[], None]
    notes: list[str] = field(default_factory=list)


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer") from None
            time.sleep(0.05)


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True
    )


def terminate(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def start_stompgate(work: Path, nodes: int = 2, workers: int = 1) -> Target:
    redis = start_redis(work / "redis-stompgate")
    procs, urls = [], []
    for i in range(nodes):
        port = free_port()
        config = {
            "node_id": f"bench{i + 1}",
            "server": {"port": port, "websocket_paths": ["/ws"], "workers": workers},
            "stomp": {"heartbeat": {"send_ms": 0, "receive_ms": 0}},
            "auth": {"mode": "dev"},
            "api": {"enabled": False},
            "bus": {"type": "redis", "routing": "directed", "redis": {"url": redis.url, "prefix": "bench"}},
            "logging": {"level": "warning"},
        }
        path = work / f"stompgate{i + 1}.yaml"
        path.write_text(yaml.safe_dump(config))
        procs.append(
            spawn([PY, "-m", "stompgate", "serve", "--config", str(path)], work / f"stompgate{i + 1}.log")
        )
        urls.append(f"ws://127.0.0.1:{port}/ws")
    for proc, url in zip(procs, urls):
        wait_http(url.replace("ws://", "http://").replace("/ws", "/health"), proc)

    def stop() -> None:
        terminate(procs)
        redis.stop()

    return Target(
        "stompgate",
        {"kind": "stomp", "urls": urls},
        lambda: [p.pid for p in procs] + ([redis.proc.pid] if redis.proc else []),
        stop,
        [
            f"{nodes} node{'s' if nodes > 1 else ''}"
            f"{f' of {workers} worker processes' if workers > 1 else ''}, "
            f"Redis {redis_version()}, directed routing"
        ],
    )


def start_socketio(work: Path, nodes: int = 2) -> Target:
    redis = start_redis(work / "redis-socketio")
    procs, urls = [], []
    for i in range(nodes):
        port = free_port()
        procs.append(
            spawn(
                [PY, str(PEERS / "socketio_node.py"), "--port", str(port), "--redis", redis.url],
                work / f"socketio{i + 1}.log",
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    for proc, url in zip(procs, urls):
        wait_http(url + "/health", proc)

    def stop() -> None:
        terminate(procs)
        redis.stop()

    return Target(
        "socketio",
        {"kind": "socketio", "urls": urls},
        lambda: [p.pid for p in procs] + ([redis.proc.pid] if redis.proc else []),
        stop,
        [f"python-socketio {package_version('python-socketio')}, {nodes} nodes, AsyncRedisManager"],
    )


def start_echo(work: Path) -> Target:
    port = free_port()
    proc = spawn([PY, str(PEERS / "ws_echo.py"), "--port", str(port)], work / "echo.log")
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return Target(
        "echo",
        {"kind": "echo", "urls": [f"ws://127.0.0.1:{port}/ws"]},
        lambda: [proc.pid],
        lambda: terminate([proc]),
        ["aiohttp WebSocket echo, one process"],
    )


def start_rabbitmq(work: Path) -> Target:
    sys.path.insert(0, str(PEERS))
    from rabbitmq import RabbitMQ  # bench/peers/rabbitmq.py

    port = free_port()
    rabbit = RabbitMQ(work / "rabbitmq", amqp_port=free_port(), web_stomp_port=port, dist_port=free_port())
    rabbit.start()
    return Target(
        "rabbitmq",
        {"kind": "rabbitmq", "urls": [f"ws://127.0.0.1:{port}/ws"], "login": "guest", "passcode": "guest"},
        lambda: rabbit_pids(rabbit),
        rabbit.stop,
        [f"RabbitMQ {rabbitmq_version()} Web-STOMP, one node"],
    )


def rabbit_pids(rabbit: Any) -> list[int]:
    return list(rabbit.pids())  # the rabbitmq-server shell and its Erlang VM


STARTERS: dict[str, Callable[[Path], Target]] = {
    "stompgate": start_stompgate,
    # What server.workers gives one node: the same load on one node, one or two processes.
    "stompgate-1node": lambda work: start_stompgate(work, nodes=1),
    "stompgate-1node-2workers": lambda work: start_stompgate(work, nodes=1, workers=2),
    "rabbitmq": start_rabbitmq,
    "socketio": start_socketio,
    "echo": start_echo,
}


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split("v=")[1].split()[0] if "v=" in out else "?"


def rabbitmq_version() -> str:
    """The Debian package's version (rabbitmq-server 3.10.8-1.1 -> 3.10.8), "?" when unknown."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"], capture_output=True, text=True
        ).stdout
    except OSError:
        return "?"
    return out.split("-")[0] or "?"


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def tree_rss_kb(pids: list[int]) -> int:
    """Resident memory of these processes and all their descendants, in KiB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    seen, stack, total = set(), list(pids), 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# -------------------------------------------------------------------- loadgen


def loadgen(scenario: str, config: dict[str, Any], timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        ["node", str(LOADGEN), scenario, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=LOADGEN.parent,
    )
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"no result (exit {proc.returncode}): {proc.stderr[-800:]}"}
    return json.loads(lines[-1])


def shortfall(result: dict[str, Any], scenario: str) -> str | None:
    """Why this step does not count as sustained (None when it does). Every loss and
    failure counts: a closed session or a failed send is not "within 5 %"."""
    if not result.get("ok"):
        return f"failed: {result.get('error')}"
    bound = P99_BOUND_MS[scenario]
    offered = result["offered_rate"] * (result.get("subscribers", 1) if scenario == "fanout" else 1)
    checks = [
        (result.get("lost", 0), "lost"),
        (result.get("duplicates", 0), "duplicated"),
        (result.get("send_failed", 0), "sends on closed sessions"),
        (result.get("dropped_sessions", 0), "sessions closed by the server"),
    ]
    for count, what in checks:
        if count:
            return f"{count} {what}"
    if result["delivered_rate"] < 0.95 * offered:
        return f"delivered {result['delivered_rate']:,.0f}/s of {offered:,.0f}/s offered"
    if result.get("send_lag_end_ms", 0) > bound:  # the generator did not offer the load on time
        return f"the generator fell {result['send_lag_end_ms']:.0f} ms behind its schedule"
    if result["p99_ms"] >= bound:
        return f"p99 {result['p99_ms']:.1f} ms >= {bound:.0f} ms"
    return None


def sustained(result: dict[str, Any], scenario: str) -> bool:
    return shortfall(result, scenario) is None


def sweep(
    target: Target, scenario: str, plan: SweepPlan, shape: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    """The highest offered rate sustained, with its result and where the limit lies
    (bench/sweep.py: bracketed by the next rate, which failed, or the generator's ceiling)."""

    def step(rate: int) -> tuple[dict[str, Any], str | None]:
        config = {"target": target.config, "rate": rate, **shape}
        result = loadgen(scenario, config, timeout=shape.get("duration_s", 10) + 90)
        if not result.get("ok") and result.get("error") == UNSUPPORTED:
            return result, UNSUPPORTED
        why = shortfall(result, scenario)
        verdict = f"; not sustained: {why}" if why else ""
        log(f"  {target.name} {scenario} @ {rate}/s: {summary(result)}{verdict}")
        return result, why

    return run_sweep(plan, step, log)


def summary(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"failed: {r.get('error')}"
    return (
        f"delivered {r.get('delivered_rate', 0):,.0f}/s, lost {r.get('lost', 0)}, "
        f"p50 {r.get('p50_ms', 0):.1f} ms, p99 {r.get('p99_ms', 0):.1f} ms, max {r.get('max_ms', 0):.1f} ms"
    )


# ------------------------------------------------------------------ the run


# The generator's ceilings, from bench/loadgen/README.md's CPU figures for its two
# worker processes (procs: 2) each near a full core on this 2-core machine: about
# 60,000 p2p msg/s (one process: ~96 % of a core at 30,000 echo msg/s) and 400
# fan-out publishes/s to 1,000 subscribers (two processes: ~47 % each at 200,000
# deliveries/s). A sweep never offers more: past them the generator, not the
# target, would set the figure.
FULL = {
    "p2p": (
        SweepPlan(
            steps=(1000, 2000, 3000, 5000, 8000, 10000, 15000, 20000, 25000, 30000, 40000),
            floor=100,
            ceiling=60000,
        ),
        {"users": 200, "duration_s": 8, "warmup_s": 2, "procs": 2},
    ),
    "fanout": (
        SweepPlan(steps=(10, 20, 50, 100, 150, 200, 300), floor=1, ceiling=400),
        {"subscribers": 1000, "duration_s": 8, "warmup_s": 2, "procs": 2},
    ),
    "idle": (None, {"sessions": 20000, "hold_s": 60}),
    "connect": (None, {"count": 3000, "concurrency": 100}),
}
# --quick: FULL's rates with short steps (the sweep's logic, not its figures).
QUICK_STEP = {"duration_s": 3, "warmup_s": 1}
SMOKE = {
    "p2p": (SweepPlan.single(200), {"users": 20, "duration_s": 2, "warmup_s": 1}),
    "fanout": (SweepPlan.single(20), {"subscribers": 50, "duration_s": 2, "warmup_s": 1}),
    "idle": (None, {"sessions": 300, "hold_s": 10}),
    "connect": (None, {"count": 200, "concurrency": 20}),
}


def run_idle(target: Target, shape: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Open the sessions, read the servers' memory while they are held, release them."""
    time.sleep(1)
    before = tree_rss_kb(target.pids())
    proc = subprocess.Popen(
        ["node", str(LOADGEN), "idle", json.dumps({"target": target.config, **shape})],
        cwd=LOADGEN.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    ready: dict[str, Any] | None = None
    for line in proc.stdout:
        if line.startswith("{"):
            data = json.loads(line)
            if data.get("phase") == "ready":
                ready = data
                break
            proc.wait(10)
            return data  # failed before being ready
    time.sleep(2)  # let allocations settle
    held = tree_rss_kb(target.pids())
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=120)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"ok": False, "error": err[-500:]}
    if ready is not None and result.get("ok"):
        sessions = max(1, result["sessions"])  # the ones opened: failed ones are not in it
        result["rss_before_mb"] = before / 1024
        result["rss_held_mb"] = held / 1024
        result["kb_per_session"] = (held - before) / sessions
    log(f"  {target.name} idle: {result}")
    return result


def measure(
    target: Target,
    plan: dict[str, Any],
    scenarios: list[str],
    log: Callable[[str], None],
    smoke: bool = False,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for scenario in scenarios:
        rates, shape = plan[scenario]
        if smoke and rates:  # one low rate, judged on delivery alone, never on timing
            rate = rates.steps[0]  # a SweepPlan.single
            result = loadgen(scenario, {"target": target.config, "rate": rate, **shape}, timeout=120)
            log(f"  {target.name} {scenario} @ {rate}/s: {summary(result)}")
            results[scenario] = result
        elif scenario == "idle":
            results[scenario] = run_idle(target, shape, log)
        elif scenario == "connect":
            result = loadgen("connect", {"target": target.config, **shape}, timeout=300)
            log(f"  {target.name} connect: {result}")
            results[scenario] = result
        else:
            results[scenario] = sweep(target, scenario, rates, shape, log)
    return results


def cell(scenario: str, r: dict[str, Any] | None) -> str:
    if not r:
        return "not run"
    if not r.get("ok"):
        return "n/a" if r.get("error") == UNSUPPORTED else f"failed ({str(r.get('error'))[:100]})"
    if scenario in ("p2p", "fanout"):
        unit = "msg/s" if scenario == "p2p" else "deliveries/s"
        # Where the limit lies: between this rate and the next, which failed, or at or
        # above the generator's ceiling (then a ratio against it is a lower bound).
        return (
            f"**{r['delivered_rate']:,.0f}** {unit} "
            f"(p50 {r['p50_ms']:.1f} / p99 {r['p99_ms']:.1f} / max {r['max_ms']:.0f} ms; "
            f"*{bound_note(r)}*)"
        )
    if scenario == "idle":
        failed = f", {r['failed']} failed to open" if r.get("failed") else ""
        return f"**{r.get('kb_per_session', 0):.1f}** KB/session ({r['sessions']} sessions{failed})"
    return f"**{r['rate']:,.0f}** sessions/s (p99 {r.get('p99_ms', 0):.0f} ms, {r.get('failed', 0)} failed)"


def write_table(
    path: Path,
    results: dict[str, dict[str, Any]],
    targets: list[Target],
    scenarios: list[str],
    command: str,
    plan: dict[str, Any],
) -> None:
    names = [t.name for t in targets]
    rows = [
        "| scenario | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    labels = {
        "p2p": "p2p: 200 users, random user-to-user messages (highest sustained, p99 < 50 ms, no loss)",
        "fanout": "fanout: 1 publisher, 1,000 subscribers of one topic (p99 < 100 ms, no loss)",
        "idle": "idle: subscribed sessions held open, resident memory per session",
        "connect": "connect: WebSocket handshake + CONNECT + SUBSCRIBE with receipt",
    }
    for scenario in scenarios:
        rows.append(
            f"| {labels[scenario]} | "
            + " | ".join(cell(scenario, results[n].get(scenario)) for n in names)
            + " |"
        )
    setup = "\n".join(f"- **{t.name}**: {'; '.join(t.notes)}" for t in targets)
    swept = [s for s in scenarios if s in ("p2p", "fanout")]
    ceilings = ", ".join(
        f"{s} {plan[s][0].ceiling:,} {'msg' if s == 'p2p' else 'publishes'}/s" for s in swept
    )
    sweeps = (
        f"""
p2p and fanout: the highest offered rate sustained. A sweep goes past its planned
rates until the limit is bracketed: *bracketed* names the next rate, which failed,
and why (the limit lies between the two); *at the generator's ceiling* means the
sweep reached the highest rate the load generator is trusted to offer here
({ceilings}) and passed: the target's limit is there or higher, unmeasured, and a
ratio against that figure is a lower bound.
"""
        if swept
        else ""
    )
    text = f"""# Benchmarks

Measured in one run on this machine ({os.cpu_count()} cores, Python {platform.python_version()},
Node {node_version()}), load generator included, all on loopback:

```sh
{command}
```

{chr(10).join(rows)}
{sweeps}
{setup}

How it is measured: bench/run.py (see its docstring) and bench/loadgen/README.md.
"""
    # What was written by hand after the marker (targets, profiles) survives a new run.
    old = path.read_text() if path.exists() else ""
    if ANALYSIS in old:
        text += "\n" + old[old.index(ANALYSIS) :]
    path.write_text(text)


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--targets", default="stompgate,stompgate-1node,stompgate-1node-2workers,rabbitmq,socketio,echo"
    )
    parser.add_argument("--scenarios", default="p2p,fanout,idle,connect")
    parser.add_argument(
        "--smoke", action="store_true", help="low rates on stompgate, exit 1 if anything was lost"
    )
    parser.add_argument(
        "--quick", action="store_true", help="the full sweeps with 3 s steps; needs --out (not for the docs)"
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--json", help="also write every result, as the generator gave it, to this file")
    args = parser.parse_args()
    if shutil.which("node") is None or not (LOADGEN.parent / "node_modules").is_dir():
        print(
            "bench: Node.js and `npm install` in bench/loadgen are needed (scripts/bootstrap.sh test)",
            file=sys.stderr,
        )
        return 2
    if args.quick and args.out == parser.get_default("out"):
        parser.error("--quick figures do not belong in docs/benchmarks.md: give --out")
    plan = SMOKE if args.smoke else FULL
    if args.quick and not args.smoke:
        plan = {name: (rates, {**shape, **QUICK_STEP}) for name, (rates, shape) in FULL.items()}
    names = (
        ["stompgate"]
        if args.smoke and args.targets == parser.get_default("targets")
        else args.targets.split(",")
    )
    scenarios = args.scenarios.split(",")
    results: dict[str, dict[str, Any]] = {}
    targets: list[Target] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="stompgate-bench-") as tmp:
        for name in names:
            results[name] = {}
            # A fresh target for each scenario: what an overloaded sweep step left
            # behind (backlogs, a grown heap) must not weigh on the next scenario.
            for scenario in scenarios:
                work = Path(tmp) / f"{name}-{scenario}"
                work.mkdir()
                print(f"{name}: starting for {scenario}", flush=True)
                target = STARTERS[name](work)
                target.name = name  # the column: one starter may serve several (stompgate-1node)
                if scenario == scenarios[0]:
                    targets.append(target)
                try:
                    results[name].update(
                        measure(target, plan, [scenario], lambda line: print(line, flush=True), args.smoke)
                    )
                finally:
                    target.stop()
            for scenario, r in results[name].items():
                if r.get("error") == "unsupported":  # e.g. fan-out on the echo server
                    continue
                losses = ("lost", "duplicates", "failed", "send_failed", "dropped_sessions")
                if args.smoke and (not r.get("ok") or any(r.get(key, 0) for key in losses)):
                    print(f"SMOKE FAILED: {name} {scenario}: {r}", flush=True)
                    failed = True
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.smoke:
        command = "      .venv/bin/python bench/run.py" + (
            "" if args.targets == parser.get_default("targets") else f" --targets {args.targets}"
        )
        if args.quick:
            command += " --quick"
        write_table(Path(args.out), results, targets, scenarios, command.strip(), plan)
        print(f"written: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
