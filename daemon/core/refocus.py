"""Re-focus strategies: the driver's own autofocus, or a software z-sweep.

A strategy moves the focus drive and returns the z it settled on; the runner then asks
the driver to re-acquire. Hardware errors surface as :class:`RefocusFailed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import structlog

from refocusd.config.errors import RefocusdError
from refocusd.config.settings import RefocusSettings
from refocusd.models.focus_measures import FOCUS_MEASURES
from refocusd.drivers import DriverError, StageControl
from refocusd.models import FocusClassifier

log = structlog.get_logger(__name__)

Scorer = Callable[[np.ndarray], float]


class RefocusFailed(RefocusdError, RuntimeError):
    """The strategy could not find or reach a focus position."""


@dataclass(frozen=True, slots=True)
class RefocusResult:
    z_um: float
    strategy: str
    scores: tuple[tuple[float, float], ...] = field(default=())


class RefocusStrategy(Protocol):
    name: str

    def refocus(self, stage: StageControl) -> RefocusResult: ...


class DeviceAutofocus:
    """The microscope's own autofocus (hardware or vendor software)."""

    name = "device"

    def refocus(self, stage: StageControl) -> RefocusResult:
        try:
            return RefocusResult(z_um=float(stage.autofocus()), strategy=self.name)
        except DriverError as exc:
            raise RefocusFailed(f"device autofocus failed: {exc}") from exc


class SweepAutofocus:
    """Step through ±range around the current z, score each plane, fit the peak.

    The peak is refined with a parabola through the best plane and its neighbours, so
    the result is usually better than the step size; a peak on the edge of the range
    means focus lies outside it and the sweep fails rather than guessing.
    """

    name = "sweep"

    def __init__(self, scorer: Scorer, *, range_um: float, step_um: float, scorer_name: str = "") -> None:
        self._scorer = scorer
        self._range = range_um
        self._step = step_um
        self.scorer_name = scorer_name

    def refocus(self, stage: StageControl) -> RefocusResult:
        try:
            start = stage.current_z()
            planes = start + np.arange(-self._range, self._range + self._step / 2, self._step)
            scores = []
            for z in planes:
                stage.move_z(float(z))
                scores.append(self._scorer(stage.snap()))
            best = int(np.argmax(scores))
            if best in (0, len(planes) - 1) and len(planes) > 2:
                stage.move_z(start)
                raise RefocusFailed(
                    f"sharpest plane at the edge of the sweep (z={planes[best]:.1f} µm); "
                    f"focus is probably outside ±{self._range} µm of {start:.1f} µm"
                )
            z_best = float(planes[best]) + _parabola_offset(scores, best) * self._step
            stage.move_z(z_best)
        except DriverError as exc:
            raise RefocusFailed(f"stage or camera failed during the sweep: {exc}") from exc
        return RefocusResult(
            z_um=z_best,
            strategy=self.name,
            scores=tuple((float(z), float(s)) for z, s in zip(planes, scores, strict=True)),
        )


def _parabola_offset(scores: list[float], best: int) -> float:
    """Vertex of the parabola through (best-1, best, best+1), in steps from ``best``."""
    if best == 0 or best == len(scores) - 1:
        return 0.0
    left, centre, right = scores[best - 1], scores[best], scores[best + 1]
    curvature = left - 2 * centre + right
    if curvature >= 0:  # flat top (e.g. a saturated p_focused): keep the plane itself
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def build_strategy(settings: RefocusSettings, classifier: FocusClassifier) -> RefocusStrategy:
    if settings.strategy == "device":
        return DeviceAutofocus()
    if settings.scorer == "classifier":
        scorer: Scorer = lambda pixels: classifier.classify(pixels).p_focused  # noqa: E731
    else:
        scorer = FOCUS_MEASURES[settings.scorer]
    return SweepAutofocus(
        scorer, range_um=settings.sweep_range_um, step_um=settings.sweep_step_um, scorer_name=settings.scorer
    )
