"""Generation speed of ``refocusd synth`` (render only, no files): items per second at the
classifier's crop sizes and at full frames, for all domains and per imaging mode.

    python bench/bench_synth.py            # full run (a few minutes on 2 cores)
    python bench/bench_synth.py --smoke    # a few items per row

Each row renders items 0..n-1 of one request (the per-item random streams, as ``synth``).
Each row gives wall-clock and CPU time per item with one FFT thread (on a machine shared
with other work the CPU time is the steadier figure: 1 / CPU seconds is what one free core
renders). The reference is one 2048² complex FFT, timed in the same run (CPU time), so rows
can be compared across machines as ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import scipy.fft as sfft

from refocusd.models.synth.dataset import SynthRequest, render_item
from refocusd.models.synth.domains import MODES
from refocusd.models.synth.optics import set_fft_workers


def reference_seconds() -> float:
    x = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.complex64)
    times = []
    for _ in range(5):
        t = time.process_time()
        sfft.fft2(x, workers=1)
        times.append(time.process_time() - t)
    return statistics.median(times)


def timing(request: SynthRequest, n: int) -> tuple[float, float]:
    """Wall and CPU seconds per item over items 1..n (item 0 warms the FFT plans)."""
    render_item(request, 0)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(1, n + 1):
        render_item(request, i)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    scale = 0.1 if args.smoke else 1.0
    set_fft_workers(1)
    ref = reference_seconds()
    print(f"reference: one 2048² complex64 FFT = {ref * 1000:.1f} ms CPU; load average {os.getloadavg()[0]:.1f}")
    rows: list[tuple[str, SynthRequest, int]] = [
        ("classifier 128 px, all domains, any pixel size", SynthRequest(kind="classifier", n=1, size=128), 64),
        ("classifier 128 px, all domains, 0.6 µm", SynthRequest(kind="classifier", n=1, size=128,
                                                               pixel_size_um=(0.6, 0.6)), 64),
        ("classifier 192 px, all domains, 0.6 µm", SynthRequest(kind="classifier", n=1, size=192,
                                                               pixel_size_um=(0.6, 0.6)), 48),
        ("classifier 512 px, all domains", SynthRequest(kind="classifier", n=1, size=512), 16),
        ("classifier 2048 px, all domains", SynthRequest(kind="classifier", n=1, size=2048), 8),
        ("classifier 2048 px, 20x, 0.45 µm", SynthRequest(kind="classifier", n=1, size=2048, objective="20x",
                                                         pixel_size_um=(0.45, 0.45)), 8),
        ("reconstructor 256 px pairs, all domains", SynthRequest(kind="reconstructor", n=1, size=256), 16),
    ]
    rows += [(f"classifier 128 px, 0.6 µm, {mode}", SynthRequest(kind="classifier", n=1, size=128,
                                                               pixel_size_um=(0.6, 0.6), domains=(mode,)), 24)
             for mode in MODES]
    print(f"{'request':48s} {'wall ms':>8s} {'CPU ms':>8s} {'items/s/core':>12s} {'CPU ÷ ref':>9s}")
    for label, request, n in rows:
        wall, cpu = timing(request, max(2, int(n * scale)))
        print(f"{label:48s} {wall * 1000:8.1f} {cpu * 1000:8.1f} {1.0 / cpu:12.2f} {cpu / ref:9.2f}", flush=True)


if __name__ == "__main__":
    main()
