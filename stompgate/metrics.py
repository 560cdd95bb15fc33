"""Prometheus metrics at ``GET /metrics`` (docs/metrics.md lists them).

Nothing is counted here: the broker, the bus and the call adapters keep plain
integers and bucket counts (``BrokerStats``, ``BusStats``, ``buckets.py``) and
:class:`NodeCollector` reads them when scraped, so a message costs no metrics
call. The one thing added on the hot path is the delivery-latency sample: one
dispatched message in ``metrics.latency_sample`` is timed until its frames are
handed to the sockets.

With ``server.workers > 1`` every worker is its own process. prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``workers.py``) shares only
its own Counter/Gauge/Histogram objects, so :class:`MultiprocessExport` copies
the collector's figures into such objects every second and before each scrape;
whichever worker the scrape reaches answers with the sum over all workers
(``MultiProcessCollector``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .broker.closes import REASONS, transport_kind
from .buckets import CALLS, DELIVERY_BOUNDS, Histogram, Histograms
from .workers import MULTIPROC_ENV

if TYPE_CHECKING:
    from .app import Node

log = logging.getLogger(__name__)


def _by_label(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    """A counter with one label, a sample per key of ``counts`` (in a stable order)."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def _histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    cumulated = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts):
        cumulated += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulated))
    family.add_metric(labels, buckets, histogram.sum)


