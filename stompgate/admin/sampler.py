"""This node's counters sampled every few seconds into a bounded ring, for the admin page's charts.

The broker only counts (``Broker.stats``); rates are differences between two
samples, so sampling costs one small tuple per interval whatever the traffic.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What is sampled: the counters' names, read from a callable (broker and bus stats).
Counters = Callable[[], dict[str, int]]


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # wall clock, seconds
    sessions: int
    subscriptions: int
    counters: dict[str, int]


class RateSampler:
    """The last ``history`` samples, one every ``interval_s``; older ones fall off."""

    def __init__(
        self,
        counters: Counters,
        gauges: Callable[[], tuple[int, int]],
        interval_s: float,
        history: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._gauges = gauges  # (sessions, subscriptions) now
        self.interval_s = interval_s
        self._clock = clock
        self.samples: deque[Sample] = deque(maxlen=history)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        sessions, subscriptions = self._gauges()
        self.samples.append(Sample(self._clock(), sessions, subscriptions, dict(self._counters())))

    def rates(self) -> dict[str, Any]:
        """Per interval: its end time, sessions, subscriptions, and each counter's rate per second."""
        samples = list(self.samples)
        out: dict[str, Any] = {"interval_s": self.interval_s, "t": [], "sessions": [], "subscriptions": []}
        names = sorted(samples[-1].counters) if samples else []
        for name in names:
            out[name] = []
        for before, after in zip(samples, samples[1:]):
            span = after.at - before.at
            if span <= 0:
                continue
            out["t"].append(round(after.at, 3))
            out["sessions"].append(after.sessions)
            out["subscriptions"].append(after.subscriptions)
            for name in names:
                delta = after.counters.get(name, 0) - before.counters.get(name, 0)
                out[name].append(round(max(delta, 0) / span, 2))
        return out

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="admin-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
