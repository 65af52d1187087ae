"""Throughput and latency of the realtime pipeline vs. the naive loop, on real video; prints JSON.

Usage::

    python benchmarks/pipeline.py [--quick] [--faces-dir DIR] [--streams N,...] [--pairs N]
                                  [--paced-s S] [--clip-frames N] [--threads N] [--providers P]

Every stream reads the same clip, ``videos/fr_short_hamilton_clip.mp4`` (640x360, 29.97 frames/s,
275 frames: a stage with the performers lin_manuel_miranda and alex_lacamoire, and an audience).
A watchlist in a temporary data folder holds those two performers and six distractors who are not
in the clip, enrolled once from their photos in ``identities/``. ``--clip-frames`` (30 in quick
mode) keeps only the clip's first frames, by copying its packets: no re-encoding, the frames are
the original ones (a codec that reorders frames is cut at the next keyframe instead).

Two ways of doing the same job with the same :class:`FaceEngine` (one detector and one
recognizer session, same ONNX Runtime threads) and the same :class:`Watchlist`:

* **pipeline**: :class:`~facewatch.pipeline.runner.Pipeline` with N streams of the file, as
  configured by default (batched detection across streams, tracking, embedding only when a track
  needs it, batched search, alerts with JPEG snapshots);
* **naive**: the clip decoded beforehand with PyAV (not timed), then for each frame of each of
  the N copies, one at a time on one thread: ``engine.detect_aligned([frame])``, then for each
  face ``engine.embed_crops`` on that crop alone and ``watchlist.match`` on that embedding alone.
  No batching, no tracking: every face of every frame is embedded and searched.

**Unpaced** runs (``loop=False, realtime=False``): the file waits for the pipeline, so every
frame is processed. The pipeline's wall time runs from adding the first stream until
:meth:`Pipeline.close` returns after every stream ended, i.e. until the last frame has been
detected, tracked, embedded, searched and alerted (``shutdown_grace_s`` is raised so the drain is
never cut short); it includes decoding, which the naive loop is spared. frames/s = frames
processed / wall seconds. For each stream count, naive and pipeline runs alternate in pairs, the
order flipping from one pair to the next, and the stream counts take turns within a round, so
that load from elsewhere on the machine hits both alike. Figures are medians over the pairs;
``speedup_frames_per_s`` is the median of the per-pair ratios naive seconds / pipeline seconds on
the same frames (``speedup_cpu_s`` uses the process's CPU seconds, which others' load inflates
less).

**Paced** runs (``loop=True, realtime=True``, like cameras): frames come at the clip's rate, 30
per second per stream, whatever the pipeline manages, and are dropped (counted, by reason) when it
is behind. Cameras are not in step, so stream i starts i/N of the clip's length after the first
(``start_offset_s``); the measurement window of ``--paced-s`` seconds opens once the last stream
has been added and closes before the pipeline does (closing drains, which is not live work). One
run per stream count; its figures are differences of the pipeline's counters over the window:
processed frames/s = frames processed / window seconds, ``input_frames_per_s`` the frames decoded
(dropped ones included), and the depth of the embed queue sampled every 0.1 s. With the default
cooldown a performer raises one match per stream per 30 s, too few to take percentiles from, so
paced runs set ``cooldown_s = 0`` (a match per track; embedding and tracking keep their
defaults), reported under ``pipeline_settings``. Every run raises ``shutdown_grace_s`` so that
closing never cuts the drain short.

Figures per run: frames/s; embeddings per second of video (embeddings computed / seconds of video
seen, i.e. frames decoded / the clip's frame rate; for the naive loop, every face); the
pipeline's own end-to-end alert latency, p50/p95/p99 in ms from decoding the frame whose
embedding decided the alert to the alert being emitted (what
``metrics.alert_latency_percentiles()`` reports; paced runs keep the samples observed in the
window). On unpaced runs it includes the wait behind the file's frames queued ahead, so only the
paced figure is a goal. Also drops by reason, alerts by type, the persons matched, mean
milliseconds per stage and mean batch sizes from the pipeline's Prometheus histograms, and
``engine_stage_s``: seconds per step of ``engine.times`` (prepare, infer, decode, align), which
show where the time outside inference goes.

**Overhead**: the share of the wall time during which no model inference (the detector's or the
recognizer's ONNX Runtime call, the same spans as ``engine.times`` ``detect.infer`` and
``embed.infer``) and no watchlist search (``watchlist.match``) was running:
``1 - |union of those spans| / wall``. Detection and embedding run on different threads and may
overlap, so the union, not the sum, is what the machine spent on useful work. The sums per kind
are reported beside it (``busy_s_of_median_run``, with ``engine_infer_sum``: ``engine.times``'
own detect.infer + embed.infer, as a cross-check; ``busy_sum_share_of_median_run`` exceeds 1 when
they overlap), and the naive loop's overhead by the same definition as a reference. The spans
are recorded by thin wrappers the benchmark puts around ``engine.detector.infer``,
``engine.embedder.infer`` and ``watchlist.match``.

Goals, judged at the largest stream count measured (8 in a full run):

* ``unpaced_speedup_ge_3x``: the pipeline processes at least 3x the naive frames/s;
* ``paced_alert_p95_lt_250ms``: alert latency p95 under 250 ms on paced streams;
* ``overhead_lt_0_15``: pipeline overhead under 15 % on unpaced streams.

The machine may be shared: ``machine.load_average`` gives the load before and after the run.
Progress goes to stderr; stdout carries only the JSON object. The goals are reported, not
asserted: the exit status is 0 unless the arguments are wrong (2: also when the face data is
missing) or a pipeline run does not finish (1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from bench_host import FACES_ENV, faces_root, host, load_average, progress
from facewatch.config import Settings, load_settings
from facewatch.errors import EnrollmentRejected
from facewatch.pipeline.alerts import Alert
from facewatch.pipeline.metrics import STAGES, PipelineMetrics
from facewatch.pipeline.runner import Pipeline
from facewatch.recognizer.engine import INFERENCE_STAGES, FaceEngine
from facewatch.stream.config import StreamConfig
from facewatch.watchlist.service import Photo, Watchlist

CLIP = "videos/fr_short_hamilton_clip.mp4"
PERFORMERS = ("lin_manuel_miranda", "alex_lacamoire")
#: Not in the clip: the watchlist is not a list of exactly the people on screen.
DISTRACTORS = (
    "joe_biden",
    "bradley_cooper",
    "john_lennon",
    "eric_clapton",
    "angelina_jolie",
    "anthony_hopkins",
)
STREAMS = (1, 4, 8)
QUICK_STREAMS = (1, 2)
PAIRS = 3
PACED_S = 20.0
QUICK_PACED_S = 6.0
QUICK_CLIP_FRAMES = 30
GOAL_SPEEDUP = 3.0
GOAL_P95_MS = 250.0
GOAL_OVERHEAD = 0.15
#: Unpaced runs drain every frame at close: no grace period may cut that short. (Nor may it in
#: paced runs: a drain cut short while the embed queue is full leaves ``Pipeline.close()``
#: waiting forever, the detect stage's clean-up blocked on a queue nobody empties any more.)
UNPACED_PIPELINE: dict[str, Any] = {"shutdown_grace_s": 600.0}
#: Paced runs: a match per track rather than per person per 30 s, for enough latency samples.
PACED_PIPELINE: dict[str, Any] = {"cooldown_s": 0.0, "shutdown_grace_s": 600.0}
#: How often paced runs sample the depth of the embed queue, in seconds.
QUEUE_SAMPLE_S = 0.1
#: A pipeline run that takes longer than this has hung.
RUN_TIMEOUT_S = 1800.0
#: Kinds of busy span: the two ONNX Runtime calls and the watchlist search.
SPAN_KINDS = ("detect.infer", "embed.infer", "search")

Image = NDArray[np.uint8]


# --- input ------------------------------------------------------------------------------------


def cut_clip(source: Path, target: Path, frames: int) -> int:
    """Copy the first ``frames`` packets of ``source`` (more, up to the next keyframe, when its
    codec reorders frames).

    No re-encoding, so the frames are bit-identical to the source's first ones. Returns the
    number of frames copied.
    """
    copied = 0
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        video_in = inp.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        # Without B-frames no frame refers to a later one: any packet is a clean cut.
        reorders = bool(video_in.codec_context.has_b_frames)
        for packet in inp.demux(video_in):
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            if copied >= frames and (packet.is_keyframe or not reorders):
                break
            packet.stream = video_out
            out.mux(packet)
            copied += 1
    return copied


def decode_clip(path: Path) -> tuple[list[Image], float]:
    """Every frame of the clip as (H, W, 3) BGR, and its frame rate (frames per second)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        rate = video.average_rate or video.guessed_rate or Fraction(30)
        frames = [
            frame.to_ndarray(format="bgr24").astype(np.uint8, copy=False)
            for frame in container.decode(video)
        ]
    if not frames:
        raise SystemExit(f"{path}: no frames decoded")
    return frames, float(rate)