class NodeCollector(Collector):
    """The node's figures, read from the broker and the bus at each scrape."""

    def __init__(self, node: Node) -> None:
        self.node = node
        # Sampled delivery latency (seconds): see Metrics.start.
        self.delivery = Histogram(DELIVERY_BOUNDS)
        self.calls: Histograms = CALLS

    def collect(self) -> Iterator[Metric]:
        node = self.node
        info = GaugeMetricFamily(
            "stompgate_info", "This node: its id and version (always 1)", labels=["node", "version"]
        )
        info.add_metric([node.node_id, __version__], 1)
        yield info
        sent = yield from self._sessions()
        yield from self._traffic(sent)
        yield from self._bus()
        yield from self._latencies()

    def _sessions(self) -> Generator[Metric, None, int]:
        """The gauges of the sessions (one walk over them); returns the MESSAGE frames they were sent."""
        broker = self.node.broker
        stats = broker.stats
        sessions: dict[str, int] = {"websocket": 0, "sockjs": 0, "tcp": 0}
        connecting = subscriptions = sent = 0
        for session in broker.open_sessions:
            sent += session.messages_sent
            if not session.connected:
                connecting += 1
                continue
            label = transport_kind(session.transport)
            sessions[label] = sessions.get(label, 0) + 1
            subscriptions += len(session.subscriptions)
        gauge = GaugeMetricFamily(
            "stompgate_sessions", "Connected STOMP sessions, by transport", labels=["transport"]
        )
        for label, count in sessions.items():
            gauge.add_metric([label], count)
        yield gauge
        yield GaugeMetricFamily(
            "stompgate_sessions_connecting",
            "Open connections whose CONNECT is not accepted yet",
            value=connecting,
        )
        yield GaugeMetricFamily(
            "stompgate_subscriptions", "Subscriptions of the connected sessions", value=subscriptions
        )
        yield GaugeMetricFamily(
            "stompgate_users", "Distinct users with a session on this node", value=len(broker.users)
        )

        yield CounterMetricFamily(
            "stompgate_sessions_opened", "Sessions whose CONNECT was accepted", value=stats.sessions_opened
        )
        closed = CounterMetricFamily(
            "stompgate_sessions_closed", "Sessions ended, by reason", labels=["reason"]
        )
        for reason in REASONS:
            closed.add_metric([reason], stats.closes.get(reason, 0))
        for reason, count in stats.closes.items():
            if reason not in REASONS:
                closed.add_metric([reason], count)
        yield closed
        return sent

    def _traffic(self, sent: int) -> Iterator[Metric]:
        """Frames and messages; ``sent``: MESSAGE frames written to the open sessions."""
        stats = self.node.broker.stats
        bus_stats = self.node.bus.stats
        yield _by_label(
            "stompgate_frames_received", "STOMP frames read, by command", "command", stats.frames_in
        )
        written = {"CONNECTED": 0, "RECEIPT": 0, "ERROR": 0, **stats.frames_out}
        written["MESSAGE"] = stats.messages_sent_closed + sent
        yield _by_label("stompgate_frames_sent", "STOMP frames written, by command", "command", written)
        messages = [
            (
                "published",
                "Messages published on this node (clients, the HTTP API, handlers)",
                stats.messages_published,
            ),
            (
                "delivered",
                "Deliveries to subscriptions on this node (one per subscriber)",
                stats.messages_delivered,
            ),
            (
                "unrouted",
                "Messages dispatched here that matched no subscription on this node",
                stats.messages_unrouted,
            ),
            (
                "stored",
                "User messages kept in the offline store for a user with no subscriber",
                bus_stats.stored,
            ),
            ("replayed", "Stored messages handed to a new subscription", stats.messages_replayed),
        ]
        for name, text, value in messages:
            yield CounterMetricFamily(f"stompgate_messages_{name}", text, value=value)
        dropped = CounterMetricFamily(
            "stompgate_messages_dropped", "Messages lost, by why", labels=["reason"]
        )
        dropped.add_metric(["outbox-full"], bus_stats.dropped)
        dropped.add_metric(["store-refused"], bus_stats.refused)
        dropped.add_metric(["store-cap"], bus_stats.store_dropped)
        yield dropped
        yield CounterMetricFamily(
            "stompgate_message_bytes_published",
            "Body bytes of messages published",
            value=stats.bytes_published,
        )
        yield CounterMetricFamily(
            "stompgate_message_bytes_delivered",
            "Body bytes delivered (once per subscriber)",
            value=stats.bytes_delivered,
        )
        acks = CounterMetricFamily("stompgate_acks", "Messages settled by clients", labels=["kind"])
        acks.add_metric(["ack"], stats.acked)
        acks.add_metric(["nack"], stats.nacked)
        yield acks

    def _bus(self) -> Iterator[Metric]:
        bus = self.node.bus
        bus_stats = bus.stats
        yield CounterMetricFamily(
            "stompgate_bus_published", "Messages this node sent to the bus", value=bus_stats.published
        )
        yield CounterMetricFamily(
            "stompgate_bus_received", "Messages the bus brought to this node", value=bus_stats.received
        )
        yield CounterMetricFamily(
            "stompgate_bus_ignored",
            "Messages from the bus with nothing to do here (own echo, no subscriber)",
            value=bus_stats.ignored,
        )
        depth = getattr(bus, "outbox_depth", (0, 0))
        yield GaugeMetricFamily(
            "stompgate_outbox_entries", "Commands queued for Redis, not sent yet", value=depth[0]
        )
        yield GaugeMetricFamily(
            "stompgate_outbox_bytes", "Bytes queued for Redis, not sent yet", value=depth[1]
        )
        yield GaugeMetricFamily(
            "stompgate_bus_up", "1 while the node reaches its cluster (as /ready)", value=int(bus.healthy)
        )
        yield CounterMetricFamily(
            "stompgate_redis_reconnects",
            "Times Redis was reachable again after an outage",
            value=bus_stats.redis_reconnects,
        )
        yield _by_label(
            "stompgate_redis_errors", "Failed Redis calls, by what failed", "where", bus_stats.redis_errors
        )
        batch = HistogramMetricFamily(
            "stompgate_redis_batch_seconds",
            "Round trip of one batch of commands to Redis (one pipeline)",
            labels=[],
        )
        batch_seconds: Histogram | None = getattr(bus, "batch_seconds", None)
        if batch_seconds is not None:
            _histogram(batch, [], batch_seconds)
            yield batch

    def _latencies(self) -> Iterator[Metric]:
        calls = HistogramMetricFamily(
            "stompgate_call_seconds",
            "Calls to Python handlers and proxy backends",
            labels=["kind", "outcome"],
        )
        for labels, histogram in sorted(self.calls.by_labels.items()):
            _histogram(calls, list(labels), histogram)
        yield calls
        delivery = HistogramMetricFamily(
            "stompgate_delivery_seconds",
            "Sampled: from a message's dispatch on this node until its frames are written to the sockets",
            labels=[],
        )
        _histogram(delivery, [], self.delivery)
        yield delivery


# Gauges that are not summed over workers.
_GAUGE_MODES = {"stompgate_bus_up": "livemin"}


