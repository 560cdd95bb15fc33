"""A private RabbitMQ node with the Web-STOMP plugin, on loopback ports: a peer for the benchmark.

    .venv/bin/python bench/peers/rabbitmq.py --amqp-port 5673 --web-stomp-port 15674   # until Ctrl-C
    .venv/bin/python bench/peers/rabbitmq.py --selftest                                 # free ports

    from bench.peers.rabbitmq import RabbitMQ          # or importlib from the file path
    with RabbitMQ(work_dir, amqp_port=5673, web_stomp_port=15674) as rmq:
        url = rmq.ws_url                               # ws://127.0.0.1:15674/ws

The node is entirely separate from the system's RabbitMQ (rabbit@localhost on 5672/25672): its own
node name (``bench-<pid>-<n>@localhost``), Erlang cookie (in ``work_dir/home``), Mnesia and log
directories, config and enabled-plugins files, distribution port, and its own rabbitmq-env.conf so
/etc/rabbitmq is not read. Only epmd (127.0.0.1:4369) is shared. It is started from
/usr/lib/rabbitmq/bin/rabbitmq-server (the /usr/sbin wrapper would switch to the rabbitmq user and
redirect to /var/log/rabbitmq) as the current user, in its own session and process group.

Web-STOMP listens on ``ws://127.0.0.1:<web_stomp_port>/ws`` (STOMP 1.0-1.2, subprotocols
v12.stomp/v11.stomp/v10.stomp, text frames); login guest/guest, ``host:/``. Plain STOMP is off
unless ``stomp_port`` is given. Destinations: ``/exchange/amq.direct/<user>`` for point to point
(every subscriber gets its own exclusive auto-delete queue bound with routing key <user>) and
``/topic/<name>`` for fan-out (amq.topic).

``start()`` returns once a STOMP CONNECT over Web-STOMP succeeds (about 5-10 s; gives up after
``timeout``, 60 s). ``stop()`` sends SIGTERM to rabbitmq-server (which stops the Erlang VM gracefully
and waits for it), waits up to 30 s, then SIGKILLs the whole process group; nothing of the node is
left running. An atexit hook stops a node its owner forgot, and ``start()`` first stops what is left
of an earlier node on the same work_dir (``kill_stale()``). The server's own stdout/stderr go
to ``work_dir/server.out``, its log to ``work_dir/log/``. Nothing required is printed on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
STOMP_SUBPROTOCOLS = ["v12.stomp", "v11.stomp", "v10.stomp"]

_counter = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stomp_frame(command: str, headers: dict[str, str] | None = None, body: str = "") -> str:
    lines = [command, *(f"{k}:{v}" for k, v in (headers or {}).items())]
    return "\n".join(lines) + "\n\n" + body + "\x00"


def parse_frame(data: str | bytes) -> tuple[str, dict[str, str], str]:
    """One STOMP frame (no header unescaping): command, headers (first wins), body."""
    if isinstance(data, str):
        data = data.encode()
    data = data.lstrip(b"\r\n")  # heart-beats
    head, _, body = data.partition(b"\n\n")
    command, *lines = head.decode().split("\n")
    headers: dict[str, str] = {}
    for line in lines:
        k, _, v = line.rstrip("\r").partition(":")
        headers.setdefault(k, v)
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    else:
        body = body.split(b"\x00", 1)[0]
    return command.strip(), headers, body.decode()


def connect_frame(login: str = "guest", passcode: str = "guest", vhost: str = "/") -> str:
    return stomp_frame(
        "CONNECT",
        {"accept-version": "1.2,1.1,1.0", "host": vhost, "login": login, "passcode": passcode,
         "heart-beat": "0,0"},
    )


async def stomp_connect(url: str, timeout: float = 5.0):
    """Open a Web-STOMP connection and log in as guest; returns the websockets connection."""
    from websockets.asyncio.client import connect

    ws = await asyncio.wait_for(
        connect(url, subprotocols=STOMP_SUBPROTOCOLS, compression=None, open_timeout=timeout), timeout
    )
    try:
        await ws.send(connect_frame())
        command, headers, body = parse_frame(await asyncio.wait_for(ws.recv(), timeout))
        if command != "CONNECTED":
            raise ConnectionError(f"STOMP {command}: {headers.get('message', '')} {body}".strip())
    except BaseException:
        await ws.close()
        raise
    return ws


class RabbitMQ:
    """A private RabbitMQ node with Web-STOMP; usable as a context manager (start on enter, stop on exit)."""

    def __init__(
        self,
        work_dir: str | os.PathLike,
        amqp_port: int,
        web_stomp_port: int,
        stomp_port: int | None = None,
        dist_port: int | None = None,
        nodename: str | None = None,
        extra_config: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.amqp_port = amqp_port
        self.web_stomp_port = web_stomp_port
        self.stomp_port = stomp_port
        self.dist_port = dist_port
        self.nodename = nodename or f"bench-{os.getpid()}-{next(_counter)}@localhost"
        self.extra_config = list(extra_config)
        self.proc: subprocess.Popen | None = None
        self._out = None

    # ------------------------------------------------------------------ paths and environment

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.web_stomp_port}/ws"

    @property
    def home(self) -> Path:
        return self.work_dir / "home"

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "log"

    @property
    def server_out(self) -> Path:
        return self.work_dir / "server.out"

    def _write_files(self) -> None:
        w = self.work_dir
        for d in (w, self.home, w / "mnesia", self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)
        (w / "enabled_plugins").write_text("[rabbitmq_web_stomp].\n")
        (w / "rabbitmq-env.conf").write_text("# private node: keeps /etc/rabbitmq/rabbitmq-env.conf out\n")
        stomp = (f"stomp.listeners.tcp.1 = 127.0.0.1:{self.stomp_port}" if self.stomp_port
                 else "stomp.listeners.tcp = none")
        conf = [
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port:d}",
            "listeners.ssl = none",
            "web_stomp.tcp.ip = 127.0.0.1",
            f"web_stomp.tcp.port = {self.web_stomp_port:d}",
            "web_stomp.tcp.backlog = 4096",
            "web_stomp.max_connections = infinity",
            stomp,
            "log.file.level = warning",
            "log.console = false",
            *self.extra_config,
        ]
        (w / "rabbitmq.conf").write_text("\n".join(conf) + "\n")

    def env(self) -> dict[str, str]:
        """Environment for rabbitmq-server and rabbitmqctl of this node."""
        w = self.work_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.home),  # the Erlang cookie of this node, for the server and the CLI tools
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_MNESIA_BASE=str(w / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(w / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(w / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(w / "advanced.config"),  # absent on purpose
            RABBITMQ_CONF_ENV_FILE=str(w / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(w / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        if self.dist_port:
            env["RABBITMQ_DIST_PORT"] = str(self.dist_port)
        return env

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        stale = self.kill_stale()
        if stale:
            print(f"rabbitmq.py: stopped a stale node on {self.work_dir} (pids {stale})", file=sys.stderr)
        if self.dist_port is None:
            self.dist_port = free_port()
        for name, port in (("amqp", self.amqp_port), ("web_stomp", self.web_stomp_port),
                           ("stomp", self.stomp_port), ("dist", self.dist_port)):
            if port and _port_in_use(port):
                raise OSError(f"{name} port {port} on 127.0.0.1 is already in use")
        self._write_files()
        self._out = open(self.server_out, "ab")
        self.proc = subprocess.Popen(
            [RABBITMQ_SERVER],
            cwd=self.work_dir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        atexit.register(self.stop)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {self.proc and self.proc.returncode}; "
                    f"see {self.server_out} and {self.log_dir}:\n{self._tail()}"
                )
            try:
                _run_async(self._probe())
                return
            except Exception as e:  # noqa: BLE001 - not listening yet, or plugin still starting
                last = e
                time.sleep(0.5)
        raise TimeoutError(
            f"Web-STOMP at {self.ws_url} not ready after {timeout}s ({last!r})\n{self._tail()}"
        )

    async def _probe(self) -> None:
        ws = await stomp_connect(self.ws_url, timeout=3.0)
        await ws.close()

    async def astart(self, timeout: float = 60.0) -> None:
        """start() for callers inside an event loop."""
        await asyncio.to_thread(self.start, timeout)

    async def astop(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.stop, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        proc = self.proc
        if proc is None:
            return
        atexit.unregister(self.stop)
        try:
            if proc.poll() is None:
                # rabbitmq-server (sh) traps TERM, passes it to the VM (a clean shutdown) and waits for it
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            _killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
            proc.wait()
        finally:
            self.proc = None
            if self._out is not None:
                self._out.close()
                self._out = None

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run rabbitmqctl against this node (same cookie via HOME)."""
        return subprocess.run(
            [RABBITMQCTL, "-n", self.nodename, *args], env=self.env(), cwd=self.work_dir,
            capture_output=True, text=True, timeout=timeout,
        )

    def leftover_pids(self) -> list[int]:
        """Pids of processes of this node still alive: those whose environment names it.

        (The node name is not on the VM's command line, so ``pgrep -f <name>`` cannot find it.)
        """
        return _pids_with_env(f"RABBITMQ_NODENAME={self.nodename}")

    def kill_stale(self, timeout: float = 15.0) -> list[int]:
        """Stop what is left of an earlier node on this work_dir (its owner was killed); returns the pids."""
        pids = _pids_with_env(f"RABBITMQ_MNESIA_BASE={self.work_dir / 'mnesia'}")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(_alive(p) for p in pids):
                time.sleep(0.2)
        return pids

    @property
    def pid(self) -> int | None:
        """Pid of rabbitmq-server (sh), the root of the node's process tree (beam.smp is its child)."""
        return self.proc.pid if self.proc is not None else None

    def pids(self) -> list[int]:
        """Every live process of the node: sh, beam.smp, erl_child_setup, inet_gethost..."""
        return self.leftover_pids()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _tail(self, n: int = 30) -> str:
        chunks = []
        for f in [self.server_out, *sorted(self.log_dir.glob("*.log"))]:
            try:
                lines = f.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                continue
            chunks.append(f"--- {f}\n" + "\n".join(lines))
        return "\n".join(chunks)

    def __enter__(self) -> RabbitMQ:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _pids_with_env(assignment: str) -> list[int]:
    """Pids of live processes (but epmd, which a node may have started and which is shared) whose
    environment holds ``assignment`` (``NAME=value``)."""
    needle = f"\0{assignment}\0".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = b"\0" + f.read()
        except OSError:
            continue
        if needle in env and _comm(entry) != "epmd" and _alive(int(entry)):
            pids.append(int(entry))
    return pids