def enroll(watchlist: Watchlist, root: Path) -> dict[str, Any]:
    """The performers and the distractors, each from all their photos (largest face)."""
    enrolled: list[str] = []
    faces = rejected = 0
    for name in (*PERFORMERS, *DISTRACTORS):
        folder = root / "identities" / name
        photos = [Photo(str(p), p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]
        try:
            result = watchlist.enroll({"name": name}, photos, largest=True)
        except EnrollmentRejected as exc:
            progress(f"  {name}: no usable photo ({exc}); left out")
            rejected += len(photos)
            continue
        enrolled.append(name)
        faces += len(result.accepted)
        rejected += len(result.rejected)
    missing = [p for p in PERFORMERS if p not in enrolled]
    if missing:
        progress(f"performers {missing} could not be enrolled: no match can be expected")
    return {"persons": enrolled, "faces": faces, "photos_rejected": rejected}


# --- instrumentation --------------------------------------------------------------------------


class Spans:
    """(kind, start, end) ``perf_counter`` spans of the calls made through :meth:`wrap`.

    Thread-safe: the pipeline calls the wrapped functions from its worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[tuple[str, float, float]] = []

    def wrap(self, kind: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                end = time.perf_counter()
                with self._lock:
                    self._spans.append((kind, start, end))

        return timed

    def reset(self) -> None:
        with self._lock:
            self._spans.clear()

    def busy(self, start: float, end: float) -> dict[str, float]:
        """Seconds per kind (summed) and ``union``: the seconds of [start, end] inside any span."""
        with self._lock:
            spans = [(k, max(a, start), min(b, end)) for k, a, b in self._spans]
        spans = [s for s in spans if s[2] > s[1]]
        out = {kind: 0.0 for kind in SPAN_KINDS}
        for kind, a, b in spans:
            out[kind] += b - a
        union, reach = 0.0, start
        for _, a, b in sorted(spans, key=lambda s: s[1]):
            if b > reach:
                union += b - max(a, reach)
                reach = b
        out["union"] = union
        return out


def instrument(engine: FaceEngine, watchlist: Watchlist) -> Spans:
    """Record every inference call and search of ``engine`` and ``watchlist`` from now on."""
    spans = Spans()
    # Instance attributes shadow the methods: every caller, the pipeline's threads included,
    # goes through the wrappers. Nothing else about the calls changes.
    engine.detector.infer = spans.wrap("detect.infer", engine.detector.infer)  # type: ignore[method-assign]
    engine.embedder.infer = spans.wrap("embed.infer", engine.embedder.infer)  # type: ignore[method-assign]
    watchlist.match = spans.wrap("search", watchlist.match)  # type: ignore[method-assign]
    return spans


# --- one run of each way ----------------------------------------------------------------------


@dataclass
class Sample:
    """What one run measured."""

    frames: int
    faces: int
    embeddings: int
    wall_s: float
    cpu_s: float
    busy: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def overhead_share(self) -> float:
        return 1.0 - self.busy["union"] / self.wall_s


@contextmanager
def clocks() -> Iterator[dict[str, float]]:
    """Wall and process CPU seconds of the block, filled in when it ends."""
    out: dict[str, float] = {"start": time.perf_counter()}
    cpu = time.process_time()
    try:
        yield out
    finally:
        out["end"] = time.perf_counter()
        out["wall_s"] = out["end"] - out["start"]
        out["cpu_s"] = time.process_time() - cpu


def naive_run(
    engine: FaceEngine, watchlist: Watchlist, frames: Sequence[Image], copies: int, spans: Spans
) -> Sample:
    """Every frame of ``copies`` copies of the clip, one frame, one face, one search at a time."""
    faces = matched = 0
    threshold = watchlist.threshold
    engine.times.reset()
    spans.reset()
    with clocks() as clock:
        for _ in range(copies):
            for frame in frames:
                found, crops = engine.detect_aligned([frame])
                faces += len(found[0])
                for crop in crops[0]:
                    embedding = engine.embed_crops(crop[None])
                    candidates = watchlist.match(embedding)[0]
                    matched += bool(candidates and candidates[0].similarity >= threshold)
    return Sample(
        frames=copies * len(frames),
        faces=faces,
        embeddings=faces,
        wall_s=clock["wall_s"],
        cpu_s=clock["cpu_s"],
        busy=spans.busy(clock["start"], clock["end"]),
        extra={"faces_matched": matched, "engine_stage_s": engine_stage_s(engine)},
    )


def engine_stage_s(engine: FaceEngine) -> dict[str, float]:
    """Seconds per stage of ``engine.times`` since its last reset (prepare, infer, align...)."""
    return {k: round(v["seconds"], 3) for k, v in engine.times.snapshot().items()}


class TimedMetrics(PipelineMetrics):
    """The pipeline's metrics, also keeping when each alert latency was observed.

    The latency itself is the pipeline's own (from decoding the deciding frame to emitting the
    alert); the time of observation only picks the samples of a measurement window.
    """

    def __init__(self) -> None:
        super().__init__()
        self.observed: list[tuple[float, float]] = []  # (time.monotonic(), seconds)

    def observe_alert_latency(self, seconds: float) -> None:
        super().observe_alert_latency(seconds)
        self.observed.append((time.monotonic(), seconds))

    def window_percentiles(self, start: float, end: float) -> dict[str, Any]:
        """p50 / p95 / p99 in ms (None when empty) of the latencies observed in [start, end]."""
        ms = [1000 * s for t, s in self.observed if start <= t <= end]
        out: dict[str, Any] = {f"p{q}_ms": None for q in (50, 95, 99)}
        if ms:
            out = {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}
        return {**out, "samples": len(ms)}


def stream_totals(summary: dict[str, Any]) -> dict[str, Any]:
    """Counters of a summary summed over its streams, with the pipeline's own totals."""
    dropped: Counter[str] = Counter()
    for stream in summary["streams"].values():
        dropped.update(stream["dropped"])
    return {
        "frames_decoded": sum(s["frames_decoded"] for s in summary["streams"].values()),
        "frames_processed": sum(s["frames_processed"] for s in summary["streams"].values()),
        "dropped": dropped,
        "faces": summary["faces"],
        "tracks": summary["tracks"],
        "embeddings": summary["embeddings"],
        "searches": summary["searches"],
        "alerts": Counter(summary["alerts"]),
    }


