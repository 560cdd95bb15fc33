"""Latency histograms kept as plain bucket counts, read by the metrics collector when scraped.

Stdlib only, so the bus and the application adapters can observe without
importing prometheus_client: an observation is a bisect and two additions.
Buckets hold counts of values <= their bound, not cumulated (the collector does that).
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds. Calls to Python handlers and backends, Redis round trips.
CALL_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds. From a message's dispatch on this node to its frames being handed to the sockets.
DELIVERY_BOUNDS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Histogram:
    """Counts per bucket (the last one: above every bound), their sum, for one label set."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


class Histograms:
    """One :class:`Histogram` per label values (a tuple), made at the first observation."""

    __slots__ = ("bounds", "by_labels")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.by_labels: dict[tuple[str, ...], Histogram] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        histogram = self.by_labels.get(labels)
        if histogram is None:
            histogram = self.by_labels[labels] = Histogram(self.bounds)
        histogram.observe(value)


# Handler and proxy calls of this process, by (kind, outcome): kind is handler, proxy-app,
# connect, subscribe or publish; outcome ok, error or timeout. One node per process
# (workers are processes), so one table per process.
CALLS = Histograms(CALL_BOUNDS)
