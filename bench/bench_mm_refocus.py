"""Re-focus on the real Micro-Manager core after self-calibration (issue 12 target).

The demo camera in ``Fluorescent Beads`` mode is sharp at Z = 0 and blurs with |Z|
(symmetric: the sign of a defocus cannot be seen). Steps, as a user runs them:

1. ``refocusd calibrate --config cal.toml --out model/`` on z-series at three positions
   the plan does not use (fine-tunes the shipped classifier, one position held out);
2. ``refocusd run`` (run-mode driver) on a plan whose fields start at Z offsets of
   ±3…10 µm, ``[refocus] strategy = "predict"``, classifier = the calibrated folder;
3. from the ledger: frames each recovery exposed, and the z each field was re-acquired at.

    python bench/bench_mm_refocus.py [--epochs 8]

Prints one JSON object: calibration figures, per-field recovery, median frames, share of
fields landed within ±1 µm.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]
OFFSETS = [3.0, -3.0, 5.0, -5.0, 7.0, -7.0, 10.0, -10.0]
CAMERA = 'Mode = "Fluorescent Beads", OnCameraCCDXSize = "256", OnCameraCCDYSize = "256", Exposure = "5"'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    import mm_test_adapters

    adapters = mm_test_adapters.device_adapter_path()
    work = Path(tempfile.mkdtemp(prefix="refocusd-bench-mm-refocus-"))
    mm = f'mm_dir = "{adapters}"\nconfig_file = "MMConfig_demo.cfg"\ncamera_properties = {{{CAMERA}}}\n'
    cal = work / "cal.toml"
    cal.write_text(f"""[driver]\nkind = "micromanager"\n[driver.micromanager]\n{mm}
[driver.micromanager.plan]
stage_positions = [{{x = -2000.0, y = 1000.0, z = 0.0}}, {{x = 3100.0, y = -700.0, z = 0.0}},
                   {{x = -800.0, y = 4200.0, z = 0.0}}]
""")
    began = time.perf_counter()
    calibrated = subprocess.run(
        [*REFOCUSD, "calibrate", "--config", str(cal), "--out", str(work / "model"), "--z-range", "10",
         "--z-step", "1", "--tolerance", "1.0", "--epochs", str(args.epochs), "--json"],
        capture_output=True, text=True,
    )
    calibrate_s = time.perf_counter() - began
    if calibrated.returncode != 0:
        sys.exit(calibrated.stderr)
    report = json.loads(calibrated.stdout.strip().splitlines()[-1])

    positions = ", ".join(f'{{x = {500.0 * i}, y = {250.0 * (i % 2)}, z = {z}, name = "A{i + 1}"}}'
                          for i, z in enumerate(OFFSETS))
    run = work / "run.toml"
    run.write_text(f"""[service]\nstate_dir = "{work / 'state'}"\noutput_root = "{work / 'out'}"
[driver]\nkind = "micromanager"\n[driver.micromanager]\n{mm}data_dir = "{work / 'mm-data'}"
[driver.micromanager.plan]\nstage_positions = [{positions}]\naxis_order = "tpcz"
[models]\nclassifier = "{work / 'model'}"\ndevice = "cpu"
[refocus]\nstrategy = "predict"\nsweep_range_um = 12.0\nsweep_step_um = 4.0\nsweep_fine_step_um = 1.0
[logging]\nformat = "json"\nlevel = "warning"
""")
    began = time.perf_counter()
    result = subprocess.run([*REFOCUSD, "run", "--config", str(run)], capture_output=True, text=True)
    run_s = time.perf_counter() - began
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    db = sqlite3.connect(work / "state" / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    fields = []
    for row in db.execute("SELECT * FROM frames WHERE retry = 0 ORDER BY id"):
        retry = db.execute("SELECT z_um FROM frames WHERE parent_id = ? AND outcome = 'accepted'",
                           (row["id"],)).fetchone()
        fields.append({"start_z_um": row["z_um"], "outcome": row["outcome"], "frames": row["recovery_frames"],
                       "landed_z_um": None if retry is None else round(retry["z_um"], 3)})
    recovered = [f for f in fields if f["frames"] is not None]
    within = [f for f in recovered if f["landed_z_um"] is not None and abs(f["landed_z_um"]) <= 1.0]
    print(json.dumps({
        "bench": "mm_refocus_after_calibrate",
        "calibration": {k: report[k] for k in ("before", "after", "peaks_um", "held_out", "seconds")},
        "calibrate_wall_s": round(calibrate_s, 1),
        "run_wall_s": round(run_s, 1),
        "fields": fields,
        "recoveries": len(recovered),
        "within_1um": len(within),
        "median_frames": statistics.median(f["frames"] for f in recovered) if recovered else None,
    }))


if __name__ == "__main__":
    main()
