"""What hostile input costs the event loop, in the sans-I/O core (no network).

    .venv/bin/python bench/hostile.py        # prints a markdown table (docs/security.md)

Each row is an attack a logged-in user can make with ordinary frames, and the
loop time the node spends on it (best of 3). Before issue 11 these rows read
seconds to minutes; the figures of both are in docs/security.md.

- wildcard, one pattern: SUBSCRIBE ``/topic/*x*x...*xy`` (12 stars), SEND to ``/topic/xxx...`` (40 x):
  a backtracking regex tried every split of the segment.
- wildcard, many patterns: 100 sessions x 1,000 distinct patterns, a SEND to a destination
  nobody subscribes to, by pattern shape: ``/topic/s{n}/p{i}/*`` (literal prefixes: the trie
  skips them) and ``/topic/*p{n}x{i}`` (a glob at the first level: tested one by one).
- packed frames: 1 MB of 33-byte SENDs in one WebSocket message (one feed), parsed and handled.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from bench.core import best, connect
from stompgate.broker import Broker, BrokerSettings, DevAuthenticator
from stompgate.stomp import Frame, FrameParser, serialize


def broker_with(patterns: Callable[[int, int], str], sessions: int, per_session: int) -> Broker:
    broker = Broker(BrokerSettings(), DevAuthenticator())
    for n in range(sessions):
        s, _ = connect(broker, f"u{n}")
        frames = [
            serialize(Frame("SUBSCRIBE", {"id": str(i), "destination": patterns(n, i)}))
            for i in range(per_session)
        ]
        s.receive_data(b"".join(frames))
        while s.parser.buffered:  # the session works in bounded batches
            s.receive_data(b"")
    return broker


def publish_cost(broker: Broker, rounds: int = 20) -> float:
    sender, _ = connect(broker, "sender")
    frames = iter(
        [serialize(Frame("SEND", {"destination": f"/topic/new{r}/x"}, b"x")) for r in range(rounds * 3)]
    )

    def run() -> None:
        for _ in range(rounds):  # a new destination every time: no cache helps
            sender.receive_data(next(frames))

    return best(run, 3) / rounds


def main() -> None:
    rows = []

    broker = Broker(BrokerSettings(), DevAuthenticator())
    evil, _ = connect(broker, "evil")
    evil.receive_data(serialize(Frame("SUBSCRIBE", {"id": "1", "destination": "/topic/" + "*x" * 12 + "y"})))
    sends = iter(
        [serialize(Frame("SEND", {"destination": "/topic/" + "x" * (40 + i)}, b"")) for i in range(3)]
    )
    # A new destination each run, so that no run is answered from the match cache.
    rows.append(
        (
            "wildcard `/topic/*x...*xy` (12 stars) vs a 40-character segment",
            best(lambda: evil.receive_data(next(sends)), 3),
        )
    )

    literal = broker_with(lambda n, i: f"/topic/s{n}/p{i}/*", 100, 1000)
    rows.append(
        ("publish to a new destination, 100 x 1,000 patterns `/topic/s{n}/p{i}/*`", publish_cost(literal))
    )
    del literal
    globbed = broker_with(lambda n, i: f"/topic/*p{n}x{i}", 100, 1000)
    rows.append(
        ("publish to a new destination, 100 x 1,000 patterns `/topic/*p{n}x{i}`", publish_cost(globbed))
    )
    del globbed

    packed = serialize(Frame("SEND", {"destination": "/topic/a"}, b"x" * 4))
    stream = packed * (1_000_000 // len(packed))

    def parse_packed() -> None:
        p = FrameParser(version="1.2")
        p.feed(stream)
        while p.next_frame() is not None:
            pass

    rows.append((f"parse 1 MB of {len(packed)}-byte SENDs fed at once", best(parse_packed, 3)))

    print(f"Python {sys.version.split()[0]} on {platform.machine()}\n")
    print("| attack | loop time |")
    print("|---|---|")
    for name, seconds in rows:
        shown = f"{seconds * 1000:.2f} ms" if seconds < 10 else f"{seconds:.1f} s"
        print(f"| {name} | {shown} |")


if __name__ == "__main__":
    main()
