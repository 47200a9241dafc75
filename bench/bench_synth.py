"""Generation speed of ``refocusd synth`` (render only, no files): items per second at the
classifier's crop sizes and at full frames, for all domains and per imaging mode.

    python bench/bench_synth.py            # full run (a few minutes on 2 cores)
    python bench/bench_synth.py --smoke    # a few items per row

Each row renders items 0..n-1 of one request (the per-item random streams, as ``synth``).
The reference is one 2048² complex FFT, timed in the same run, so rows can be compared
across machines as ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.fft as sfft

from refocusd.models.synth.dataset import SynthRequest, render_item
from refocusd.models.synth.domains import MODES


def reference_seconds() -> float:
    x = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.complex64)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        sfft.fft2(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rate(request: SynthRequest, n: int) -> tuple[float, float]:
    render_item(request, 0)  # warm caches (FFT plans)
    t = time.perf_counter()
    for i in range(n):
        render_item(request, i)
    seconds = (time.perf_counter() - t) / n
    return 1.0 / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    scale = 0.1 if args.smoke else 1.0
    ref = reference_seconds()
    print(f"reference: one 2048² complex64 FFT = {ref * 1000:.1f} ms")
    rows: list[tuple[str, SynthRequest, int]] = [
        ("classifier 128 px, all domains, any pixel size", SynthRequest(kind="classifier", n=1, size=128), 64),
        ("classifier 128 px, all domains, 0.6 µm", SynthRequest(kind="classifier", n=1, size=128,
                                                               pixel_size_um=(0.6, 0.6)), 64),
        ("classifier 192 px, all domains, 0.6 µm", SynthRequest(kind="classifier", n=1, size=192,
                                                               pixel_size_um=(0.6, 0.6)), 48),
        ("classifier 512 px, all domains", SynthRequest(kind="classifier", n=1, size=512), 16),
        ("classifier 2048 px, all domains", SynthRequest(kind="classifier", n=1, size=2048), 8),
        ("reconstructor 256 px pairs, all domains", SynthRequest(kind="reconstructor", n=1, size=256), 16),
    ]
    rows += [(f"classifier 128 px, 0.6 µm, {mode}", SynthRequest(kind="classifier", n=1, size=128,
                                                               pixel_size_um=(0.6, 0.6), domains=(mode,)), 24)
             for mode in MODES]
    print(f"{'request':52s} {'items/s':>8s} {'ms/item':>8s} {'÷ FFT ref':>9s}")
    for label, request, n in rows:
        items_per_s, seconds = rate(request, max(2, int(n * scale)))
        print(f"{label:52s} {items_per_s:8.2f} {seconds * 1000:8.1f} {seconds / ref:9.1f}", flush=True)


if __name__ == "__main__":
    main()
