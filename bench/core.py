"""CPU cost of the sans-I/O core per message, no network: the floor under every transport.

    .venv/bin/python bench/core.py            # prints a markdown table
    .venv/bin/python bench/core.py 100        # with 1 message in 100 timed (metrics.latency_sample)

Measures (best of 5 runs each):
- parse:   FrameParser on 200-byte SEND frames, one frame per feed() (one per WebSocket message)
- p2p:     a SEND received by one session, routed and written as MESSAGE to one subscriber
- fanout:  one publish delivered to 1,000 subscribers of a topic (cost per delivery)
"""

from __future__ import annotations

import platform
import sys
import time

from stompgate.broker import Broker, BrokerSettings, DevAuthenticator, Session, SessionLimits
from stompgate.broker.settings import RateLimit
from stompgate.stomp import Frame, FrameParser, serialize


class NullOut:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def send(self, data: bytes, binary: bool) -> None:
        self.n += 1

    def close(self, code: int, reason: str) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def buffered(self) -> int:
        return 0

    def abort(self) -> None:
        pass


class NoTimer:
    def cancel(self) -> None:
        pass


class NoScheduler:
    def time(self) -> float:
        return time.monotonic()

    def call_later(self, delay, cb):
        return NoTimer()

    def call_soon(self, cb):
        cb()  # the bench feeds one frame at a time: a turn's budget is never spent
        return NoTimer()


def best(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def connect(broker: Broker, login: str) -> tuple[Session, NullOut]:
    out = NullOut()
    s = Session(broker, out, NoScheduler())
    s.receive_data(
        serialize(Frame("CONNECT", {"accept-version": "1.2", "login": login, "heart-beat": "0,0"}))
    )
    return s, out


def main() -> None:
    body = b"x" * 120
    send = serialize(
        Frame("SEND", {"destination": "/user/bob/queue/chat", "content-type": "text/plain"}, body)
    )
    n = 100_000

    def parse() -> None:
        p = FrameParser(version="1.2")
        for _ in range(n):
            p.feed(send)
            p.next_frame()

    t_parse = best(parse)

    # No rate limit: this measures what a message costs, not what a session may send.
    unlimited = SessionLimits(rate_limit=RateLimit(frames_per_s=0, bytes_per_s=0))
    broker = Broker(BrokerSettings(limits=unlimited), DevAuthenticator())
    sample = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if sample:  # as a node does (stompgate/metrics.py), without its loop: observed at once
        from stompgate.buckets import DELIVERY_BOUNDS, Histogram

        latency = Histogram(DELIVERY_BOUNDS)
        broker.sample_latency(sample, lambda started: latency.observe(time.perf_counter() - started))
    alice, _ = connect(broker, "alice")
    bob, bob_out = connect(broker, "bob")
    bob.receive_data(serialize(Frame("SUBSCRIBE", {"id": "1", "destination": "/user/queue/chat"})))

    def p2p() -> None:
        for _ in range(n):
            alice.receive_data(send)

    t_p2p = best(p2p)
    assert bob_out.n >= n

    subs = 1000
    for i in range(subs):
        s, _ = connect(broker, f"u{i}")
        s.receive_data(serialize(Frame("SUBSCRIBE", {"id": "1", "destination": "/topic/fan"})))
    pub = serialize(Frame("SEND", {"destination": "/topic/fan"}, body))
    rounds = 100

    def fanout() -> None:
        for _ in range(rounds):
            alice.receive_data(pub)

    t_fan = best(fanout)
    sampled = f", 1 message in {sample} timed" if sample else ""
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}"
    print(f"Python {sys.version.split()[0]} on {machine}{sampled}\n")
    print("| scenario | per message | rate (one core) |")
    print("|---|---|---|")
    print(f"| parse 200-byte SEND | {t_parse / n * 1e6:.2f} us | {n / t_parse:,.0f} frames/s |")
    print(f"| p2p SEND -> 1 subscriber | {t_p2p / n * 1e6:.2f} us | {n / t_p2p:,.0f} msg/s |")
    d = rounds * subs
    print(
        f"| fanout, per delivery (1,000 subscribers) | {t_fan / d * 1e6:.2f} us "
        f"| {d / t_fan:,.0f} deliveries/s |"
    )


if __name__ == "__main__":
    main()
