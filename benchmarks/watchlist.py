"""Speed and recall of the watchlist's vector search, FAISS vs. NumPy; prints one JSON object.

Usage::

    python benchmarks/watchlist.py [--quick] [--sizes N,...] [--queries N] [--nprobe P,...]
                                   [--threads N] [--batch-size N] [--k N]

For each size N (default 10k, 100k and 1M) the gallery is N synthetic identities: seeded random
Gaussian vectors of dimension 512, L2-normalised, so they are spread uniformly over the sphere
(two of them have a cosine of about ±0.04, the best of a million about 0.23). Queries are
realistic probes: an enrolled vector ``x`` picked at random, mixed with a random unit direction
``n`` orthogonal to it as ``c·x + sqrt(1 - c²)·n``, so that the cosine to its own identity is
exactly ``c``, drawn uniformly from 0.6–0.7 (a typical genuine face match).

Uniform random vectors are the hardest case for an approximate index: they have no cluster
structure for the IVF cells to follow, so a probe's own cell is only weakly favoured by the
coarse quantizer. Recall figures here are a lower bound for real face embeddings, which cluster;
latencies and throughputs carry over.

Methods, all on the same gallery and queries, with ``k`` results per query:

* ``exact``: ``FaissIndex(dim, IndexPolicy(approximate_above=N))`` (``IndexFlatIP``);
* ``pq``: ``FaissIndex(dim, IndexPolicy(approximate_above=0))``, the policy's default
  approximate index: a 4-bit product-quantized scan of every row re-ranked with the exact
  vectors (``IndexRefineFlat(IndexPQFastScan)``);
* ``ivf_nprobe_P``: ``FaissIndex(dim, IndexPolicy(approximate_above=0, nprobe=P))`` for each P of
  ``--nprobe`` and the policy default, with the policy's own ``nlist_for(N)`` cells; the IVF
  index is trained and filled once and handed to the others by ``dump``/``restore`` (the
  snapshot path), since nprobe only matters at search time;
* ``numpy``: brute force on the same float32 gallery, ``gallery @ q`` then ``argpartition`` for
  the top k; batched, ``Q @ block.T`` over blocks of 65,536 gallery rows, the top k of each block
  kept and merged (this bounds the similarity matrix to batch × 65,536 floats).

Every method is searched once per query ("single", the latency of one face) and in batches of
``--batch-size`` queries ("batched", a busy frame or a backlog). The queries are split into
rounds of one batch; in each round every method does its single-query searches and its batched
search of that round's queries, the methods taking turns in a rotating order, so that load from
elsewhere on the machine hits them alike. Each configuration is warmed up first.

Figures per method: single-query latency p50/p99/mean (ms) and queries/s, batched queries/s,
recall@1 (the share of queries whose top-1 face id equals that of ``exact`` on the same query;
``exact`` against itself is 1 by construction), the share whose top-1 is the enrolled identity
the probe was made from, build time, the index's own memory estimate (``status()``) and the
growth of the process's resident memory during the build. Ratios are medians over the rounds of
the per-round ratio of seconds spent on the same queries (greater than 1: the first is faster).

Goals, judged at the largest size measured (1M in a full run):

* ``exact_batched_ge_5x_numpy_single``: batched exact FAISS gives at least 5× the queries/s of
  single-query NumPy brute force (``gallery @ q`` per probe, the straightforward baseline code
  would write). The ratio against batched NumPy, the same BLAS-bound work in FAISS's kernels, is
  reported beside it as ``exact_batched_vs_numpy_batched`` and is not a goal;
* ``approximate_p99_lt_5ms_recall_ge_0_99``: the policy's default approximate index (``pq``)
  answers a single query under 5 ms at p99 with recall@1 of at least 0.99.
  ``approximate_methods_meeting_goal`` lists every approximate method measured that does.

Progress goes to stderr; stdout carries only the JSON object. The goals are reported, not
asserted: the exit status is 0 unless the arguments are wrong.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from bench_host import host, progress
from facewatch.watchlist.index import FaissIndex, IndexPolicy

DIM = 512
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000, 20_000)
NPROBES = (8, 16, 32, 64)
PROBE_COSINE = (0.6, 0.7)
#: Gallery rows per block of batched NumPy brute force (a 256-query batch: 64 MiB of floats).
NUMPY_BLOCK = 65_536
GOAL_SPEEDUP = 5.0
GOAL_P99_MS = 5.0
GOAL_RECALL = 0.99
EXACT = "exact"
PQ = "pq"
NUMPY = "numpy"

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]
#: A search: (Q, D) queries -> (Q,) top-1 face ids (the full top k is computed and dropped).
Search = Callable[[F32], I64]


# --- data -------------------------------------------------------------------------------------


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> F32:
    """(rows, dim) float32 Gaussian vectors scaled to unit length (uniform on the sphere)."""
    out = rng.standard_normal((rows, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def probes(rng: np.random.Generator, gallery: F32, count: int) -> tuple[F32, I64, F32]:
    """``count`` probes of random enrolled rows at a cosine drawn from ``PROBE_COSINE``.

    Returns:
        (count, D) float32 unit probes, (count,) int64 source rows, (count,) float32 cosine of
        each probe to its source row.
    """
    sources = rng.choice(len(gallery), size=count, replace=count > len(gallery))
    enrolled = gallery[sources]
    noise = rng.standard_normal(enrolled.shape, dtype=np.float32)
    noise -= np.sum(noise * enrolled, axis=1, keepdims=True) * enrolled  # orthogonal to x
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cosine = rng.uniform(*PROBE_COSINE, size=(count, 1)).astype(np.float32)
    mixed = cosine * enrolled + np.sqrt(1 - cosine**2) * noise
    out: F32 = (mixed / np.linalg.norm(mixed, axis=1, keepdims=True)).astype(np.float32)
    own: F32 = np.sum(out * enrolled, axis=1, dtype=np.float32)
    return out, sources.astype(np.int64), own


# --- the methods ------------------------------------------------------------------------------


def faiss_search(index: FaissIndex, k: int) -> Search:
    return lambda queries: index.search(queries, k).face_ids[:, 0]


def numpy_single(gallery: F32, face_ids: I64, k: int) -> Search:
    """Brute force one probe at a time: ``gallery @ q``, top k by ``argpartition``."""

    def search(queries: F32) -> I64:
        top1 = np.empty(len(queries), np.int64)
        for i, query in enumerate(queries):
            similarity = gallery @ query
            top = np.argpartition(similarity, len(similarity) - k)[-k:]
            top = top[np.argsort(-similarity[top], kind="stable")]
            top1[i] = face_ids[top[0]]
        return top1

    return search


def numpy_batched(gallery: F32, face_ids: I64, k: int) -> Search:
    """Brute force a batch: ``Q @ block.T`` per block of gallery rows, top k per block, merged."""

    def search(queries: F32) -> I64:
        best_sim, best_row = [], []
        for start in range(0, len(gallery), NUMPY_BLOCK):
            similarity = queries @ gallery[start : start + NUMPY_BLOCK].T  # (Q, block)
            take = min(k, similarity.shape[1])
            top = np.argpartition(similarity, similarity.shape[1] - take, axis=1)[:, -take:]
            best_sim.append(np.take_along_axis(similarity, top, axis=1))
            best_row.append(top + start)
        sims, rows = np.concatenate(best_sim, axis=1), np.concatenate(best_row, axis=1)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return face_ids[np.take_along_axis(rows, order, axis=1)[:, 0]]

    return search


@dataclass
class Method:
    """One way of searching, with what it cost to build and what it measured."""

    single: Search
    batched: Search
    kind: str
    index: FaissIndex | None = None
    build_s: float = 0.0
    memory_bytes: int = 0
    rss_growth_bytes: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    single_round_s: list[float] = field(default_factory=list)
    batched_round_s: list[float] = field(default_factory=list)
    top1_single: list[I64] = field(default_factory=list)
    top1_batched: list[I64] = field(default_factory=list)


def rss_bytes() -> int:
    """Resident memory of this process (0 where /proc is missing)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def build_faiss(policy: IndexPolicy, face_ids: I64, gallery: F32, k: int) -> Method:
    """A ``FaissIndex`` over the gallery (person id = face id: one template per identity)."""
    index = FaissIndex(gallery.shape[1], policy, use_gpu=False)
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    index.replace_all(face_ids, face_ids, gallery)
    build_s = time.perf_counter() - start
    status = index.status()
    search = faiss_search(index, k)
    return Method(
        search,
        search,
        index.kind,
        index,
        build_s,
        int(status["memory_bytes"]),
        rss_bytes() - before,
        {key: status[key] for key in ("kind", "count", "nlist", "nprobe", "refine_factor")},
    )


