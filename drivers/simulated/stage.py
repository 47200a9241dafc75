"""The mechanics: where focus truly is, an XYZ stage that takes time to move, and a
device autofocus that usually lands on the focal surface and now and then does not.

Time is the injected :class:`~refocusd.drivers.clock.Clock`: every move calls
``clock.sleep`` with its duration, so a virtual clock advances and a real one waits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import structlog

from refocusd.config.settings import SimulatedMicroscopeSettings
from refocusd.drivers.base import DriverError
from refocusd.drivers.clock import Clock

log = structlog.get_logger(__name__)

# Nominal focus height of the sample plane above the focus drive's zero.
BASE_FOCUS_Z_UM = 1500.0
# Travel of the focus drive; a move outside raises DriverError like a limit switch.
Z_RANGE_UM = (0.0, 10_000.0)
# Plate bow / well-bottom unevenness: a smooth field of this RMS amplitude over the plate.
SURFACE_RELIEF_UM = 1.5
# A correct autofocus lands within this distance of the true focus.
AUTOFOCUS_PRECISION_UM = 0.5
# Planes a two-step (coarse, fine) device autofocus images before it settles.
AUTOFOCUS_PLANES = 8

# Seed-stream tags so that the focal surface, autofocus and camera never share draws.
STREAM_SURFACE = 1
STREAM_AUTOFOCUS = 2


@dataclass(frozen=True, slots=True)
class _Wave:
    kx: float  # rad/µm
    ky: float
    phase: float
    amplitude_um: float


class FocalSurface:
    """True focus z (µm) at stage (x, y) µm and ``t_s`` seconds after the plan started.

    A tilted plane (``focal_tilt_um_per_mm``), a linear drift (``focal_drift_um_per_h``,
    thermal creep) and a smooth seeded relief with a wavelength of a few wells, which
    gives each well its own small offset while neighbouring fields stay close.
    """

    def __init__(
        self,
        *,
        seed: int,
        tilt_um_per_mm: tuple[float, float],
        drift_um_per_h: float,
        base_z_um: float = BASE_FOCUS_Z_UM,
        relief_um: float = SURFACE_RELIEF_UM,
        waves: int = 4,
    ) -> None:
        self.base_z_um = base_z_um
        self.tilt_um_per_mm = tilt_um_per_mm
        self.drift_um_per_h = drift_um_per_h
        rng = np.random.default_rng([seed, STREAM_SURFACE])
        # Random directions, wavelengths of 25-80 mm; amplitudes so the sum has RMS relief_um.
        amp = relief_um * math.sqrt(2.0 / waves) if waves else 0.0
        self._waves = tuple(
            _Wave(
                kx=2 * math.pi / wavelength * math.cos(angle),
                ky=2 * math.pi / wavelength * math.sin(angle),
                phase=float(rng.uniform(0, 2 * math.pi)),
                amplitude_um=amp,
            )
            for wavelength, angle in zip(
                rng.uniform(25_000.0, 80_000.0, waves), rng.uniform(0, 2 * math.pi, waves), strict=True
            )
        )

    @classmethod
    def from_settings(cls, settings: SimulatedMicroscopeSettings) -> FocalSurface:
        return cls(
            seed=settings.seed,
            tilt_um_per_mm=settings.focal_tilt_um_per_mm,
            drift_um_per_h=settings.focal_drift_um_per_h,
        )

    def relief_um(self, x_um: float, y_um: float) -> float:
        return sum(w.amplitude_um * math.sin(w.kx * x_um + w.ky * y_um + w.phase) for w in self._waves)

    def z_um(self, x_um: float, y_um: float, t_s: float) -> float:
        tx, ty = self.tilt_um_per_mm
        return (
            self.base_z_um
            + tx * x_um / 1000.0
            + ty * y_um / 1000.0
            + self.drift_um_per_h * t_s / 3600.0
            + self.relief_um(x_um, y_um)
        )


class Stage:
    """XYZ stage. Axes move simultaneously; a move costs travel time plus settle time."""

    def __init__(
        self,
        clock: Clock,
        *,
        xy_speed_um_per_s: float,
        z_speed_um_per_s: float,
        settle_s: float,
        z_um: float = BASE_FOCUS_Z_UM,
        z_range_um: tuple[float, float] = Z_RANGE_UM,
    ) -> None:
        self._clock = clock
        self.xy_speed_um_per_s = xy_speed_um_per_s
        self.z_speed_um_per_s = z_speed_um_per_s
        self.settle_s = settle_s
        self.z_range_um = z_range_um
        self.x_um = 0.0
        self.y_um = 0.0
        self.z_um = z_um

    @classmethod
    def from_settings(cls, clock: Clock, settings: SimulatedMicroscopeSettings) -> Stage:
        return cls(
            clock,
            xy_speed_um_per_s=settings.xy_speed_um_per_s,
            z_speed_um_per_s=settings.z_speed_um_per_s,
            settle_s=settings.settle_s,
        )

    def xy_move_s(self, x_um: float, y_um: float) -> float:
        distance = max(abs(x_um - self.x_um), abs(y_um - self.y_um))
        return 0.0 if distance == 0 else distance / self.xy_speed_um_per_s + self.settle_s

    def z_move_s(self, z_um: float) -> float:
        distance = abs(z_um - self.z_um)
        return 0.0 if distance == 0 else distance / self.z_speed_um_per_s + self.settle_s

    def move_xy(self, x_um: float, y_um: float) -> float:
        """Move to (x, y); returns the seconds it took (already slept on the clock)."""
        if not (math.isfinite(x_um) and math.isfinite(y_um)):
            raise DriverError(f"stage XY target ({x_um}, {y_um}) is not finite")
        cost = self.xy_move_s(x_um, y_um)
        self._clock.sleep(cost)
        self.x_um, self.y_um = float(x_um), float(y_um)
        return cost

    def move_z(self, z_um: float) -> float:
        """Move the focus drive to absolute ``z_um``; returns the seconds it took."""
        lo, hi = self.z_range_um
        if not (math.isfinite(z_um) and lo <= z_um <= hi):
            raise DriverError(f"focus target z={z_um} µm is outside the drive's range [{lo}, {hi}] µm")
        cost = self.z_move_s(z_um)
        self._clock.sleep(cost)
        self.z_um = float(z_um)
        return cost


@dataclass(frozen=True, slots=True)
class AutofocusResult:
    z_um: float
    error_um: float  # landed z − true focus
    missed: bool
    duration_s: float


class DeviceAutofocus:
    """The microscope's own (hardware/software) autofocus.

    Lands within ±``AUTOFOCUS_PRECISION_UM`` of the true focus; with probability
    ``miss_rate`` it locks onto something else (a substrate texture, a bubble) and lands
    ±uniform(``miss_um``) away. With ``capture_um`` it searches only that far around the z it
    starts from, and focus outside that window is always missed. Each call's outcome is drawn from a stream seeded by
    (seed, field, time point, attempt), so the misses of a plan do not depend on how
    many extra snaps or focus calls a consumer makes in between.
    """

    def __init__(
        self,
        stage: Stage,
        surface: FocalSurface,
        clock: Clock,
        *,
        seed: int,
        miss_rate: float,
        miss_um: tuple[float, float],
        exposure_s: float,
        capture_um: float | None = None,
    ) -> None:
        lo, hi = miss_um
        if not 0 <= lo <= hi:
            raise ValueError(f"autofocus_miss_um {miss_um} must satisfy 0 ≤ low ≤ high")
        self._stage = stage
        self._surface = surface
        self._clock = clock
        self._seed = seed
        self.miss_rate = miss_rate
        self.miss_um = (lo, hi)
        self.capture_um = capture_um
        self.scan_s = AUTOFOCUS_PLANES * (exposure_s + stage.settle_s)

    def run(self, t_s: float, key: tuple[int, ...]) -> AutofocusResult:
        """Focus at the stage's current XY; ``t_s`` is plan time, ``key`` identifies the
        call (field, time point, attempt) for the seeded draw."""
        rng = np.random.default_rng([self._seed, STREAM_AUTOFOCUS, *key])
        missed = bool(rng.random() < self.miss_rate)
        if missed:
            error = float(rng.choice((-1.0, 1.0)) * rng.uniform(*self.miss_um))
        else:
            error = float(rng.uniform(-AUTOFOCUS_PRECISION_UM, AUTOFOCUS_PRECISION_UM))
        start = self._clock.now()
        self._clock.sleep(self.scan_s)
        true_z = self._surface.z_um(self._stage.x_um, self._stage.y_um, t_s + self.scan_s)
        offset = self._stage.z_um - true_z
        if self.capture_um is not None and abs(offset) > self.capture_um:
            # Focus lies outside the search window: it settles on the best thing inside it
            # (a texture, a bubble), at the window's edge nearest to focus at best.
            missed = True
            error = offset - np.sign(offset) * self.capture_um * float(rng.uniform(0.0, 1.0))
        self._stage.move_z(true_z + error)
        return AutofocusResult(
            z_um=self._stage.z_um, error_um=error, missed=missed, duration_s=self._clock.now() - start
        )
