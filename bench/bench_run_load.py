"""Load through the real CLI (issue 7): `refocusd run` on N frames, watched from outside.

Starts `refocusd run --config` as users do (simulated microscope, --size² 16-bit frames
kept in memory, autofocus misses at --miss-rate so re-focus sweeps and reconstructions
happen too), samples the daemon's resident memory from /proc every 2 s against frames
done, and reads per-frame decision and classification latencies from its ledger.

    python bench/bench_run_load.py [--frames 10000] [--size 2048] [--miss-rate 0.01]
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def frames_done(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM frames").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def write_config(work: Path, frames: int, size: int, miss_rate: float, wells: int) -> Path:
    cols = 12
    names = [f"{chr(65 + i // cols)}{i % cols + 1}" for i in range(wells)]
    config = work / "refocusd.toml"
    config.write_text(f"""
[service]
experiment = "load"
state_dir = "state"
output_root = "out"
[driver.simulated]
frame_shape = [{size}, {size}]
camera_pixel_um = {3.7 * 512 / size}
autofocus_miss_rate = {miss_rate}
data_dir = "data"
save_raw = false
[plate]
wells = {json.dumps(names)}
[timelapse]
timepoints = {math.ceil(frames / wells)}
interval_s = 600.0
[models]
device = "cpu"
[logging]
format = "json"
file = "logs/refocusd.jsonl"
""")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--miss-rate", type=float, default=0.01)
    parser.add_argument("--wells", type=int, default=96)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="refocusd-load-"))
    config = write_config(work, args.frames, args.size, args.miss_rate, args.wells)
    db = work / "state" / "ledger.sqlite"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "refocusd.daemon.cli", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    samples: list[tuple[float, int, float]] = []
    while proc.poll() is None:
        rss = rss_mb(proc.pid)
        if rss is not None:
            samples.append((time.perf_counter() - started, frames_done(db), rss))
        time.sleep(2.0)
    wall = time.perf_counter() - started
    summary = json.loads(proc.stdout.read().strip().splitlines()[-1])
    with sqlite3.connect(db) as conn:
        decided, classify = (
            np.array([r[0] for r in conn.execute(f"SELECT {c} FROM frames WHERE {c} IS NOT NULL")])
            for c in ("decided_ms", "classify_ms")
        )

    print(f"refocusd run: exit {proc.returncode}, {summary['frames']} frames "
          f"({summary['reacquired']} re-acquired, {summary['reconstructed']} reconstructed, "
          f"{summary['reconstruction_failed']} failed) of {args.size}² in {wall:.0f} s "
          f"= {summary['frames'] / wall:.1f} frames/s including start-up")
    for name, values in (("decision (frame in -> action)", decided), ("classification", classify)):
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        print(f"{name} latency p50/p95/p99: {p50:.1f} / {p95:.1f} / {p99:.1f} ms (n={values.size})")
    marks = {}
    for _, done, rss in samples:  # the first sample past each 1,000 frames
        if done == 0:
            continue  # still starting up
        marks.setdefault(done // 1000 * 1000, (done, rss))
    print("resident memory by frames done: " + ", ".join(f"{d}: {r:.0f} MB" for d, r in sorted(marks.values())))
    after_warmup = [s for s in samples if s[1] >= 1000]
    if after_warmup:
        first, last = after_warmup[0], after_warmup[-1]
        print(f"resident memory: {first[2]:.0f} MB at {first[1]} frames, {last[2]:.0f} MB at {last[1]} frames "
              f"({last[2] - first[2]:+.1f} MB), peak {max(s[2] for s in samples):.0f} MB")
    print(f"(work folder {work})")


if __name__ == "__main__":
    main()
