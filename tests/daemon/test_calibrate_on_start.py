"""`[models] calibrate = "on_start"` through `refocusd run` as a subprocess: before the plan,
z-series at two positions of the simulated plate, a one-epoch fine-tune of the shipped
SDCNN, before/after figures logged, and the plan classified by the calibrated model."""

from __future__ import annotations

import json
import subprocess
import sys

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]


def test_calibrate_on_start_fine_tunes_before_the_plan(tmp_path):
    config = tmp_path / "refocusd.toml"
    config.write_text(f"""
[service]
experiment = "on-start"
state_dir = "{tmp_path / 'state'}"
output_root = "{tmp_path / 'out'}"
[driver.simulated]
data_dir = "{tmp_path / 'data'}"
frame_shape = [256, 256]
autofocus_miss_rate = 0.0
seed = 4
[plate]
wells = ["A1", "B2", "C3"]
[models]
device = "cpu"
calibrate = "on_start"
calibrate_positions = 2
calibrate_range_um = 8.0
calibrate_step_um = 2.0
calibrate_tolerance_um = 2.0
calibrate_epochs = 1
[logging]
format = "json"
""")
    result = subprocess.run([*REFOCUSD, "run", "--config", str(config)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in (result.stdout + result.stderr).splitlines() if line.startswith("{")]
    done = [e for e in events if e.get("event") == "calibrate.done"]
    assert len(done) == 1, [e.get("event") for e in events]
    assert set(done[0]["before"]) >= {"accuracy", "auc", "defocus_mae_um"} and "after" in done[0]
    started = next(e for e in events if e.get("event") == "daemon.started")
    assert "-calibrated@" in started["classifier"]
    folders = list((tmp_path / "state" / "models").glob("calibrated-*"))
    assert len(folders) == 1
    card = json.loads((folders[0] / "model.json").read_text())
    assert card["metrics"]["self_calibration"]["positions"] == ["A1-p0", "C3-p0"]
    summary = next(e for e in events if e.get("event") == "run.summary")
    assert summary["frames"] == 3
