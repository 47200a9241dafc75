"""Cost of watching the service (issue 6): metrics per frame, a health tick, `status`, `report`.

Builds the ledger of a long experiment (default 96 wells × 4 positions × 50 time points =
19,200 points; 2 % re-acquired with their retry rows, 3 % reconstructed, 0.2 % failed, a few
jobs still queued) through the real Ledger API, then measures:

- the per-frame cost the supervision adds to the runner (metered verdict + outcome counters);
- one health tick of the daemon (queue queries, disk usage, health.json write);
- `refocusd status --json` end to end, as a monitoring probe runs it (a new process);
- `refocusd report` end to end (CSV + plate map + timeline of every position).

    python bench/bench_ops.py [--wells 96] [--positions 4] [--timepoints 50]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from refocusd.config import load_settings
from refocusd.daemon.state.ledger import LEDGER_FILE, FrameRecord, Ledger
from refocusd.daemon.ops.metrics import MeteredClassifier, ServiceMetrics
from refocusd.daemon.ops.supervision import Supervisor
from refocusd.models import Verdict

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]


def fill_ledger(ledger: Ledger, wells: list[str], positions: int, timepoints: int) -> int:
    rng = random.Random(0)
    ledger.start_run("bench", "long-run", "{}", {})
    n = 0
    for t in range(timepoints):
        for well in wells:
            for pos in range(positions):
                key = f"/data/plate1/{well}/p{pos:03d}/t{t:04d}.tif"
                roll = rng.random()
                common = dict(run_id="bench", source_key=key, source_uri=key, experiment="long-run",
                              plate="plate1", well=well, position=pos, t=t, acquired_at=1.8e9 + 600 * t)
                if roll < 0.02:
                    fid = ledger.record_frame(FrameRecord(action="reacquire", outcome="reacquired", label="defocused",
                                                          p_focused=0.1, reason="can_reacquire", **common))
                    retry = {**common, "source_key": key + "#r1"}
                    ledger.record_frame(FrameRecord(action="accept", outcome="accepted", label="focused",
                                                    p_focused=0.97, parent_id=fid, retry=1, **retry))
                elif roll < 0.052:
                    fid, job = ledger.record_frame_and_enqueue(
                        FrameRecord(action="reconstruct", outcome="reconstruction_queued", label="defocused",
                                    p_focused=0.05, reason="missed_timepoint", **common),
                        "missed_timepoint", {"source_uri": key}, 3)
                    if t < timepoints - 1:  # the last point's jobs stay queued
                        ledger.claim_job()
                        if roll < 0.022:  # 0.2 % of points: every attempt fails
                            for _ in range(3):
                                ledger.fail_job(job, "RuntimeError: out of memory")
                                ledger.claim_job()
                        else:
                            ledger.complete_job(job, key + ".reconstructed.ome.tif")
                else:
                    ledger.record_frame(FrameRecord(action="accept", outcome="accepted", label="focused",
                                                    p_focused=0.98, **common))
                n += 1
    return n


def per_frame_overhead_us(frames: int = 100_000) -> float:
    class Instant:
        model_id = "instant"

        def classify(self, pixels, *, pixel_size_um=None):
            return Verdict(0.9, "focused", "instant", 0.004)

    metrics = ServiceMetrics()
    metered = MeteredClassifier(Instant(), metrics)
    raw = Instant()
    began = time.perf_counter()
    for _ in range(frames):
        raw.classify(None)
    bare = time.perf_counter() - began
    began = time.perf_counter()
    for i in range(frames):
        metered.classify(None)
        metrics.observe_outcome("focused", "accepted", i % 50 == 0)
    return (time.perf_counter() - began - bare) / frames * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wells", type=int, default=96)
    parser.add_argument("--positions", type=int, default=4)
    parser.add_argument("--timepoints", type=int, default=50)
    args = parser.parse_args()
    wells = [f"{'ABCDEFGH'[i // 12]}{i % 12 + 1}" for i in range(96)][: args.wells]

    work = Path(tempfile.mkdtemp(prefix="refocusd-bench-ops-"))
    config = work / "refocusd.toml"
    config.write_text('[service]\nstate_dir = "state"\noutput_root = "out"\n')
    settings = load_settings(config)
    began = time.perf_counter()
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        points = fill_ledger(ledger, wells, args.positions, args.timepoints)
        fill_s = time.perf_counter() - began
        supervisor = Supervisor(settings)
        supervisor._ledger = ledger  # measure the tick alone, without starting threads
        ticks = []
        for _ in range(20):
            t0 = time.perf_counter()
            supervisor.tick("running")
            ticks.append(time.perf_counter() - t0)
        supervisor.tick("stopped", exit_reason="completed")

    def timed(cmd: list[str]) -> tuple[float, int]:
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, capture_output=True, text=True).returncode
        return time.perf_counter() - t0, rc

    status_s, status_rc = timed([*REFOCUSD, "status", "--config", str(config), "--json"])
    report_s, report_rc = timed([*REFOCUSD, "report", "--config", str(config), "--out", str(work / "report")])
    result = {
        "points": points,
        "ledger_fill_s": round(fill_s, 1),
        "metrics_overhead_us_per_frame": round(per_frame_overhead_us(), 2),
        "health_tick_ms_median": round(sorted(ticks)[len(ticks) // 2] * 1000, 2),
        "status_cli_s": round(status_s, 2),
        "status_rc": status_rc,
        "report_cli_s": round(report_s, 2),
        "report_rc": report_rc,
        "report_files": sorted(str(p.relative_to(work)) for p in (work / "report").rglob("*.*")),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
