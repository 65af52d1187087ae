"""Pipeline metrics: Prometheus collectors in a registry of the pipeline's own.

Each :class:`PipelineMetrics` owns a :class:`prometheus_client.CollectorRegistry`, so several
pipelines (tests, benchmarks) never clash; the web server exposes it at ``/metrics``. End-to-end
latencies are also kept in a bounded window for summaries and benchmarks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from facewatch.stream.status import StreamStatus

Statuses = Callable[[], Iterable[StreamStatus]]

#: The stages a frame goes through, in order; ``queue`` is the wait before detection.
STAGES = ("queue", "detect", "track", "embed", "search", "alert")
#: Latency buckets in seconds, from 1 ms to 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_WINDOW = 10_000


class PipelineMetrics:
    """Counters, gauges and histograms of one pipeline."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stage_seconds = Histogram(
            "facewatch_stage_seconds",
            "Seconds spent per stage (queue: waiting for detection; per batch for detect, "
            "embed and search; per frame for track; per alert for alert).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.alert_latency = Histogram(
            "facewatch_alert_latency_seconds",
            "Seconds from decoding the frame that completed the evidence to emitting its alert.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "facewatch_batch_size",
            "Items per batch (frames for detect, faces for embed, templates for search).",
            ["stage"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.frames = Counter(
            "facewatch_frames_processed_total", "Frames through detection.", ["stream"], registry=r
        )
        # Drops happen on decode threads and in the pipeline; each stream's status counts them
        # all, so the metrics read the statuses at scrape time rather than keep a second tally.
        self._statuses: Statuses = list
        self.dropped = _DropCollector(lambda: self._statuses())
        self.streams = _StreamCollector(lambda: self._statuses())
        r.register(self.dropped)
        r.register(self.streams)
        self.faces = Counter("facewatch_faces_total", "Faces detected.", ["stream"], registry=r)
        self.embeddings = Counter(
            "facewatch_embeddings_total", "Face embeddings computed.", ["stream"], registry=r
        )
        self.alerts = Counter(
            "facewatch_alerts_total", "Alerts emitted, by type.", ["stream", "type"], registry=r
        )
        self.suppressed = Counter(
            "facewatch_alerts_suppressed_total",
            "Matches not raised because of the per-stream, per-person cooldown.",
            registry=r,
        )
        self.track_breaks = Counter(
            "facewatch_track_breaks_total",
            "Tracks ended because their face changed person: at a scene cut ('cut'), or when a "
            "new embedding disagreed with the track ('appearance') or named someone else "
            "('identity').",
            ["stream", "reason"],
            registry=r,
        )
        self.stage_errors = Counter(
            "facewatch_stage_errors_total",
            "Batches a pipeline stage could not process (logged and skipped).",
            ["stage"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "facewatch_queue_depth", "Items waiting in a pipeline queue.", ["queue"], registry=r
        )
        self.active_tracks = Gauge(
            "facewatch_active_tracks", "Face tracks followed right now.", registry=r
        )
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def watch_streams(self, statuses: Statuses) -> None:
        """Report these streams' counters (decoded, dropped, reconnects, fps, lag)."""
        self._statuses = statuses

    def observe_alert_latency(self, seconds: float) -> None:
        self.alert_latency.observe(seconds)
        self._latencies.append(seconds)

    def alert_latency_percentiles(self) -> dict[str, float | None]:
        """p50 / p95 / p99 of the recent alert latencies in milliseconds (None when empty)."""
        if not self._latencies:
            return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
        ms = 1000 * np.asarray(self._latencies)
        return {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}


class _DropCollector(Collector):
    """``facewatch_frames_dropped_total{stream, reason}`` from the stream statuses."""

    def __init__(self, statuses: Statuses) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "facewatch_frames_dropped",
            "Frames dropped before detection, by reason (queue_full, fps_cap, paused, ...).",
            labels=["stream", "reason"],
        )
        for status in self._statuses():
            for reason, count in sorted(status.dropped.items()):
                family.add_metric([status.id, reason], count)
        yield family


class _StreamCollector(Collector):
    """Per-stream decoded frames, reconnects, rates, lag and whether it is running."""

    def __init__(self, statuses: Statuses) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[Metric]:
        decoded = CounterMetricFamily(
            "facewatch_frames_decoded", "Frames decoded per stream.", labels=["stream"]
        )
        reconnects = CounterMetricFamily(
            "facewatch_stream_reconnects", "Reconnections per stream.", labels=["stream"]
        )
        input_fps = GaugeMetricFamily(
            "facewatch_stream_input_fps", "Frames/s decoded, recently.", labels=["stream"]
        )
        processed_fps = GaugeMetricFamily(
            "facewatch_stream_processed_fps", "Frames/s processed, recently.", labels=["stream"]
        )
        lag = GaugeMetricFamily(
            "facewatch_stream_lag_seconds",
            "Age of the last processed frame when it was processed.",
            labels=["stream"],
        )
        running = GaugeMetricFamily(
            "facewatch_stream_running", "1 when the stream is running.", labels=["stream"]
        )
        for status in self._statuses():
            decoded.add_metric([status.id], status.frames_decoded)
            reconnects.add_metric([status.id], status.reconnects)
            input_fps.add_metric([status.id], status.input_fps)
            processed_fps.add_metric([status.id], status.processed_fps)
            if status.lag_s is not None:
                lag.add_metric([status.id], status.lag_s)
            running.add_metric([status.id], 1.0 if status.state == "running" else 0.0)
        yield from (decoded, reconnects, input_fps, processed_fps, lag, running)
