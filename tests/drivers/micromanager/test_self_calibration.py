"""`refocusd calibrate --out FOLDER` on the real Micro-Manager core (demo devices, beads in
focus at Z = 0): small z-series at two positions, a one-epoch fine-tune of the shipped
SDCNN, the held-out position scored before and after, a model folder with its card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

mm_test_adapters = pytest.importorskip("mm_test_adapters")

ADAPTERS = Path(mm_test_adapters.device_adapter_path())
BEADS = {"Mode": "Fluorescent Beads", "OnCameraCCDXSize": "256", "OnCameraCCDYSize": "256", "Exposure": "5"}
REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]


def test_calibrate_fine_tunes_on_z_series_from_the_core(tmp_path):
    config = tmp_path / "refocusd.toml"
    camera = ", ".join(f'{k} = "{v}"' for k, v in BEADS.items())
    config.write_text(f"""
[driver]
kind = "micromanager"
[driver.micromanager]
mm_dir = "{ADAPTERS}"
config_file = "MMConfig_demo.cfg"
camera_properties = {{{camera}}}
[driver.micromanager.plan]
stage_positions = [{{x = -2000.0, y = 1000.0, z = 0.0}}, {{x = 3100.0, y = -700.0, z = 0.0}}]
""")
    out = tmp_path / "beads-model"
    result = subprocess.run(
        [*REFOCUSD, "calibrate", "--config", str(config), "--out", str(out), "--positions", "2", "--z-range", "4",
         "--z-step", "1", "--tolerance", "1.5", "--epochs", "1", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["peaks_um"] == {"position0": pytest.approx(0.0, abs=0.5), "position1": pytest.approx(0.0, abs=0.5)}
    assert report["held_out"] == "position1"
    assert report["before"]["planes"] == report["after"]["planes"] == 3 + 4  # |z| ≤ 1.5 focused, ≥ 3 defocused
    card = json.loads((out / "model.json").read_text())
    assert card["metrics"]["self_calibration"]["sample"] == "Fluorescent Beads"
    assert card["metrics"]["self_calibration"]["after"] == report["after"]