def restore_faiss(policy: IndexPolicy, dim: int, dump: dict[str, NDArray[Any]], k: int) -> Method:
    """A ``FaissIndex`` restored from another one's dump, searching with ``policy``."""
    index = FaissIndex(dim, policy, use_gpu=False)
    gc.collect()
    before = rss_bytes()
    index.restore(dump)
    status = index.status()
    search = faiss_search(index, k)
    return Method(
        search,
        search,
        index.kind,
        index,
        memory_bytes=int(status["memory_bytes"]),
        rss_growth_bytes=rss_bytes() - before,
        status={key: status[key] for key in ("kind", "count", "nlist", "nprobe", "refine_factor")},
    )


def build_methods(gallery: F32, face_ids: I64, nprobes: Sequence[int], k: int) -> dict[str, Method]:
    n = len(gallery)
    methods: dict[str, Method] = {}
    progress(f"  building exact index over {n} rows")
    methods[EXACT] = build_faiss(IndexPolicy(approximate_above=n), face_ids, gallery, k)
    progress("  building pq index")
    methods[PQ] = build_faiss(
        IndexPolicy(approximate_above=0, approximate="pq"), face_ids, gallery, k
    )
    progress(f"    built in {methods[PQ].build_s:.1f} s")
    # nprobe is a search-time setting: the IVF index is trained and filled once, and the other
    # nprobe values get the same index through dump/restore (the snapshot path), not a rebuild.
    first, *others = nprobes
    progress(f"  building IVF index, nprobe={first}")
    policy = IndexPolicy(approximate_above=0, approximate="ivf", nprobe=first)
    trained = build_faiss(policy, face_ids, gallery, k)
    progress(f"    nlist={trained.status['nlist']}, built in {trained.build_s:.1f} s")
    methods[f"ivf_nprobe_{first}"] = trained
    assert trained.index is not None
    dump = trained.index.dump()
    for nprobe in others:
        policy = IndexPolicy(approximate_above=0, approximate="ivf", nprobe=nprobe)
        method = restore_faiss(policy, gallery.shape[1], dump, k)
        method.build_s = trained.build_s
        methods[f"ivf_nprobe_{nprobe}"] = method
    methods[NUMPY] = Method(
        numpy_single(gallery, face_ids, k),
        numpy_batched(gallery, face_ids, k),
        "numpy",
        memory_bytes=gallery.nbytes + face_ids.nbytes,
    )
    for name, method in methods.items():
        expected = "ivf" if name.startswith("ivf") else name
        if method.kind != expected:
            raise SystemExit(f"{name}: FaissIndex built a {method.kind} index, not {expected}")
    return methods


