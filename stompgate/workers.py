"""Several worker processes on one config's ports, so that a node uses every core.

Each worker is a node of the cluster in its own right (node id ``<id>-w<i>``):
what crosses workers goes through Redis exactly as what crosses hosts does, so
nothing here knows about STOMP. The kernel spreads new connections over the
workers (``SO_REUSEPORT``). The parent only starts the workers, starts again
one that dies, and passes SIGTERM/SIGINT on, and SIGHUP (each worker reads
its TLS files again).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress

from .config import Config
from .logs import label_worker, set_node

log = logging.getLogger("stompgate")

# A worker that exits this soon after its start failed to start (a port taken,
# a broken extension): starting it again would fail the same way.
STARTUP_S = 5.0


def supervise(config: Config, run_worker: Callable[[Config], int], log_format: str) -> int:
    """Run ``config.server.workers`` workers until a signal; the exit code of the node."""
    taken = _ports_taken(config)
    if taken:
        log.error("cannot start: %s", taken)
        return 1
    base_id = config.node_id or secrets.token_hex(4)
    set_node(base_id)  # the supervisor's own lines
    metrics_dir, made_dir = _metrics_dir(config) if config.metrics.enabled else (None, False)
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, start time)
    stopping = False
    exit_code = 0

    def spawn(index: int) -> None:
        worker = dataclasses.replace(config, node_id=f"{base_id}-w{index}")
        pid = os.fork()
        if pid == 0:  # the worker: no event loop or thread exists yet in the parent
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's node handles it
            label_worker(index, worker.node_id or base_id, log_format)
            code = 1
            try:
                code = run_worker(worker)
            except BaseException:  # reported, then the worker ends
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = (index, time.monotonic())

    def stop(signum: int, _frame: object) -> None:
        # Each worker drains on the first signal (server.drain_s) and stops at once on a
        # second one; this process waits for them all.
        nonlocal stopping
        if signum and children:
            again = " again: they stop now" if stopping else f": they drain over {config.server.drain_s:g} s"
            log.info("%s: passing it on to %d workers%s", signal.Signals(signum).name, len(children), again)
        stopping = True
        for pid in list(children):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def reload(signum: int, _frame: object) -> None:
        for pid in list(children):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    for index in range(config.server.workers):
        spawn(index)
    log.info(
        "node %s: %d workers (pids %s) sharing port %d",
        base_id,
        config.server.workers,
        " ".join(str(pid) for pid in children),
        config.server.port,
    )
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index, started = children.pop(pid)
        if metrics_dir is not None:  # its gauges no longer count; its counters do
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        if time.monotonic() - started < STARTUP_S:
            log.error("worker %d exited (%s) while starting; stopping the node", index, _describe(code))
            exit_code = code if code > 0 else 1
            stop(0, None)  # not a signal: no line about passing one on
            continue
        log.error("worker %d (pid %d) ended (%s); starting it again", index, pid, _describe(code))
        spawn(index)
    if made_dir and metrics_dir is not None:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return exit_code


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _metrics_dir(config: Config) -> tuple[str, bool]:
    """The directory where prometheus-client's multiprocess mode keeps every worker's
    figures (stompgate/metrics.py), and whether it was made here (removed at the end).

    Set in the environment before any worker imports prometheus_client, which picks
    its mode at import. A directory given in ``PROMETHEUS_MULTIPROC_DIR`` is used,
    emptied of a previous run's files first (as prometheus-client requires).
    """
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
        return path, False
    path = tempfile.mkdtemp(prefix="stompgate-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path, True


def _describe(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def _ports_taken(config: Config) -> str | None:
    """SO_REUSEPORT would let the workers join any other process that set it on the
    same port (an earlier instance of this node, say) without an error: check first."""
    server = config.server
    ports = [(server.host, server.port, "server.port")]
    if server.tcp.enabled:
        ports.append((server.tcp.host, server.tcp.port, "server.tcp.port"))
    for host, port, key in ports:
        for family, kind, proto, _name, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(address)
                    probe.listen(1)
                except OSError as exc:
                    return f"{key}: {host}:{port} is not free ({exc.strerror})"
    return None