def histogram_means(pipeline: Pipeline, name: str, scale: float) -> dict[str, float | None]:
    """Mean of a per-stage histogram of the pipeline's registry, per stage (None: no sample)."""
    registry = pipeline.metrics.registry
    out: dict[str, float | None] = {}
    for stage in STAGES:
        count = registry.get_sample_value(f"{name}_count", {"stage": stage})
        total = registry.get_sample_value(f"{name}_sum", {"stage": stage})
        out[stage] = round(scale * total / count, 3) if count and total is not None else None
    return {k: v for k, v in out.items() if v is not None}


def latency(pipeline: Pipeline) -> dict[str, Any]:
    """The pipeline's alert latency percentiles (ms) and how many alerts they come from."""
    count = pipeline.metrics.registry.get_sample_value("facewatch_alert_latency_seconds_count")
    return {**pipeline.metrics.alert_latency_percentiles(), "samples": int(count or 0)}


def pipeline_figures(
    pipeline: Pipeline, summary: dict[str, Any], alerts: list[Alert]
) -> dict[str, Any]:
    """Totals of one pipeline run, from its summary, its alerts and its metrics."""
    totals = stream_totals(summary)
    return {
        **totals,
        "dropped": dict(totals["dropped"]),
        "alerts": dict(totals["alerts"]),
        "alerts_suppressed": summary["alerts_suppressed"],
        "persons_matched": sorted(
            {a.person for a in alerts if a.type in ("match", "update") and a.person}
        ),
        "alert_latency_ms": latency(pipeline),
        "stage_ms_mean": histogram_means(pipeline, "facewatch_stage_seconds", 1000.0),
        "batch_size_mean": histogram_means(pipeline, "facewatch_batch_size", 1.0),
        "busy_s": {k: round(v, 3) for k, v in pipeline.busy_s.items()},
        "snapshot_errors": summary["snapshot_errors"],
    }


