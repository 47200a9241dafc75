"""Software re-focus on the simulated microscope: the sweep finds the true focus."""

from __future__ import annotations

import pytest

from refocusd.config.settings import PlateSettings, SimulatedMicroscopeSettings, TimelapseSettings
from refocusd.models.focus_measures import FOCUS_MEASURES
from refocusd.daemon.core.refocus import DeviceAutofocus, RefocusFailed, SweepAutofocus
from refocusd.drivers import SimulatedClock
from refocusd.drivers.simulated import SimulatedMicroscope

STEP = 4.0


def microscope(tmp_path, **sim):
    settings = SimulatedMicroscopeSettings(
        seed=5, frame_shape=(256, 256), autofocus_miss_rate=1.0, autofocus_miss_um=(15.0, 30.0),
        save_raw=False, **sim,
    )
    return SimulatedMicroscope(
        settings, PlateSettings(wells=["A1", "B2", "C3"]), TimelapseSettings(), clock=SimulatedClock(),
        data_dir=tmp_path,
    )


@pytest.mark.parametrize("measure", sorted(FOCUS_MEASURES))
def test_sweep_lands_within_one_step_of_true_focus(tmp_path, measure):
    scope = microscope(tmp_path)
    sweep = SweepAutofocus(FOCUS_MEASURES[measure], range_um=40.0, step_um=STEP, scorer_name=measure)
    for frame in scope.frames():
        assert abs(frame.metadata["true_defocus_um"]) >= 15.0
        result = sweep.refocus(scope)
        retry = scope.reacquire(frame, 1)
        assert abs(retry.metadata["true_defocus_um"]) <= STEP, (measure, result.scores)
    scope.close()


def test_sweep_refuses_a_peak_at_the_edge_of_its_range(tmp_path):
    scope = microscope(tmp_path)
    sweep = SweepAutofocus(FOCUS_MEASURES["brenner"], range_um=6.0, step_um=2.0)
    frames = scope.frames()  # keep the generator alive: the frame stays "in hand"
    next(frames)
    z_before = scope.current_z()
    with pytest.raises(RefocusFailed, match="edge of the sweep"):
        sweep.refocus(scope)
    assert scope.current_z() == z_before, "a failed sweep puts the stage back"
    scope.close()


def test_device_autofocus_strategy_uses_the_drivers_autofocus(tmp_path):
    scope = microscope(tmp_path)
    frames = scope.frames()
    next(frames)
    result = DeviceAutofocus().refocus(scope)
    assert result.strategy == "device" and result.z_um == scope.current_z()
    scope.close()