# --- measuring --------------------------------------------------------------------------------


def single_pass(method: Method, queries: F32) -> tuple[I64, list[float]]:
    """Each query searched alone; returns the top-1 face ids and the seconds of each call."""
    top1 = np.empty(len(queries), np.int64)
    seconds = []
    for i in range(len(queries)):
        query = queries[i : i + 1]
        start = time.perf_counter()
        top1[i] = method.single(query)[0]
        seconds.append(time.perf_counter() - start)
    return top1, seconds


def measure_size(n: int, args: argparse.Namespace, nprobes: Sequence[int]) -> dict[str, Any]:
    rng = np.random.default_rng([args.seed, n])
    progress(f"N={n}: generating {n} x {args.dim} gallery and {args.queries} probes")
    gallery = unit_rows(rng, n, args.dim)
    face_ids = np.arange(n, dtype=np.int64)
    queries, sources, cosines = probes(rng, gallery, args.queries)
    methods = build_methods(gallery, face_ids, nprobes, args.k)
    names = list(methods)

    progress("  warm-up of every method")
    warm = queries[: min(args.batch_size, len(queries))]
    for method in methods.values():
        single_pass(method, warm[:2])
        method.batched(warm)

    rounds = [
        slice(start, min(start + args.batch_size, len(queries)))
        for start in range(0, len(queries), args.batch_size)
    ]
    for turn, part in enumerate(rounds):
        chunk = queries[part]
        # Rotate the order so that no method always follows the same one.
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            method = methods[name]
            top1, seconds = single_pass(method, chunk)
            method.top1_single.append(top1)
            method.latencies_s.extend(seconds)
            method.single_round_s.append(sum(seconds))
            start = time.perf_counter()
            method.top1_batched.append(method.batched(chunk))
            method.batched_round_s.append(time.perf_counter() - start)
        progress(
            f"  round {turn + 1}/{len(rounds)}: "
            + ", ".join(
                f"{name} {1000 * statistics.median(methods[name].latencies_s):.2f}"
                for name in names
            )
            + " ms p50 so far"
        )

    truth = np.concatenate(methods[EXACT].top1_single)
    figures = {name: summarise(method, truth, sources) for name, method in methods.items()}
    exact = methods[EXACT]
    numpy_ = methods[NUMPY]
    approximate = {name: m for name, m in methods.items() if name not in (EXACT, NUMPY)}
    result = {
        "n": n,
        "rounds": len(rounds),
        "probe_cosine_to_own_identity": {
            "min": float(cosines.min()),
            "median": float(np.median(cosines)),
            "max": float(cosines.max()),
        },
        "methods": figures,
        "ratios": {
            "exact_batched_vs_numpy_single": paired_ratio(
                numpy_.single_round_s, exact.batched_round_s
            ),
            "exact_batched_vs_numpy_batched": paired_ratio(
                numpy_.batched_round_s, exact.batched_round_s
            ),
            "exact_single_vs_numpy_single": paired_ratio(
                numpy_.single_round_s, exact.single_round_s
            ),
            "exact_batched_vs_exact_single": paired_ratio(
                exact.single_round_s, exact.batched_round_s
            ),
            "approximate_vs_exact_single": {
                name: paired_ratio(exact.single_round_s, m.single_round_s)
                for name, m in approximate.items()
            },
            "approximate_vs_exact_batched": {
                name: paired_ratio(exact.batched_round_s, m.batched_round_s)
                for name, m in approximate.items()
            },
        },
    }
    del methods, exact, numpy_, approximate, gallery
    gc.collect()
    return result