async def _unpaced(
    settings: Settings, engine: FaceEngine, watchlist: Watchlist, clip: Path, copies: int
) -> tuple[dict[str, float], dict[str, Any]]:
    async with Pipeline(settings, engine, watchlist) as pipeline:
        subscription = pipeline.subscribe(maxsize=1_000_000)
        with clocks() as clock:
            for i in range(copies):
                config = StreamConfig(url=str(clip), name=f"s{i}", loop=False, realtime=False)
                await pipeline.add_stream(config)
            async with asyncio.timeout(RUN_TIMEOUT_S):
                await pipeline.streams.wait_all_ended()
            await pipeline.close()  # drains: every frame detected, embedded, searched, alerted
    alerts = [alert async for alert in subscription]
    return clock, pipeline_figures(pipeline, pipeline.summary(), alerts)


def pipeline_run(
    settings: Settings,
    engine: FaceEngine,
    watchlist: Watchlist,
    clip: Path,
    copies: int,
    spans: Spans,
) -> Sample:
    """N unpaced streams of the clip through a fresh pipeline, until every frame is done."""
    engine.times.reset()
    spans.reset()
    try:
        clock, figures = asyncio.run(_unpaced(settings, engine, watchlist, clip, copies))
    except TimeoutError:
        progress(f"{copies} unpaced streams did not end within {RUN_TIMEOUT_S:.0f} s")
        raise SystemExit(1) from None
    stages = engine_stage_s(engine)
    figures["engine_stage_s"] = stages
    busy = spans.busy(clock["start"], clock["end"])
    busy["engine_infer_sum"] = sum(stages.get(k, 0.0) for k in INFERENCE_STAGES)
    return Sample(
        frames=figures["frames_processed"],
        faces=figures["faces"],
        embeddings=figures["embeddings"],
        wall_s=clock["wall_s"],
        cpu_s=clock["cpu_s"],
        busy=busy,
        extra=figures,
    )