class MultiprocessExport:
    """Copies a collector's figures into prometheus-client objects, whose values the
    multiprocess mode keeps in files that any worker's scrape adds up.

    Counters and histograms get the increase since the last copy; gauges are set.
    """

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._objects: dict[str, Any] = {}
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}

    def sync(self) -> None:
        for family in self.collector.collect():
            if not family.samples:  # its label names are not known yet
                continue
            if family.type == "counter":
                self._counter(family)
            elif family.type == "gauge":
                self._gauge(family)
            elif family.type == "histogram":
                self._histogram(family)

    def _object(self, family: Metric, labels: Iterable[str], make: Any) -> Any:
        obj = self._objects.get(family.name)
        if obj is None:
            obj = self._objects[family.name] = make(
                family.name, family.documentation, list(labels), registry=None
            )
        return obj

    def _label_names(self, family: Metric) -> list[str]:
        for sample in family.samples:
            return [k for k in sample.labels if k != "le"]
        return []

    def _counter(self, family: Metric) -> None:
        names = self._label_names(family)
        counter = self._object(family, names, PromCounter)
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue  # _created
            values = tuple(sample.labels[n] for n in names)
            key = (sample.name, values)
            delta = sample.value - self._last.get(key, 0.0)
            self._last[key] = sample.value
            if delta > 0:
                (counter.labels(*values) if names else counter).inc(delta)
            elif delta == 0 and names:
                counter.labels(*values)  # shown at 0 too

    def _gauge(self, family: Metric) -> None:
        names = self._label_names(family)
        mode: Any = _GAUGE_MODES.get(family.name, "livesum")

        def make(name: str, doc: str, labels: list[str], registry: None) -> PromGauge:
            return PromGauge(name, doc, labels, registry=registry, multiprocess_mode=mode)

        gauge = self._object(family, names, make)
        for sample in family.samples:
            values = tuple(sample.labels[n] for n in names)
            (gauge.labels(*values) if names else gauge).set(sample.value)

    def _histogram(self, family: Metric) -> None:
        names = self._label_names(family)
        bounds = sorted({float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")})
        finite = [b for b in bounds if b != float("inf")]
        if not finite:
            return

        def make(name: str, doc: str, labels: list[str], registry: None) -> PromHistogram:
            return PromHistogram(name, doc, labels, registry=registry, buckets=finite)

        histogram = self._object(family, names, make)
        below: dict[tuple[str, ...], float] = {}  # per label set: the cumulated count of the bucket before
        for sample in family.samples:
            values = tuple(sample.labels[n] for n in names)
            child = histogram.labels(*values) if names else histogram
            if sample.name.endswith("_bucket"):
                # Buckets come cumulated, in order; the objects keep a count per bucket.
                own = sample.value - below.get(values, 0.0)
                below[values] = sample.value
                key = (sample.name, (*values, sample.labels["le"]))
                delta = own - self._last.get(key, 0.0)
                self._last[key] = own
                if delta > 0:  # no public way to add counts to a bucket (Histogram.observe does this)
                    child._buckets[bounds.index(float(sample.labels["le"]))].inc(delta)
            elif sample.name.endswith("_sum"):
                key = (sample.name, values)
                delta = sample.value - self._last.get(key, 0.0)
                self._last[key] = sample.value
                if delta:
                    child._sum.inc(delta)


class Metrics:
    """``GET /metrics`` of one node (or one worker), and the delivery-latency sample."""

    def __init__(self, node: Node) -> None:
        settings = node.config.metrics
        self.node = node
        self.token = settings.token
        self.latency_sample = settings.latency_sample
        self.cache_s = settings.cache_s
        self._page: tuple[float, bytes] | None = None  # (built at, monotonic; the page)
        self.collector = NodeCollector(node)
        self.export: MultiprocessExport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.registry = CollectorRegistry()
        multiproc_dir = os.environ.get(MULTIPROC_ENV)
        if node.config.server.workers > 1 and multiproc_dir:
            from prometheus_client import values
            from prometheus_client.multiprocess import MultiProcessCollector

            if (
                values.ValueClass is values.MutexValue
            ):  # prometheus_client was imported before the env var was set
                log.error(
                    "metrics: %s is set too late: each worker shows only its own figures", MULTIPROC_ENV
                )
                self.registry.register(self.collector)
            else:
                self.export = MultiprocessExport(self.collector)
                MultiProcessCollector(self.registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
        else:
            self.registry.register(self.collector)
            from prometheus_client import PLATFORM_COLLECTOR, PROCESS_COLLECTOR

            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR):
                self.registry.register(collector)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        delivery = self.collector.delivery

        def delivered(started: float) -> None:
            delivery.observe(time.perf_counter() - started)

        def probe(started: float) -> None:
            # Queued after the writes of this loop turn (transport/batching.py flushes from
            # call_soon too, scheduled by the deliveries): runs once they are done.
            loop.call_soon(delivered, started)

        self.node.broker.sample_latency(self.latency_sample, probe)
        if self.export is not None:
            self._sync()

    def _sync(self) -> None:
        assert self.export is not None
        try:
            self.export.sync()
        except Exception:  # metrics must never take the node down
            log.exception("metrics: copying this worker's figures failed")
        self._timer = asyncio.get_running_loop().call_later(1.0, self._sync)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.node.broker.sample_latency(0, None)

    async def handle(self, request: web.Request) -> web.Response:
        if self.token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return web.json_response(
                    {"error": "metrics.token is set: send Authorization: Bearer <token>"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="stompgate metrics"'},
                )
        now = time.monotonic()
        if self._page is not None and now - self._page[0] < self.cache_s:
            body = self._page[1]  # bounded work however often it is asked (metrics.cache_s)
        else:
            if self.export is not None:
                self.export.sync()  # this worker's figures as of now; the others' are at most a second old
            body = generate_latest(self.registry)
            self._page = (now, body)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
