"""`refocusd calibrate --zstack`: z-stacks a user exported (multi-page TIFF), labelled by the
sample's own focus peak, a short real fine-tune of the shipped SDCNN, and the z-stacks that
cannot calibrate anything (exit 2, a clear message, no traceback). The CLI runs as a
subprocess, as users meet it; the z-stacks are rendered by the simulated microscope."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from refocusd.config.settings import PlateSettings, SimulatedMicroscopeSettings, TimelapseSettings
from refocusd.models.self_calibration import ZSeries, ZStackError, focus_peak, read_zstack
from refocusd.drivers import SimulatedClock
from refocusd.drivers.simulated import SimulatedMicroscope

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]
STEP = 2.0
OFFSETS = np.arange(-10.0, 10.0 + STEP / 2, STEP)  # the focus is the 6th plane (index 5)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """Two positions' z-stacks, planes at focus + OFFSETS, as multi-page TIFFs."""
    folder = tmp_path_factory.mktemp("zstacks")
    settings = SimulatedMicroscopeSettings(seed=11, frame_shape=(256, 256), autofocus_miss_rate=0.0, save_raw=False)
    scope = SimulatedMicroscope(settings, PlateSettings(wells=["B3", "D5"]), TimelapseSettings(),
                                clock=SimulatedClock(), data_dir=folder)
    paths = []
    for i, frame in enumerate(scope.frames()):
        focus = frame.metadata["true_focus_z_um"]
        planes = []
        for dz in OFFSETS:
            scope.move_z(focus + dz)
            planes.append(scope.snap())
        path = folder / f"position{i}.tif"
        tifffile.imwrite(path, np.stack(planes))
        paths.append(path)
    scope.close()
    return paths


def calibrate(*args, timeout=600):
    return subprocess.run([*REFOCUSD, "calibrate", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_the_focus_peak_of_a_tiff_z_stack_is_the_samples_focus(stacks):
    series = read_zstack(stacks[0], STEP)
    assert len(series.planes) == len(OFFSETS)
    assert focus_peak(series) == pytest.approx(5 * STEP, abs=1.0)


def test_calibrate_from_z_stacks_fine_tunes_and_reports_the_held_out_position(stacks, tmp_path):
    """In-process (the fine-tune is the same code the CLI runs; the CLI's own paths are the
    other tests here): one epoch from the shipped SDCNN, a real model folder."""
    from refocusd.models.self_calibration import self_calibrate
    from refocusd.models.runtime import load_classifier

    out = tmp_path / "cells-model"
    report = self_calibrate([read_zstack(p, STEP) for p in stacks], out=out, tolerance_um=2.0, epochs=1,
                            sample="simulated cells")
    assert report.held_out == "position1.tif"
    # Planes within ±2 µm of the peak are focused, ≥ 4 µm away defocused, the band between left out.
    assert report.before.planes == report.after.planes >= 7
    assert 0.0 <= report.after.accuracy <= 1.0 and report.after.auc is not None
    card = json.loads((out / "model.json").read_text())
    calibration = card["metrics"]["self_calibration"]
    assert calibration["sample"] == "simulated cells"
    assert calibration["positions"] == ["position0.tif", "position1.tif"]
    assert calibration["planes"] == {"position0.tif": 11, "position1.tif": 11}
    assert calibration["after"] == report.after.as_dict()
    assert calibration["peaks_um"]["position0.tif"] == pytest.approx(10.0, abs=1.0)
    # The folder is a classifier `[models] classifier` can name.
    assert "-calibrated@" in load_classifier(str(out), device="cpu").model_id


def test_calibrate_from_a_z_stack_to_a_focus_measure_calibration(stacks, tmp_path):
    out = tmp_path / "cells.json"
    result = calibrate("--zstack", stacks[0], "--z-step-um", STEP, "--tolerance", 2.0, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    saved = json.loads(out.read_text())
    assert saved["kind"] == "refocusd.focus_measure"
    assert saved["details"]["best_z_um"][0] == pytest.approx(10.0, abs=1.0)
    assert saved["details"]["n_focused"] >= 2 and saved["details"]["n_defocused"] >= 6


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path, planes: tifffile.imwrite(path, planes[5]), "1 plane"),
        (lambda path, planes: tifffile.imwrite(path, np.stack(planes[6:])), "no focus peak inside the z range"),
        (lambda path, planes: path.write_bytes(b"II*\x00 not really a tiff"), "cannot read z-stack"),
    ],
    ids=["one-plane", "no-peak-inside", "unreadable"],
)
def test_a_bad_z_stack_is_a_clear_error_exit_2(stacks, tmp_path, make, message):
    planes = list(tifffile.imread(stacks[0]))
    bad = tmp_path / "bad.tif"
    make(bad, planes)
    result = calibrate("--zstack", bad, "--z-step-um", STEP, "--out", tmp_path / "model", timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "model").exists()


def test_zseries_refuses_a_single_plane():
    with pytest.raises(ZStackError, match="1 plane"):
        ZSeries("one", np.array([0.0]), (np.zeros((8, 8)),))