async def _paced(
    settings: Settings,
    engine: FaceEngine,
    watchlist: Watchlist,
    clip: Path,
    copies: int,
    seconds: float,
    clip_s: float,
) -> dict[str, Any]:
    metrics = TimedMetrics()
    async with Pipeline(settings, engine, watchlist, metrics=metrics) as pipeline:
        subscription = pipeline.subscribe(maxsize=1_000_000)
        # Cameras are not in step: stream i starts i/N of the clip after the first, so that
        # scene cuts and new faces do not hit every stream at the same instant.
        for i in range(copies):
            if i:
                await asyncio.sleep(clip_s / copies)
            config = StreamConfig(url=str(clip), name=f"s{i}", loop=True, realtime=True)
            await pipeline.add_stream(config)
        before, start = stream_totals(pipeline.summary()), time.monotonic()
        depths: list[float] = []
        while time.monotonic() < start + seconds:
            await asyncio.sleep(QUEUE_SAMPLE_S)
            depths.append(
                pipeline.metrics.registry.get_sample_value(
                    "facewatch_queue_depth", {"queue": "embed"}
                )
                or 0.0
            )
        # Read before closing: closing stops the sources and drains, which is not live work.
        after, end = stream_totals(pipeline.summary()), time.monotonic()
        latencies = metrics.window_percentiles(start, end)
    alerts = [alert async for alert in subscription]
    elapsed = end - start
    window = {k: after[k] - before[k] for k in after}
    decoded, processed = window["frames_decoded"], window["frames_processed"]
    return {
        "window_s": round(elapsed, 3),
        "start_offset_s": round(clip_s / copies, 3) if copies > 1 else 0.0,
        "processed_frames_per_s": processed / elapsed,
        "input_frames_per_s": decoded / elapsed,
        "processed_share": processed / decoded if decoded else 0.0,
        "frames_decoded": decoded,
        "frames_processed": processed,
        "dropped": dict(window["dropped"]),
        "faces": window["faces"],
        "tracks": window["tracks"],
        "embeddings": window["embeddings"],
        "alerts": dict(window["alerts"]),
        "alert_latency_ms": latencies,
        "embed_queue_depth": {
            "mean": round(statistics.fmean(depths), 1) if depths else 0.0,
            "max": max(depths, default=0.0),
        },
        "persons_matched_whole_run": sorted(
            {a.person for a in alerts if a.type in ("match", "update") and a.person}
        ),
        "stage_ms_mean_whole_run": histogram_means(pipeline, "facewatch_stage_seconds", 1000.0),
        "batch_size_mean_whole_run": histogram_means(pipeline, "facewatch_batch_size", 1.0),
    }


