"""Real Micro-Manager core (pycromanager's Python backend) with the mm-test-adapters demo
devices. The demo camera in 'Fluorescent Beads' mode is in focus at Z = 0 and blurs with |Z|,
so defocus, re-focus and re-acquisition are real. One core per test process (pycromanager's
engine is a process singleton)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

mm_test_adapters = pytest.importorskip("mm_test_adapters")

from refocusd.config import Settings, load_settings  # noqa: E402
from refocusd.config.loader import deep_merge  # noqa: E402
from refocusd.config.settings import MicroManagerSettings  # noqa: E402
from refocusd.drivers.micromanager import CoreSession  # noqa: E402
from refocusd.drivers.micromanager.calibrate import calibrate  # noqa: E402

ADAPTERS = Path(mm_test_adapters.device_adapter_path())
BEADS = {"Mode": "Fluorescent Beads", "OnCameraCCDXSize": "256", "OnCameraCCDYSize": "256", "Exposure": "5"}
TOLERANCE_UM = 1.5


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
    positions = [{"x": 500.0 * i, "y": 250.0 * (i % 2), "z": offsets.get(i, 0.0), "name": f"A{i + 1}"} for i in range(n)]
    plan: dict = {"stage_positions": positions, "axis_order": "tpcz"}
    if loops > 1:
        plan["time_plan"] = {"interval": interval_s, "loops": loops}
    return plan


@pytest.fixture(scope="session")
def bead_calibration(tmp_path_factory) -> Path:
    """A focus-measure calibration from real z-series of the demo beads (what
    `refocusd calibrate` does), at positions different from the tests' plates."""
    out = tmp_path_factory.mktemp("calibration") / "beads.json"
    session = CoreSession(MicroManagerSettings(**mm_section(out.parent)))
    session.connect()
    z = [float(v) for v in range(-8, 9)]
    calibrate(session, [(-2000.0, 1000.0), (3100.0, -700.0), (-800.0, 4200.0)], z_um=z, tolerance_um=TOLERANCE_UM,
              measure="gradient_energy").save(out)
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
