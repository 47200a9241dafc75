"""Calibrate focus detection on a new kind of sample (beads, tissue...) with the real core.

At a few stage positions a z-series is snapped; each position's best focus is the plane
with the highest focus measure; planes within ``tolerance_um`` of it are labelled focused,
planes at least ``2 × tolerance_um`` away defocused (the band between is left out: it is
neither). The result is (a) a focus-measure calibration (a threshold on the measure)
usable as ``[models] classifier``, and (b) optionally the labelled planes as TIFFs in
``focused/`` and ``defocused/`` for ``refocusd train classifier --base default``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
import tifffile

from refocusd.models.focus_measure_classifier import FocusMeasureCalibration, fit_threshold
from refocusd.models.focus_measures import FOCUS_MEASURES
from refocusd.drivers.micromanager.session import CoreSession

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ZSeries:
    x_um: float | None
    y_um: float | None
    z_um: np.ndarray
    scores: np.ndarray
    planes: list[np.ndarray]

    @property
    def best_z(self) -> float:
        return float(self.z_um[int(np.argmax(self.scores))])


def calibration_plan(sequence, positions: int, z_range_um: float, z_step_um: float,
                     ) -> tuple[list[tuple[float, float] | None], list[float]]:
    """The first ``positions`` XY of the acquisition plan (None: stay where the stage is)
    and the z planes of each series: ±``z_range_um`` in ``z_step_um`` steps around the
    plan's own z (0 where the plan has none)."""
    stage = list(sequence.stage_positions)[:positions] or [None]
    xy = [None if p is None or p.x is None else (float(p.x), float(p.y or 0.0)) for p in stage]
    centre = float(next((p.z for p in stage if p is not None and p.z is not None), 0.0))
    z = [float(v) for v in centre + np.arange(-z_range_um, z_range_um + z_step_um / 2, z_step_um)]
    return xy, z


def acquire_z_series(
    session: CoreSession, xy: tuple[float, float] | None, z_um: Sequence[float], measure: str
) -> ZSeries:
    score = FOCUS_MEASURES[measure]
    planes, scores = [], []

    def at(z: float):
        def snap(core):
            if xy is not None:
                core.set_xy_position(float(xy[0]), float(xy[1]))
                core.wait_for_device(core.get_xy_stage_device())
            core.set_position(float(z))
            core.wait_for_device(core.get_focus_device())
            core.snap_image()
            return np.asarray(core.get_image()).reshape(core.get_image_height(), core.get_image_width())

        return snap

    for z in z_um:
        pixels = session.call("calibration snap", at(z))
        planes.append(pixels)
        scores.append(score(pixels))
    return ZSeries(None if xy is None else xy[0], None if xy is None else xy[1], np.asarray(z_um, float),
                   np.asarray(scores), planes)


def calibrate(
    session: CoreSession,
    positions: Sequence[tuple[float, float] | None],
    *,
    z_um: Sequence[float],
    tolerance_um: float,
    measure: str = "gradient_energy",
    planes_dir: Path | None = None,
) -> FocusMeasureCalibration:
    focused: list[float] = []
    defocused: list[float] = []
    bests = []
    for i, xy in enumerate(positions):
        series = acquire_z_series(session, xy, z_um, measure)
        best = series.best_z
        bests.append(best)
        for j, (z, s) in enumerate(zip(series.z_um, series.scores, strict=True)):
            distance = abs(z - best)
            label = "focused" if distance <= tolerance_um else "defocused" if distance >= 2 * tolerance_um else None
            if label is None:
                continue
            (focused if label == "focused" else defocused).append(float(s))
            if planes_dir is not None:
                out = planes_dir / label / f"pos{i:02d}_z{z:+08.2f}.tif"
                out.parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(out, series.planes[j])
        log.info("calibrate.position", position=i, xy=xy, best_z_um=round(best, 3))
    threshold, scale = fit_threshold(focused, defocused)
    calibration = FocusMeasureCalibration(
        measure=measure,
        threshold=threshold,
        scale=scale,
        focused_within_um=tolerance_um,
        details={
            "positions": [None if p is None else list(p) for p in positions],
            "z_um": [float(z) for z in z_um],
            "best_z_um": bests,
            "focused_scores": [min(focused), max(focused)],
            "defocused_scores": [min(defocused), max(defocused)],
            "n_focused": len(focused),
            "n_defocused": len(defocused),
        },
    )
    log.info("calibrate.done", measure=measure, threshold=round(threshold, 6), n_focused=len(focused),
             n_defocused=len(defocused))
    return calibration
