"""Micro-Manager driver benchmark: frames/s of a pycromanager acquisition on the real demo
core (mm-test-adapters), with refocusd attached vs without (issue 4 target: ≥ 0.9×).

    python bench/bench_mm.py [--frames 200] [--plan fields|burst] [--exposure-ms 10] [--lookahead 1] [--repeats 3]

Both runs acquire the same plan (``--frames`` in-focus fields at distinct XY positions, Z = 0,
256×256 16-bit 'Fluorescent Beads' frames) into an NDTiff dataset through pycromanager's
Python backend. "Without": one ``Acquisition``, all events submitted at once, timed from
creation to ``await_completion``. "With": ``refocusd`` run mode through the real Service
(classify every frame, decide, ledger, JSON log), timed over ``Service.run``. The classifier
is a focus-measure calibration made by ``calibrate`` on the same core: the shipped SDCNN
was not trained on beads and calls most bead frames defocused, which would turn the run
into z-sweeps and measure something else. Runs alternate, ``--repeats`` each; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def plan(n: int, kind: str) -> dict:
    if kind == "burst":  # one field, n time points back to back: the camera is the only hardware
        return {"stage_positions": [{"x": 0.0, "y": 0.0, "z": 0.0}], "time_plan": {"interval": 0, "loops": n}}
    return {"stage_positions": [{"x": 400.0 * (i % 20), "y": 400.0 * (i // 20), "z": 0.0} for i in range(n)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--exposure-ms", type=float, default=10.0)
    parser.add_argument("--lookahead", type=int, default=1)
    parser.add_argument("--plan", choices=["fields", "burst"], default="fields",
                        help="fields: a plate scan (XY move per frame); burst: one field, back-to-back time points")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import mm_test_adapters
    from pycromanager import Acquisition

    from refocusd.config import load_settings
    from refocusd.config.settings import MicroManagerSettings, TimelapseSettings
    from refocusd.daemon.ops.logging import configure_logging
    from refocusd.daemon.service import Service
    from refocusd.drivers.micromanager import CoreSession, load_sequence, plan_steps
    from refocusd.drivers.micromanager.calibrate import calibrate

    work = Path(tempfile.mkdtemp(prefix="bench-mm-"))
    configure_logging(level="info", fmt="json", file=work / "refocusd.jsonl", console_level="error")
    logging.getLogger().setLevel(logging.INFO)
    mm = {
        "mm_dir": str(mm_test_adapters.device_adapter_path()),
        "config_file": "MMConfig_demo.cfg",
        "camera_properties": {"Mode": "Fluorescent Beads", "OnCameraCCDXSize": "256", "OnCameraCCDYSize": "256",
                              "Exposure": f"{args.exposure_ms:g}"},
        "plan": plan(args.frames, args.plan),
        "lookahead": args.lookahead,
    }
    session = CoreSession(MicroManagerSettings(**mm, data_dir=work / "cal"))
    session.connect()
    cal = calibrate(session, [(-3000.0, -3000.0), (-5000.0, 2000.0)], z_um=[float(z) for z in range(-6, 7)],
                    tolerance_um=1.5)
    cal.save(work / "beads.json")
    classifier = str(work / "beads.json")

    def without(i: int) -> float:
        steps = plan_steps(load_sequence(MicroManagerSettings(**mm)), TimelapseSettings())
        began = time.perf_counter()
        acq = Acquisition(directory=str(work / f"plain{i}"), name="plain")
        acq.acquire([s.event for s in steps])
        acq.mark_finished()
        acq.await_completion()
        return len(steps) / (time.perf_counter() - began)

    def with_refocusd(i: int) -> tuple[float, dict]:
        settings = load_settings(None, overrides={
            "service": {"state_dir": str(work / f"state{i}"), "output_root": str(work / f"out{i}")},
            "driver": {"kind": "micromanager", "micromanager": {**mm, "data_dir": str(work / f"run{i}")}},
            "models": {"device": "cpu", "classifier": classifier},
        })
        service = Service(settings)
        service.start()
        try:
            summary = service.run()
        finally:
            service.close()
        return summary.frames / summary.wall_s, summary.as_dict()

    plain, attached, summaries = [], [], []
    for i in range(args.repeats):
        plain.append(without(i))
        fps, summary = with_refocusd(i)
        attached.append(fps)
        summaries.append(summary)
    p, a = statistics.median(plain), statistics.median(attached)
    result = {
        "frames": args.frames, "plan": args.plan, "exposure_ms": args.exposure_ms,
        "lookahead": args.lookahead, "fps_without": round(p, 1), "fps_with": round(a, 1), "ratio": round(a / p, 3),
        "runs_without": [round(x, 1) for x in plain], "runs_with": [round(x, 1) for x in attached],
        "focused": [s["focused"] for s in summaries], "defocused": [s["defocused"] for s in summaries],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
