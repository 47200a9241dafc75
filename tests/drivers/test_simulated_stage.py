"""Stage mechanics of the simulated microscope: focal surface, move times, autofocus."""

from __future__ import annotations

import pytest

from refocusd.config.settings import SimulatedMicroscopeSettings
from refocusd.drivers.base import DriverError
from refocusd.drivers.clock import SimulatedClock
from refocusd.drivers.simulated.stage import (
    AUTOFOCUS_PRECISION_UM,
    DeviceAutofocus,
    FocalSurface,
    Stage,
)


def flat(
    seed: int = 0, tilt: tuple[float, float] = (0.0, 0.0), drift: float = 0.0, relief: float = 0.0
) -> FocalSurface:
    return FocalSurface(seed=seed, tilt_um_per_mm=tilt, drift_um_per_h=drift, relief_um=relief)


def test_tilt_is_micrometres_per_millimetre_along_each_axis() -> None:
    surface = flat(tilt=(1.5, -0.8))
    z0 = surface.z_um(0.0, 0.0, 0.0)
    assert surface.z_um(10_000.0, 0.0, 0.0) - z0 == pytest.approx(15.0)
    assert surface.z_um(0.0, 10_000.0, 0.0) - z0 == pytest.approx(-8.0)


def test_drift_is_micrometres_per_hour() -> None:
    surface = flat(drift=2.0)
    assert surface.z_um(500.0, 500.0, 5400.0) - surface.z_um(500.0, 500.0, 0.0) == pytest.approx(3.0)


def test_relief_is_small_smooth_seeded_and_differs_between_wells() -> None:
    a, b, c = flat(seed=1, relief=1.5), flat(seed=1, relief=1.5), flat(seed=2, relief=1.5)
    xs = [i * 9000.0 for i in range(12)]
    relief_a = [a.relief_um(x, 0.0) for x in xs]
    assert relief_a == [b.relief_um(x, 0.0) for x in xs]  # seeded
    assert relief_a != [c.relief_um(x, 0.0) for x in xs]
    assert max(abs(r) for r in relief_a) < 6.0
    assert max(relief_a) - min(relief_a) > 0.3  # wells do differ
    # Smooth: two fields 1 mm apart inside a well differ by far less than a depth of field.
    assert abs(a.relief_um(1000.0, 0.0) - a.relief_um(0.0, 0.0)) < 0.6


def test_settings_build_the_configured_surface() -> None:
    settings = SimulatedMicroscopeSettings(focal_tilt_um_per_mm=(2.0, 0.0), focal_drift_um_per_h=4.0)
    surface = FocalSurface.from_settings(settings)
    dz = surface.z_um(0.0, 0.0, 3600.0) - surface.z_um(0.0, 0.0, 0.0)
    assert dz == pytest.approx(4.0)


def test_moves_cost_travel_plus_settle_on_the_clock() -> None:
    clock = SimulatedClock(start=0.0)
    stage = Stage(clock, xy_speed_um_per_s=10_000.0, z_speed_um_per_s=500.0, settle_s=0.05, z_um=1000.0)
    assert stage.move_xy(9000.0, 4500.0) == pytest.approx(0.9 + 0.05)  # axes move together
    assert clock.now() == pytest.approx(0.95)
    assert stage.move_z(1100.0) == pytest.approx(0.2 + 0.05)
    assert clock.now() == pytest.approx(1.2)
    assert stage.move_xy(9000.0, 4500.0) == 0.0  # already there: no settle either
    assert (stage.x_um, stage.y_um, stage.z_um) == (9000.0, 4500.0, 1100.0)


@pytest.mark.parametrize("z", [-1.0, 1e9, float("nan")])
def test_focus_drive_refuses_targets_outside_its_travel(z: float) -> None:
    stage = Stage(SimulatedClock(), xy_speed_um_per_s=1.0, z_speed_um_per_s=1.0, settle_s=0.0)
    with pytest.raises(DriverError, match="outside the drive's range"):
        stage.move_z(z)


def _autofocus(rate: float, seed: int = 0) -> tuple[DeviceAutofocus, FocalSurface, Stage, SimulatedClock]:
    clock = SimulatedClock(start=0.0)
    stage = Stage(clock, xy_speed_um_per_s=20_000.0, z_speed_um_per_s=1000.0, settle_s=0.02)
    surface = flat(seed=seed, tilt=(1.5, -0.8), drift=2.0, relief=1.5)
    af = DeviceAutofocus(stage, surface, clock, seed=seed, miss_rate=rate, miss_um=(10.0, 40.0), exposure_s=0.01)
    return af, surface, stage, clock


def test_autofocus_lands_on_the_surface_and_takes_time() -> None:
    af, surface, stage, clock = _autofocus(rate=0.0)
    stage.move_xy(27_000.0, 18_000.0)
    for attempt in range(20):
        before = clock.now()
        result = af.run(clock.now(), (2, 3, 0, 0, attempt))
        true_z = surface.z_um(stage.x_um, stage.y_um, clock.now())
        assert not result.missed
        assert abs(stage.z_um - true_z) <= AUTOFOCUS_PRECISION_UM + 1e-6
        assert result.z_um == stage.z_um and clock.now() > before


def test_autofocus_misses_land_in_the_miss_range() -> None:
    af, surface, stage, clock = _autofocus(rate=1.0)
    signs = set()
    for attempt in range(40):
        result = af.run(clock.now(), (0, 0, 0, 0, attempt))
        true_z = surface.z_um(stage.x_um, stage.y_um, clock.now())
        assert result.missed and 10.0 <= abs(stage.z_um - true_z) <= 40.0
        signs.add(stage.z_um > true_z)
    assert signs == {True, False}  # above and below the sample


def test_autofocus_miss_rate_and_seeded_outcomes() -> None:
    af1, *_ = _autofocus(rate=8 / 120, seed=5)
    af2, *_ = _autofocus(rate=8 / 120, seed=5)
    af3, *_ = _autofocus(rate=8 / 120, seed=6)
    keys = [(r, c, 0, t, 1) for r in range(8) for c in range(12) for t in range(10)]
    m1 = [af1.run(0.0, k).missed for k in keys]
    assert m1 == [af2.run(0.0, k).missed for k in keys]
    assert m1 != [af3.run(0.0, k).missed for k in keys]
    assert 0.04 < sum(m1) / len(m1) < 0.095  # 960 draws around 8/120 ≈ 0.067