def _alive(pid: int) -> bool:
    """True for a running process, False for a gone or zombie one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _run_async(coro):
    """asyncio.run(coro), also when called from a thread that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread, which re-raises it
            result["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


# --------------------------------------------------------------------------- selftest


async def _selftest_clients(url: str) -> str:
    async def recv_frame(ws, timeout: float = 5.0):
        while True:
            data = await asyncio.wait_for(ws.recv(), timeout)
            if data.strip("\r\n"):
                return parse_frame(data)

    async def subscribe(ws, dest: str, sub_id: str) -> None:
        await ws.send(stomp_frame("SUBSCRIBE", {"id": sub_id, "destination": dest, "ack": "auto",
                                                "receipt": f"r-{sub_id}"}))
        command, headers, _ = await recv_frame(ws)
        assert command == "RECEIPT" and headers.get("receipt-id") == f"r-{sub_id}", (command, headers)

    alice = await stomp_connect(url)
    bob = await stomp_connect(url)
    carol = await stomp_connect(url)
    try:
        # bad login is refused
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        async with connect(url, subprotocols=STOMP_SUBPROTOCOLS) as bad:
            await bad.send(connect_frame(passcode="nope"))
            try:
                command = (await recv_frame(bad))[0]
            except ConnectionClosed:
                command = "(closed)"
            assert command in ("ERROR", "(closed)"), command
        # point to point through amq.direct
        await subscribe(alice, "/exchange/amq.direct/alice", "p2p")
        await bob.send(stomp_frame("SEND", {"destination": "/exchange/amq.direct/alice",
                                            "content-type": "text/plain"}, "hello alice"))
        command, headers, body = await recv_frame(alice)
        assert command == "MESSAGE" and body == "hello alice", (command, headers, body)
        # fan-out to 2 subscribers of /topic/bench
        await subscribe(bob, "/topic/bench", "t1")
        await subscribe(carol, "/topic/bench", "t2")
        await alice.send(stomp_frame("SEND", {"destination": "/topic/bench"}, "to all"))
        for ws in (bob, carol):
            command, headers, body = await recv_frame(ws)
            assert command == "MESSAGE" and body == "to all", (command, headers, body)
        # short sanity sample: sequential point-to-point round trips bob -> alice
        n = 300
        t = time.perf_counter()
        for i in range(n):
            await bob.send(stomp_frame("SEND", {"destination": "/exchange/amq.direct/alice"}, str(i)))
            command, _, body = await recv_frame(alice)
            assert command == "MESSAGE" and body == str(i), (command, body)
        dt = time.perf_counter() - t
        return (f"bad login refused; p2p via /exchange/amq.direct/alice ok; /topic/bench fan-out to 2 ok; "
                f"{n} sequential p2p sends {dt * 1e3 / n:.2f} ms each")
    finally:
        for ws in (alice, bob, carol):
            await ws.close()


def selftest() -> int:
    work = tempfile.mkdtemp(prefix="bench-rabbitmq-")
    try:
        rmq = RabbitMQ(work, amqp_port=free_port(), web_stomp_port=free_port())
        t = time.monotonic()
        rmq.start()
        started = time.monotonic() - t
        try:
            report = asyncio.run(_selftest_clients(rmq.ws_url))
            status = rmq.ctl("status")
            assert status.returncode == 0, status.stderr
        finally:
            t = time.monotonic()
            rmq.stop()
            stopped = time.monotonic() - t
        left = rmq.leftover_pids()
        assert not left, f"left running after stop(): {left}"
        print(f"selftest ok ({rmq.nodename}): started in {started:.1f}s; {report}; rabbitmqctl status ok; "
              f"stopped in {stopped:.1f}s, nothing left running")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--amqp-port", type=int)
    ap.add_argument("--web-stomp-port", type=int)
    ap.add_argument("--stomp-port", type=int, help="plain STOMP listener (default: none)")
    ap.add_argument("--dist-port", type=int, help="Erlang distribution port (default: a free one)")
    ap.add_argument("--work-dir", help="kept after exit (default: a temporary directory, removed)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--selftest", action="store_true",
                    help="start on free ports, check p2p and fan-out over Web-STOMP, stop, "
                    "check nothing is left")
    args = ap.parse_args(argv)
    if args.selftest:
        raise SystemExit(selftest())
    if args.amqp_port is None or args.web_stomp_port is None:
        ap.error("--amqp-port and --web-stomp-port are required")
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-rabbitmq-")
    rmq = RabbitMQ(work, args.amqp_port, args.web_stomp_port, args.stomp_port, args.dist_port)

    def on_term(signum, frame):
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup below run undisturbed
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # SIGINT may arrive ignored from a shell
        signal.signal(sig, on_term)
    try:
        rmq.start(args.timeout)
        print(f"rabbitmq {rmq.nodename} ready: {rmq.ws_url} (amqp 127.0.0.1:{rmq.amqp_port}, "
              f"dist {rmq.dist_port}, work dir {work})", file=sys.stderr, flush=True)
        while rmq.running():
            time.sleep(0.5)
        print(f"rabbitmq-server exited by itself; see {rmq.server_out}", file=sys.stderr)
        raise SystemExit(1)
    except KeyboardInterrupt:
        pass
    finally:
        rmq.stop()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
