"""Re-focus benchmark on the simulated microscope (issue 12 targets).

Part 1, predict vs sweep in the same run: a plate scan whose device autofocus misses every
field by 10–40 µm (``--miss-um``), recovered once with ``[refocus] strategy = "predict"``
and once with the coarse-to-fine ``"sweep"``, same seed, same fields, same classifier.
Per recovery: frames exposed (strategy planes + re-acquisitions, the ledger's
``recovery_frames``), success (re-acquired, accepted, and truly within ±``--tolerance-um``
of focus), microscope time (the simulated clock: stage moves, settling, exposures) and
CPU wall time (rendering + classification on this machine).

Part 2, focus-surface memory: the same plate with a device autofocus that searches only
±``--capture-um`` around its starting z (a realistic capture range; the constant-miss
autofocus of part 1 does not care where it starts), scanned with the memory off and on;
the figure is the number of autofocus misses.

    python bench/bench_refocus.py [--wells 24] [--positions 2] [--classifier default]

Prints one JSON object per part.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def wells(n: int) -> list[str]:
    return [f"{chr(65 + i // 12)}{i % 12 + 1}" for i in range(96)][:n]


def make_scope(args, work: Path, *, miss_rate: float, capture_um: float | None = None):
    from refocusd.config.settings import PlateSettings, SimulatedMicroscopeSettings, TimelapseSettings
    from refocusd.drivers import SimulatedClock
    from refocusd.drivers.simulated import SimulatedMicroscope

    settings = SimulatedMicroscopeSettings(
        seed=args.seed, frame_shape=(args.size, args.size), autofocus_miss_rate=miss_rate,
        autofocus_miss_um=tuple(args.miss_um), autofocus_capture_um=capture_um, save_raw=False,
    )
    plate = PlateSettings(wells=wells(args.wells), positions_per_well=args.positions)
    return SimulatedMicroscope(settings, plate, TimelapseSettings(), clock=SimulatedClock(), data_dir=work)


class Truth:
    """Records the true defocus of every re-acquired frame (the simulator's metadata)."""

    def __init__(self, scope) -> None:
        self.by_parent: dict[str, float] = {}
        inner = scope.reacquire

        def reacquire(frame, retry):
            new = inner(frame, retry)
            self.by_parent[frame.source.key] = new.metadata["true_defocus_um"]
            return new

        scope.reacquire = reacquire


def run_plate(args, classifier, strategy_name: str, work: Path, *, memory: bool, miss_rate: float,
              capture_um: float | None = None) -> dict:
    from structlog.testing import capture_logs

    from refocusd.config.settings import RefocusSettings
    from refocusd.daemon.core.focus_surface import FocusSurfaceMemory
    from refocusd.daemon.state.ledger import Ledger
    from refocusd.daemon.core.refocus import build_strategy
    from refocusd.daemon.core.runner import Runner, RunnerOptions

    scope = make_scope(args, work, miss_rate=miss_rate, capture_um=capture_um)
    truth = Truth(scope)
    refocus = RefocusSettings(strategy=strategy_name)
    strategy = build_strategy(refocus, classifier)
    cpu: list[float] = []
    inner = strategy.refocus

    def timed(stage, request=None):
        began = time.perf_counter()
        try:
            return inner(stage, request)
        finally:
            cpu.append(time.perf_counter() - began)

    strategy.refocus = timed
    with Ledger.open(work / f"{strategy_name}-{memory}.sqlite") as ledger, capture_logs() as logs:
        ledger.start_run("bench", "bench", "{}", {})
        runner = Runner(
            driver=scope, classifier=classifier, strategy=strategy, ledger=ledger, clock=scope._clock,
            options=RunnerOptions(run_id="bench", experiment="bench", max_retries=refocus.max_retries,
                                  spool_dir=work / "spool"),
            stop=threading.Event(), focus_memory=FocusSurfaceMemory() if memory else None,
        )
        began = time.perf_counter()
        runner.run()
        wall = time.perf_counter() - began
        rows = list(ledger.frames())
    scope.close()
    originals = [r for r in rows if r["retry"] == 0]
    recoveries = [r for r in originals if r["recovery_frames"] is not None]
    ok = [r for r in recoveries if r["outcome"] == "reacquired"
          and abs(truth.by_parent.get(r["source_key"], 1e9)) <= args.tolerance_um]
    frames = [r["recovery_frames"] for r in recoveries]
    durations = [e["duration_s"] for e in logs if e["event"] == "reacquire.done"]
    misses = sum(1 for e in logs if e["event"] == "frame.classified" and e.get("label") == "defocused")
    return {
        "strategy": strategy_name,
        "memory": memory,
        "fields": len(originals),
        "defocused_frames": misses,
        "recoveries": len(recoveries),
        "success": round(len(ok) / len(recoveries), 4) if recoveries else None,
        "success_tolerance_um": args.tolerance_um,
        "landed_within_1um": sum(1 for r in recoveries if abs(truth.by_parent.get(r["source_key"], 1e9)) <= 1.0),
        "landed_abs_um_median": round(statistics.median(abs(truth.by_parent.get(r["source_key"], 1e9))
                                                        for r in recoveries), 3) if recoveries else None,
        "frames_per_recovery_median": statistics.median(frames) if frames else None,
        "frames_per_recovery_mean": round(statistics.fmean(frames), 2) if frames else None,
        "microscope_s_per_recovery_median": round(statistics.median(durations), 4) if durations else None,
        "cpu_s_per_recovery_median": round(statistics.median(cpu), 4) if cpu else None,
        "methods": {m: sum(1 for e in logs if e["event"] == "refocus.done" and e.get("method") == m)
                    for m in ("estimate", "probe", "refine", "sweep")},
        "autofocus_misses": sum(1 for r in originals if r["recovery_frames"] is not None),
        "run_wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wells", type=int, default=24)
    parser.add_argument("--positions", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--miss-um", type=float, nargs=2, default=(10.0, 40.0))
    parser.add_argument("--tolerance-um", type=float, default=None,
                        help="success band around focus (default: half the objective's depth of field, "
                        "the band the classifier calls focused)")
    parser.add_argument("--capture-um", type=float, default=8.0)
    parser.add_argument("--classifier", default="default")
    parser.add_argument("--part", choices=("both", "predict", "memory"), default="both")
    args = parser.parse_args()

    from refocusd.daemon.ops.logging import configure_logging
    from refocusd.models.runtime import load_classifier

    configure_logging(level="warning", fmt="json")
    if args.tolerance_um is None:
        from refocusd.models.synth.optics import OBJECTIVES

        args.tolerance_um = round(OBJECTIVES["10x"].depth_of_field_um / 2, 3)
    classifier = load_classifier(args.classifier, device="cpu")
    work = Path(tempfile.mkdtemp(prefix="refocusd-bench-refocus-"))
    if args.part in ("both", "predict"):
        predict = run_plate(args, classifier, "predict", work / "p", memory=False, miss_rate=1.0)
        sweep = run_plate(args, classifier, "sweep", work / "s", memory=False, miss_rate=1.0)
        ratio = None
        if predict["microscope_s_per_recovery_median"] and sweep["microscope_s_per_recovery_median"]:
            ratio = round(predict["microscope_s_per_recovery_median"] / sweep["microscope_s_per_recovery_median"], 3)
        cpu_ratio = None
        if predict["cpu_s_per_recovery_median"] and sweep["cpu_s_per_recovery_median"]:
            cpu_ratio = round(predict["cpu_s_per_recovery_median"] / sweep["cpu_s_per_recovery_median"], 3)
        print(json.dumps({"part": "predict_vs_sweep", "classifier": classifier.model_id, "miss_um": args.miss_um,
                          "predict": predict, "sweep": sweep, "microscope_time_ratio": ratio,
                          "cpu_time_ratio": cpu_ratio}))
    if args.part in ("both", "memory"):
        rate = 8 / 120
        off = run_plate(args, classifier, "predict", work / "m0", memory=False, miss_rate=rate,
                        capture_um=args.capture_um)
        on = run_plate(args, classifier, "predict", work / "m1", memory=True, miss_rate=rate,
                       capture_um=args.capture_um)
        print(json.dumps({"part": "focus_memory", "capture_um": args.capture_um, "miss_rate": rate,
                          "misses_without_memory": off["autofocus_misses"],
                          "misses_with_memory": on["autofocus_misses"],
                          "fields": on["fields"], "without": off, "with": on}))


if __name__ == "__main__":
    main()
