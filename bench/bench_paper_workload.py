"""The paper's workload through the CLI (issue 13): sort 120 frames of 1608x1608, then
reconstruct the ones called defocused — as a user runs it, two commands:

    refocusd classify FRAMES/ --json          # sort
    refocusd reconstruct <defocused> --out OUT  # reconstruct (each output scored)

The paper reports < 30 s on an RTX 2080 Ti for 120 frames with 8 defocused. The frames are
rendered once by the simulator (8 defocused + 112 focused, 1608 px, positive phase contrast
at 10x as in the paper, kept in
--work); the figure is the wall time of both commands, process start-up and model loading
included. Prints the split and how many of the 8 defocused frames were found.

    python bench/bench_paper_workload.py [--work DIR] [--classifier-model default]
        [--reconstructor-model default]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]
N_DEFOCUSED, N_TOTAL, SIDE = 8, 120, 1608


def say(text: str) -> None:
    print(text, flush=True)


def frames(work: Path) -> tuple[Path, set[str]]:
    """120 frames in one folder (names do not give the label away), and the defocused names."""
    from refocusd.models.synth.dataset import SynthRequest, generate_dataset

    source = work / "synth-1608"
    if not (source / "manifest.json").is_file():
        started = time.perf_counter()
        # The paper's microscope: Zernike phase contrast at 10x.
        generate_dataset(source, SynthRequest(kind="classifier", n=2 * N_DEFOCUSED + 8, seed=21, size=SIDE,
                                              objective="10x", domains=("positive_phase",)))
        say(f"  (rendered {2 * N_DEFOCUSED + 8} frames of {SIDE} px in {time.perf_counter() - started:.0f} s)")
    folder = work / "frames"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    defocused = sorted((source / "defocused").glob("*.tif"))[:N_DEFOCUSED]
    focused = sorted((source / "focused").glob("*.tif"))
    truth: set[str] = set()
    for i in range(N_TOTAL):
        # Interleave: a defocused frame every 15, focused ones (reused) in between.
        if i % (N_TOTAL // N_DEFOCUSED) == 7 and len(truth) < N_DEFOCUSED:
            src = defocused[len(truth)]
            truth.add(f"frame{i:03d}.tif")
        else:
            src = focused[i % len(focused)]
        shutil.copyfile(src, folder / f"frame{i:03d}.tif")
    return folder, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "refocusd-bench-workload")
    parser.add_argument("--classifier-model", default="default")
    parser.add_argument("--reconstructor-model", default="default")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folder, truth = frames(args.work)
    out = args.work / "reconstructed"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    say(f"paper workload: {N_TOTAL} frames of {SIDE}x{SIDE}, {N_DEFOCUSED} defocused; "
        f"{os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}")

    started = time.perf_counter()
    sort = subprocess.run([*REFOCUSD, "classify", str(folder), "--json", "--device", "cpu",
                           "--model", args.classifier_model],
                          capture_output=True, text=True, env=env, timeout=3600)
    sorted_at = time.perf_counter()
    if sort.returncode not in (0, 1):
        raise SystemExit(f"refocusd classify failed ({sort.returncode}): {sort.stderr[-2000:]}")
    rows = [json.loads(line) for line in sort.stdout.splitlines() if line.startswith("{")]
    flagged = [r["path"] for r in rows if r.get("label") == "defocused"]
    rec = subprocess.run([*REFOCUSD, "reconstruct", *flagged, "--out", str(out), "--device", "cpu",
                          "--model", args.reconstructor_model, "--classifier", args.classifier_model],
                         capture_output=True, text=True, env=env, timeout=3600) if flagged else None
    total = time.perf_counter() - started
    if rec is not None and rec.returncode != 0:
        raise SystemExit(f"refocusd reconstruct failed ({rec.returncode}): {rec.stderr[-2000:]}")
    results = [json.loads(line) for line in (rec.stdout if rec else "").splitlines() if line.startswith("{")]
    names = {Path(p).name for p in flagged}
    found = len(names & truth)
    not_improved = sum(r.get("quality") == "not_improved" for r in results)
    say(f"sort (refocusd classify, {len(rows)} frames) {sorted_at - started:.1f} s; reconstruct "
        f"(refocusd reconstruct, {len(flagged)} frames) {total - (sorted_at - started):.1f} s; "
        f"total {total:.1f} s (paper, GPU: < 30 s); found {found}/{N_DEFOCUSED} defocused, "
        f"{len(names - truth)} focused flagged; {not_improved} reconstruction(s) not_improved; "
        f"load {os.getloadavg()[0]:.1f}")
    print(json.dumps({"total_s": round(total, 2), "sort_s": round(sorted_at - started, 2),
                      "reconstructed": len(flagged), "defocused_found": found,
                      "focused_flagged": len(names - truth), "not_improved": not_improved}))


if __name__ == "__main__":
    main()