def summarise(method: Method, truth: I64, sources: I64) -> dict[str, Any]:
    latencies_ms = 1000 * np.asarray(method.latencies_s)
    single = np.concatenate(method.top1_single)
    batched = np.concatenate(method.top1_batched)
    out: dict[str, Any] = {
        "kind": method.kind,
        "single": {
            "p50_ms": float(np.percentile(latencies_ms, 50)),
            "p99_ms": float(np.percentile(latencies_ms, 99)),
            "mean_ms": float(latencies_ms.mean()),
            "queries_per_s": len(latencies_ms) / sum(method.single_round_s),
        },
        "batched": {"queries_per_s": len(batched) / sum(method.batched_round_s)},
        "recall_at_1": float(np.mean(single == truth)),
        "recall_at_1_batched": float(np.mean(batched == truth)),
        "top1_is_enrolled_identity": float(np.mean(single == sources)),
        "memory_bytes": method.memory_bytes,
    }
    if method.kind != "numpy":
        out["build_s"] = method.build_s
        out["rss_growth_bytes"] = method.rss_growth_bytes
        out["nlist"] = method.status["nlist"]
        out["nprobe"] = method.status["nprobe"]
        out["refine_factor"] = method.status["refine_factor"]
    return out


def paired_ratio(slow_s: Sequence[float], fast_s: Sequence[float]) -> float:
    """Median over rounds of ``slow / fast`` seconds on the same queries (> 1: fast is faster)."""
    return statistics.median(s / f for s, f in zip(slow_s, fast_s, strict=True))


# --- goals and report -------------------------------------------------------------------------


