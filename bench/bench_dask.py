"""Dask reconstruction backend benchmark (issue 7 targets).

1. Throughput of N Dask workers (one thread each, TensorFlow capped at one thread too)
   reconstructing --frames frames of --size² uint16 with the shipped ResUNet, for each N in
   --workers; the ratio to one worker (target: 2 workers >= 1.7x one).
2. The daemon's classification latency (one 2048² uint16 frame, the shipped SDCNN, in
   this process) idle, then while the largest cluster reconstructs (target: p95 within 20 %).

Workers are processes of a LocalCluster on this machine; each loads the model once
(plugin set-up, not timed) and one warm-up frame per worker is not timed either.

    python bench/bench_dask.py [--frames 20] [--size 1604] [--workers 1 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def say(text: str) -> None:
    print(text, flush=True)


def frames(n: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((size, size)) * 3000 + 500).astype(np.uint16) for _ in range(n)]


def throughput(n_workers: int, work: list[np.ndarray]) -> float:
    from distributed import LocalCluster

    from refocusd.daemon.output.dask_backend import DaskReconstructor

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as cluster:
        remote = DaskReconstructor.connect(cluster.scheduler_address, "default", device="cpu")
        try:
            with ThreadPoolExecutor(n_workers) as pool:
                list(pool.map(remote.reconstruct, work[:n_workers]))  # warm-up, one per worker
                started = time.perf_counter()
                list(pool.map(remote.reconstruct, work))
                seconds = time.perf_counter() - started
        finally:
            remote.close()
    return len(work) / seconds


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def classify_latencies(classifier: Any, frame: np.ndarray, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        classifier.classify(frame)
        out.append((time.perf_counter() - started) * 1e3)
    return out


def latency_under_load(n_workers: int, work: list[np.ndarray], repeats: int) -> dict[str, float]:
    from distributed import LocalCluster

    from refocusd.daemon.output.dask_backend import DaskReconstructor
    from refocusd.models.runtime import load_classifier

    classifier = load_classifier("default", device="cpu")
    frame = np.random.default_rng(1).integers(0, 4096, (2048, 2048), dtype=np.uint16)
    idle = classify_latencies(classifier, frame, repeats)
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as cluster:
        remote = DaskReconstructor.connect(cluster.scheduler_address, "default", device="cpu")
        stop = threading.Event()

        def keep_busy() -> None:
            i = 0
            while not stop.is_set():
                remote.reconstruct(work[i % len(work)])
                i += 1

        threads = [threading.Thread(target=keep_busy, daemon=True) for _ in range(n_workers)]
        for t in threads:
            t.start()
        time.sleep(3)  # reconstructions under way on every worker
        loaded = classify_latencies(classifier, frame, repeats)
        stop.set()
        for t in threads:
            t.join()
        remote.close()
    return {
        "idle_p50_ms": statistics.median(idle), "idle_p95_ms": percentile(idle, 95),
        "loaded_p50_ms": statistics.median(loaded), "loaded_p95_ms": percentile(loaded, 95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, default=1604)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--latency-repeats", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from refocusd.daemon.ops.logging import configure_logging

    configure_logging(level="warning")
    work = frames(args.frames, args.size)
    results: dict[str, Any] = {"cpu_count": os.cpu_count(), "frames": args.frames, "size": args.size}
    fps: dict[int, float] = {}
    for n in args.workers:
        fps[n] = throughput(n, work)
        say(f"{n} worker(s) x 1 thread: {fps[n]:.3f} frames/s ({args.frames} frames of {args.size}²)")
    base = fps.get(1)
    if base:
        for n, value in fps.items():
            say(f"  speed-up of {n} worker(s) over 1: {value / base:.2f}x (target for 2: >= 1.7x)")
    results["frames_per_s"] = fps
    lat = latency_under_load(max(args.workers), work, args.latency_repeats)
    results["classify_latency"] = lat
    say(f"classify 2048² idle p50/p95 {lat['idle_p50_ms']:.1f}/{lat['idle_p95_ms']:.1f} ms; while "
        f"{max(args.workers)} worker(s) reconstruct: {lat['loaded_p50_ms']:.1f}/{lat['loaded_p95_ms']:.1f} ms "
        f"(p95 {lat['loaded_p95_ms'] / lat['idle_p95_ms'] - 1:+.0%}, target within +20 %)")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
