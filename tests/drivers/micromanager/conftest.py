"""Real Micro-Manager core (pycromanager's Python backend) with the mm-test-adapters demo
devices. The demo camera in 'Fluorescent Beads' mode is in focus at Z = 0 and blurs with |Z|,
so defocus, re-focus and re-acquisition are real. One core per test process (pycromanager's
engine is a process singleton)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

mm_test_adapters = pytest.importorskip("mm_test_adapters")

from refocusd.config import Settings, load_settings  # noqa: E402
from refocusd.config.loader import deep_merge  # noqa: E402

ADAPTERS = Path(mm_test_adapters.device_adapter_path())
BEADS = {"Mode": "Fluorescent Beads", "OnCameraCCDXSize": "256", "OnCameraCCDYSize": "256", "Exposure": "5"}
TOLERANCE_UM = 1.5
REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]


def mm_section(tmp_path: Path, **extra) -> dict:
    return {
        "mode": "run",
        "mm_dir": str(ADAPTERS),
        "config_file": "MMConfig_demo.cfg",
        "camera_properties": BEADS,
        "data_dir": str(tmp_path / "mm-data"),
        "core_backoff_s": 0.01,
        "connect_backoff_s": 0.01,
        "image_timeout_s": 10.0,
        **extra,
    }


def plate_plan(offsets: dict[int, float], n: int = 6, *, loops: int = 1, interval_s: float = 0.0) -> dict:
    """``n`` fields 500 µm apart, in focus (Z = 0) except the ``offsets`` {index: z}."""
    positions = [
        {"x": 500.0 * i, "y": 250.0 * (i % 2), "z": offsets.get(i, 0.0), "name": f"A{i + 1}"} for i in range(n)
    ]
    plan: dict = {"stage_positions": positions, "axis_order": "tpcz"}
    if loops > 1:
        plan["time_plan"] = {"interval": interval_s, "loops": loops}
    return plan


@pytest.fixture(scope="session")
def bead_calibration(tmp_path_factory) -> Path:
    """A focus-measure calibration from real z-series of the demo beads, made the way a
    user makes it (`refocusd calibrate`, in a subprocess), at positions the tests' plates
    do not use."""
    folder = tmp_path_factory.mktemp("calibration")
    config = folder / "refocusd.toml"
    camera = ", ".join(f'{k} = "{v}"' for k, v in BEADS.items())
    config.write_text(f"""
[driver]
kind = "micromanager"
[driver.micromanager]
mm_dir = "{ADAPTERS}"
config_file = "MMConfig_demo.cfg"
camera_properties = {{{camera}}}
[driver.micromanager.plan]
stage_positions = [{{x = -2000.0, y = 1000.0, z = 0.0}}, {{x = 3100.0, y = -700.0, z = 0.0}},
                   {{x = -800.0, y = 4200.0, z = 0.0}}]
""")
    out = folder / "beads.json"
    result = subprocess.run(
        [*REFOCUSD, "calibrate", "--config", str(config), "--out", str(out), "--planes", str(folder / "planes"),
         "--z-range", "8", "--z-step", "1", "--tolerance", str(TOLERANCE_UM), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout)
    assert reported["details"]["best_z_um"] == [0.0, 0.0, 0.0]  # the demo beads are sharpest at Z = 0
    assert reported["details"]["focused_scores"][0] > reported["threshold"] > reported["details"]["defocused_scores"][1]
    assert len(list((folder / "planes" / "focused").glob("*.tif"))) == 9  # z = -1, 0, 1 at 3 positions
    return out


@pytest.fixture
def mm_settings(tmp_path, bead_calibration):
    def make(plan: dict, *, mm: dict | None = None, **overrides) -> Settings:
        base = {
            "service": {"state_dir": str(tmp_path / "state"), "output_root": str(tmp_path / "out"), "experiment": "mm"},
            "driver": {"kind": "micromanager", "micromanager": mm_section(tmp_path, plan=plan, **(mm or {}))},
            "plate": {"name": "beads"},
            "models": {"device": "cpu", "classifier": str(bead_calibration)},
            "refocus": {"strategy": "sweep", "scorer": "gradient_energy", "sweep_range_um": 10.0, "sweep_step_um": 2.0,
                        "max_retries": 2},
        }
        return load_settings(None, overrides=deep_merge(base, overrides))

    return make


@pytest.fixture
def plan_for():
    """``plan_for(offsets, n=6, loops=1, interval_s=0)``: see :func:`plate_plan`."""
    return plate_plan