def goals(size: dict[str, Any], default_nprobe: int) -> tuple[dict[str, Any], dict[str, bool]]:
    """Figures the goals are judged on, and the verdicts, at one size."""
    methods = size["methods"]
    default = IndexPolicy().approximate
    approx = methods[PQ if default == "pq" else f"ivf_nprobe_{default_nprobe}"]

    def meets(figures: dict[str, Any]) -> bool:
        return bool(
            figures["single"]["p99_ms"] < GOAL_P99_MS and figures["recall_at_1"] >= GOAL_RECALL
        )

    figures = {
        "n": size["n"],
        "exact_batched_vs_numpy_single": size["ratios"]["exact_batched_vs_numpy_single"],
        "exact_batched_vs_numpy_batched": size["ratios"]["exact_batched_vs_numpy_batched"],
        "speedup_baseline": "numpy single-query brute force (gallery @ q per probe)",
        "approximate_method": PQ if default == "pq" else f"ivf_nprobe_{default_nprobe}",
        "approximate_single_p50_ms": approx["single"]["p50_ms"],
        "approximate_single_p99_ms": approx["single"]["p99_ms"],
        "approximate_recall_at_1": approx["recall_at_1"],
        "approximate_methods_meeting_goal": sorted(
            name for name, m in methods.items() if name not in (EXACT, NUMPY) and meets(m)
        ),
    }
    verdicts = {
        "exact_batched_ge_5x_numpy_single": figures["exact_batched_vs_numpy_single"]
        >= GOAL_SPEEDUP,
        "approximate_p99_lt_5ms_recall_ge_0_99": meets(approx),
    }
    return figures, verdicts


def machine(threads: int) -> dict[str, Any]:
    return {
        **host(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "threads_requested": threads or "faiss default",
        # NumPy's BLAS reads its thread count from the environment when it loads.
        "openblas_num_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="sizes 2000 and 20000, 64 queries in batches of 32: a smoke run well under a minute",
    )
    parser.add_argument(
        "--sizes", default=None, help="comma-separated gallery sizes (default 10000,100000,1000000)"
    )
    parser.add_argument("--queries", type=int, default=None, help="probes per size (default 1000)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="probes per batched search (default 256)"
    )
    parser.add_argument(
        "--nprobe",
        default=",".join(str(p) for p in NPROBES),
        help="comma-separated IVF nprobe values; the policy default is always added "
        "(default 8,16,32,64)",
    )
    parser.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument("--dim", type=int, default=DIM, help=f"vector dimension (default {DIM})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="faiss.omp_set_num_threads (default 0: FAISS's own choice, one per core)",
    )
    args = parser.parse_args(argv)
    try:
        args.sizes = [
            int(s)
            for s in (args.sizes.split(",") if args.sizes else QUICK_SIZES if args.quick else SIZES)
        ]
        args.nprobe = sorted({int(p) for p in args.nprobe.split(",")} | {IndexPolicy().nprobe})
    except ValueError as exc:
        parser.error(f"--sizes and --nprobe take comma-separated integers ({exc})")
    args.queries = args.queries or (64 if args.quick else 1000)
    args.batch_size = args.batch_size or (32 if args.quick else 256)
    numbers = [*args.sizes, *args.nprobe, args.queries, args.batch_size, args.k, args.dim]
    if min(numbers) < 1 or args.threads < 0:
        parser.error("sizes, nprobe, --queries, --batch-size, --k and --dim must be positive")
    if args.k > min(args.sizes):
        parser.error(f"--k {args.k} exceeds the smallest size {min(args.sizes)}")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    policy = IndexPolicy()
    sizes = {str(n): measure_size(n, args, args.nprobe) for n in args.sizes}
    judged = sizes[str(max(args.sizes))]
    goal_figures, verdicts = goals(judged, policy.nprobe)
    return {
        "machine": machine(args.threads),
        "mode": "quick" if args.quick else "full",
        "dim": args.dim,
        "k": args.k,
        "queries": args.queries,
        "batch_size": args.batch_size,
        "probe_cosine_range": list(PROBE_COSINE),
        "seed": args.seed,
        "policy_defaults": {
            "approximate_above": policy.approximate_above,
            "approximate": policy.approximate,
            "nprobe": policy.nprobe,
            "refine_factor": policy.refine_factor,
        },
        "nprobe_swept": args.nprobe,
        "sizes": sizes,
        "goals_judged_at_n": judged["n"],
        "goal_figures": goal_figures,
        "goals": verdicts,
    }


def main(argv: Sequence[str] | None = None) -> int:
    print(json.dumps(run(parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
