"""End-to-end daemon benchmark on the simulated microscope (issue 3 targets).

Measures, on this machine: frames/s sustained from the simulated driver (2048×2048
16-bit) through classify → decide → ledger → JSON log; decision latency (frame in →
action issued) percentiles; start-to-ready; resident memory every 1,000 frames.

    python bench/bench_daemon.py [--frames 10000] [--size 2048]

Autofocus misses are off (rate 0) so every frame takes the hot path; the figures are
for the classification path, not for re-focus sweeps. The camera pitch is set so that a
frame covers the ~190 µm field the shipped classifier was trained on (0.37 µm/px at 512
px; 2048 px → 0.0925 µm/px, rendered on a 512 grid and resampled): the benchmark measures
throughput, and a frame the classifier misjudges would send it into z-sweeps instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--wells", type=int, default=96)
    args = parser.parse_args()

    from refocusd.config import load_settings
    from refocusd.daemon.ops.logging import configure_logging
    from refocusd.daemon.service import Service

    work = Path(tempfile.mkdtemp(prefix="refocusd-bench-"))
    timepoints = math.ceil(args.frames / args.wells)
    rows, cols = 8, 12
    wells = [f"{chr(65 + i // cols)}{i % cols + 1}" for i in range(rows * cols)][: args.wells]
    settings = load_settings(
        None,
        overrides={
            "service": {"state_dir": str(work / "state"), "output_root": str(work / "out"), "experiment": "bench"},
            "driver": {"simulated": {"frame_shape": [args.size, args.size], "autofocus_miss_rate": 0.0,
                                     "camera_pixel_um": 3.7 * 512 / args.size,
                                     "data_dir": str(work / "data"), "save_raw": False}},
            "plate": {"wells": wells},
            "timelapse": {"timepoints": timepoints, "interval_s": 600.0},
            "logging": {"file": str(work / "refocusd.jsonl")},
            "models": {"device": "cpu"},
        },
    )
    configure_logging(level="info", fmt="json", file=settings.logging.file, console_level="error")

    decided: list[float] = []
    rss: list[tuple[int, float]] = []
    marks: list[tuple[int, float]] = []

    def on_outcome(outcome) -> None:
        decided.append(outcome.decided_ms)
        n = len(decided)
        if n % 1000 == 0:
            rss.append((n, round(rss_mb(), 1)))
            marks.append((n, time.perf_counter()))

    began = time.perf_counter()
    service = Service(settings, on_outcome=on_outcome)
    service.start()
    ready_s = time.perf_counter() - began
    rss.append((0, round(rss_mb(), 1)))
    t0 = time.perf_counter()
    summary = service.run()
    wall = time.perf_counter() - t0
    service.close()

    lat = sorted(decided)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    steady = (marks[-1][0] - marks[0][0]) / (marks[-1][1] - marks[0][1]) if len(marks) > 1 else float("nan")
    result = {
        "frames": summary.frames,
        "frame": f"{args.size}x{args.size} uint16",
        "start_to_ready_s": round(ready_s, 2),
        "frames_per_s_overall": round(summary.frames / wall, 1),
        "frames_per_s_steady": round(steady, 1),
        "decision_ms_p50": round(pct(0.50), 2),
        "decision_ms_p95": round(pct(0.95), 2),
        "decision_ms_p99": round(pct(0.99), 2),
        "rss_mb": rss,
        "rss_growth_mb_after_first_1000": round(rss[-1][1] - rss[1][1], 1) if len(rss) > 2 else None,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