def paced_run(
    settings: Settings,
    engine: FaceEngine,
    watchlist: Watchlist,
    clip: Path,
    copies: int,
    seconds: float,
    fps: float,
    clip_s: float,
) -> dict[str, Any]:
    """N looping streams played in real time; rates, drops and latency over ``seconds``."""
    figures = asyncio.run(_paced(settings, engine, watchlist, clip, copies, seconds, clip_s))
    video_s = figures["frames_decoded"] / fps
    figures["video_s"] = round(video_s, 3)
    figures["offered_frames_per_s"] = copies * fps
    figures["embeddings_per_video_s"] = figures["embeddings"] / video_s if video_s else 0.0
    return figures


# --- figures ----------------------------------------------------------------------------------


def median_sample(samples: list[Sample]) -> Sample:
    """The run of median wall time (the upper one of an even count)."""
    return sorted(samples, key=lambda s: s.wall_s)[len(samples) // 2]


def summarise(samples: list[Sample], fps: float) -> dict[str, Any]:
    """Medians over the pairs of one way at one stream count."""
    frames = samples[0].frames
    wall = statistics.median(s.wall_s for s in samples)
    embeddings = statistics.median(s.embeddings for s in samples)
    median_run = median_sample(samples)
    busy = {k: round(v, 3) for k, v in median_run.busy.items()}
    return {
        "frames": frames,
        "video_s": round(frames / fps, 3),
        "frames_per_s": frames / wall,
        "wall_s": wall,
        "cpu_s": statistics.median(s.cpu_s for s in samples),
        "wall_s_runs": [round(s.wall_s, 3) for s in samples],
        "faces": samples[0].faces,
        "embeddings": embeddings,
        "embeddings_per_video_s": embeddings / (frames / fps),
        "overhead_share": statistics.median(s.overhead_share for s in samples),
        "overhead_share_runs": [round(s.overhead_share, 4) for s in samples],
        "busy_s_of_median_run": busy,
        "busy_sum_share_of_median_run": round(
            sum(median_run.busy[k] for k in SPAN_KINDS) / median_run.wall_s, 4
        ),
    }


def paired_ratio(naive: list[Sample], pipeline: list[Sample], key: str) -> float:
    """Median over pairs of naive seconds / pipeline seconds on the same frames."""
    return statistics.median(
        float(getattr(n, key)) / float(getattr(p, key))
        for n, p in zip(naive, pipeline, strict=True)
    )


def unpaced_figures(naive: list[Sample], piped: list[Sample], fps: float) -> dict[str, Any]:
    """Both ways at one stream count, with the paired ratios; run totals from the median run."""
    pipeline = summarise(piped, fps)
    median_run = median_sample(piped)
    pipeline.update(
        {
            k: median_run.extra[k]
            for k in (
                "frames_decoded",
                "dropped",
                "tracks",
                "searches",
                "alerts",
                "persons_matched",
                "alert_latency_ms",
                "stage_ms_mean",
                "batch_size_mean",
                "busy_s",
                "engine_stage_s",
            )
        }
    )
    pipeline["frames_processed_runs"] = [s.frames for s in piped]
    pipeline["dropped_runs"] = [sum(s.extra["dropped"].values()) for s in piped]
    naive_figures = summarise(naive, fps)
    naive_figures["faces_matched"] = naive[0].extra["faces_matched"]
    naive_figures["engine_stage_s"] = median_sample(naive).extra["engine_stage_s"]
    return {
        "naive": naive_figures,
        "pipeline": pipeline,
        "same_frames": all(n.frames == p.frames for n, p in zip(naive, piped, strict=True)),
        "same_faces": all(n.faces == p.faces for n, p in zip(naive, piped, strict=True)),
        "speedup_frames_per_s": paired_ratio(naive, piped, "wall_s"),
        "speedup_frames_per_s_pairs": [
            round(n.wall_s / p.wall_s, 3) for n, p in zip(naive, piped, strict=True)
        ],
        "speedup_cpu_s": paired_ratio(naive, piped, "cpu_s"),
        "embeddings_naive_per_pipeline": naive_figures["embeddings"] / pipeline["embeddings"]
        if pipeline["embeddings"]
        else None,
    }


def goals(
    unpaced: dict[str, Any], paced: dict[str, Any], streams: int
) -> tuple[dict[str, Any], dict[str, bool]]:
    """Figures the goals are judged on, at ``streams`` streams, and the verdicts."""
    at = unpaced[str(streams)]
    live = paced[str(streams)]
    p95 = live["alert_latency_ms"]["p95_ms"]
    figures = {
        "streams": streams,
        "unpaced_speedup_frames_per_s": at["speedup_frames_per_s"],
        "unpaced_pipeline_frames_per_s": at["pipeline"]["frames_per_s"],
        "unpaced_naive_frames_per_s": at["naive"]["frames_per_s"],
        "paced_alert_latency_p50_ms": live["alert_latency_ms"]["p50_ms"],
        "paced_alert_latency_p95_ms": p95,
        "paced_alert_latency_samples": live["alert_latency_ms"]["samples"],
        "paced_alert_latency_p95_ms_by_streams": {
            n: run["alert_latency_ms"]["p95_ms"] for n, run in paced.items()
        },
        "unpaced_overhead_share": at["pipeline"]["overhead_share"],
        "naive_overhead_share": at["naive"]["overhead_share"],
        "overhead_definition": "1 - |union of detect.infer, embed.infer and search spans| / wall",
    }
    verdicts = {
        "unpaced_speedup_ge_3x": bool(at["speedup_frames_per_s"] >= GOAL_SPEEDUP),
        "paced_alert_p95_lt_250ms": p95 is not None and p95 < GOAL_P95_MS,
        "overhead_lt_0_15": bool(at["pipeline"]["overhead_share"] < GOAL_OVERHEAD),
    }
    return figures, verdicts


def machine(engine: FaceEngine, threads: int, load_before: tuple[float, ...]) -> dict[str, Any]:
    return {
        **host(load_before),
        "numpy": np.__version__,
        "av": av.__version__,
        "onnxruntime": ort.__version__,
        "providers": engine.providers,
        "intra_op_threads": threads or "onnxruntime default",
        "pack": engine.pack.name,
        "detection_size": list(engine.settings.detection_size),
        "batch_size": engine.settings.batch_size,
        "embed_batch_size": engine.settings.embed_batch_size,
        "max_workers": engine.settings.max_workers,
    }


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 and 2 streams, one pair, the clip cut to 30 frames, 6 s paced: a smoke run "
        "of well under a minute",
    )
    parser.add_argument(
        "--faces-dir",
        type=Path,
        default=None,
        help=f"face data folder (default: ${FACES_ENV} or ../shared/data/faces)",
    )
    parser.add_argument(
        "--streams", default=None, help="comma-separated stream counts (default 1,4,8)"
    )
    parser.add_argument(
        "--pairs", type=int, default=None, help="naive/pipeline pairs per stream count (default 3)"
    )
    parser.add_argument(
        "--paced-s", type=float, default=None, help="seconds of each paced run (default 20)"
    )
    parser.add_argument(
        "--clip-frames",
        type=int,
        default=None,
        help="use only the first N frames of the clip (default: all of them)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ONNX Runtime intra-op threads per session (default 0: ONNX Runtime's own choice)",
    )
    parser.add_argument(
        "--providers", default="cpu", help="engine.providers, e.g. cpu or auto (default cpu)"
    )
    args = parser.parse_args(argv)
    try:
        args.streams = [
            int(s)
            for s in (
                args.streams.split(",")
                if args.streams
                else QUICK_STREAMS
                if args.quick
                else STREAMS
            )
        ]
    except ValueError as exc:
        parser.error(f"--streams takes comma-separated integers ({exc})")
    args.pairs = args.pairs or (1 if args.quick else PAIRS)
    args.paced_s = args.paced_s or (QUICK_PACED_S if args.quick else PACED_S)
    if args.clip_frames is None and args.quick:
        args.clip_frames = QUICK_CLIP_FRAMES
    if min(args.streams) < 1 or args.pairs < 1 or args.paced_s <= 0 or args.threads < 0:
        parser.error("stream counts, --pairs and --paced-s must be positive")
    if args.clip_frames is not None and args.clip_frames < 1:
        parser.error("--clip-frames must be positive")
    args.streams = sorted(set(args.streams))
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    root = faces_root(args.faces_dir)
    source = root / CLIP
    if not source.is_file() or not (root / "identities").is_dir():
        progress(f"face data not found at {root}: pass --faces-dir or set ${FACES_ENV}")
        raise SystemExit(2)

    with tempfile.TemporaryDirectory(prefix="facewatch-bench-") as tmp:
        work = Path(tmp)
        clip = source
        if args.clip_frames is not None:
            clip = work / "clip.mp4"
            copied = cut_clip(source, clip, args.clip_frames)
            progress(f"clip cut to its first {copied} frames")
        frames, fps = decode_clip(clip)
        clip_s = len(frames) / fps
        progress(f"{CLIP}: {len(frames)} frames at {fps:.2f} frames/s")

        base: dict[str, Any] = {
            "data_dir": work / "data",
            "engine": {"providers": args.providers.split(","), "thread_pool_size": args.threads},
            "watchlist": {"snapshot_interval_s": 0},
        }
        unpaced_settings = load_settings(**base, pipeline=UNPACED_PIPELINE)
        paced_settings = load_settings(**base, pipeline=PACED_PIPELINE)
        progress("loading engine")
        engine = FaceEngine.load(unpaced_settings.engine)
        with Watchlist.open(unpaced_settings, engine) as watchlist:
            progress("enrolling the performers and distractors")
            enrolled = enroll(watchlist, root)
            spans = instrument(engine, watchlist)

            progress("warm-up: naive on 4 frames, pipeline on 1 unpaced stream")
            naive_run(engine, watchlist, frames[:4], 1, spans)
            warm = pipeline_run(unpaced_settings, engine, watchlist, clip, 1, spans)
            progress(
                f"  warm-up: {warm.frames} frames, {warm.extra['alerts']} alerts, "
                f"matched {warm.extra['persons_matched']}"
            )

            naive: dict[int, list[Sample]] = {n: [] for n in args.streams}
            piped: dict[int, list[Sample]] = {n: [] for n in args.streams}
            for pair in range(args.pairs):
                for n in args.streams:
                    # Flip the order every pair so that neither way always goes first.
                    order = ("naive", "pipeline") if (pair + n) % 2 == 0 else ("pipeline", "naive")
                    for way in order:
                        if way == "naive":
                            naive[n].append(naive_run(engine, watchlist, frames, n, spans))
                        else:
                            piped[n].append(
                                pipeline_run(unpaced_settings, engine, watchlist, clip, n, spans)
                            )
                    a, b = naive[n][-1], piped[n][-1]
                    progress(
                        f"pair {pair + 1}/{args.pairs}, {n} unpaced stream(s): naive "
                        f"{a.frames / a.wall_s:.1f} frames/s, pipeline {b.frames / b.wall_s:.1f} "
                        f"frames/s ({a.wall_s / b.wall_s:.2f}x), pipeline overhead "
                        f"{b.overhead_share:.1%}"
                    )

            paced: dict[str, Any] = {}
            for n in args.streams:
                progress(f"{n} paced stream(s) for {args.paced_s:g} s")
                paced[str(n)] = paced_run(
                    paced_settings, engine, watchlist, clip, n, args.paced_s, fps, clip_s
                )
                live = paced[str(n)]
                progress(
                    f"  {live['processed_frames_per_s']:.1f} of "
                    f"{live['input_frames_per_s']:.1f} frames/s processed, alert latency "
                    f"p95 {live['alert_latency_ms']['p95_ms']} ms "
                    f"({live['alert_latency_ms']['samples']} alerts)"
                )

        unpaced = {str(n): unpaced_figures(naive[n], piped[n], fps) for n in args.streams}
        judged = max(args.streams)
        goal_figures, verdicts = goals(unpaced, paced, judged)
        return {
            "machine": machine(engine, args.threads, load_before),
            "mode": "quick" if args.quick else "full",
            "clip": {
                "path": CLIP,
                "frames": len(frames),
                "fps": round(fps, 3),
                "resolution_wh": [int(frames[0].shape[1]), int(frames[0].shape[0])],
                "cut_at_frames": args.clip_frames,
            },
            "watchlist": enrolled,
            "streams": args.streams,
            "pairs": args.pairs,
            "paced_s": args.paced_s,
            "pipeline_settings": {
                "unpaced": UNPACED_PIPELINE,
                "paced": PACED_PIPELINE,
                "defaults_otherwise": unpaced_settings.pipeline.model_dump(
                    exclude=set(UNPACED_PIPELINE) | set(PACED_PIPELINE)
                ),
            },
            "unpaced": unpaced,
            "paced": paced,
            "goals_judged_at_streams": judged,
            "goal_figures": goal_figures,
            "goals": verdicts,
        }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(json.dumps(run(parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
