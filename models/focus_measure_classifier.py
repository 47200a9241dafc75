"""A classifier for samples the SDCNN was not trained on: a calibrated focus measure.

``p_focused`` is a logistic function of a classical focus measure, centred on a threshold
found by ``refocusd calibrate`` from z-series of the user's own sample (planes near the
sharpest plane are "focused"). The calibration is a small JSON file; set
``[models] classifier`` to its path. No TensorFlow.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refocusd.models.focus_measures import FOCUS_MEASURES
from refocusd.models import ModelError, Verdict
from refocusd.models.api import DeviceInfo, valid_threshold

CALIBRATION_KIND = "refocusd.focus_measure"


@dataclass(frozen=True, slots=True)
class FocusMeasureCalibration:
    measure: str
    threshold: float  # measure value where p_focused = 0.5
    scale: float  # logistic width, in measure units
    focused_within_um: float
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.measure not in FOCUS_MEASURES:
            raise ModelError(f"unknown focus measure {self.measure!r} (known: {', '.join(FOCUS_MEASURES)})")
        if not self.scale > 0:
            raise ModelError(f"focus-measure scale must be > 0, got {self.scale}")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"kind": CALIBRATION_KIND, **asdict(self)}, indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FocusMeasureCalibration:
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read focus-measure calibration {path}: {exc}") from exc
        if data.pop("kind", None) != CALIBRATION_KIND:
            raise ModelError(f"{path} is not a focus-measure calibration (kind {CALIBRATION_KIND!r})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ModelError(f"{path}: {exc}") from exc


def fit_threshold(focused: Sequence[float], defocused: Sequence[float]) -> tuple[float, float]:
    """The threshold on the measure and the logistic scale (a quarter of the margin).

    Separable scores: the middle of the gap. Otherwise the cut with the fewest
    misclassified planes, the one farthest from any score among equals.
    """
    if not focused or not defocused:
        raise ModelError("calibration needs both focused and defocused planes")
    f, d = np.asarray(focused, float), np.asarray(defocused, float)
    if f.min() > d.max():
        return float((f.min() + d.max()) / 2), float((f.min() - d.max()) / 4)
    values = np.unique(np.concatenate([f, d]))
    candidates = (values[:-1] + values[1:]) / 2
    errors = np.array([(f < c).sum() + (d >= c).sum() for c in candidates])
    best = candidates[errors == errors.min()]
    margins = np.array([np.abs(values - c).min() for c in best])
    threshold = float(best[int(np.argmax(margins))])
    spread = float(np.percentile(f, 25) - np.percentile(d, 75))
    return threshold, max(abs(spread) / 4, 1e-6 * max(1.0, abs(threshold)))


class FocusMeasureClassifier:
    """Implements :class:`~refocusd.models.api.FocusClassifier`."""

    def __init__(self, calibration: FocusMeasureCalibration, *, threshold: float = 0.5) -> None:
        self.calibration = calibration
        self._measure = FOCUS_MEASURES[calibration.measure]
        self._p_threshold = valid_threshold(threshold)

    @property
    def threshold(self) -> float:
        """p(focused) at or above which a frame is focused (not the measure's threshold)."""
        return self._p_threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._p_threshold = valid_threshold(value)

    @property
    def device(self) -> DeviceInfo:
        return DeviceInfo(kind="cpu", name="numpy", reason="a focus measure runs on the CPU, no network")

    @property
    def model_id(self) -> str:
        c = self.calibration
        return f"focus-measure:{c.measure}@{c.threshold:.6g}"

    def score(self, pixels: np.ndarray) -> float:
        return self._measure(pixels)

    def classify(self, pixels: np.ndarray, *, pixel_size_um: float | None = None) -> Verdict:
        # A focus measure has no trained sampling: the pixel size is recorded, not used.
        began = time.perf_counter()
        c = self.calibration
        z = (self._measure(pixels) - c.threshold) / c.scale
        p = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
        label = "focused" if p >= self._p_threshold else "defocused"
        return Verdict(p_focused=p, label=label, model_id=self.model_id,
                       latency_s=time.perf_counter() - began, pixel_size_um=pixel_size_um)

    def classify_batch(
        self, frames: Sequence[np.ndarray], *, pixel_sizes: Sequence[float | None] | None = None
    ) -> list[Verdict]:
        sizes = list(pixel_sizes) if pixel_sizes is not None else [None] * len(frames)
        return [self.classify(f, pixel_size_um=s) for f, s in zip(frames, sizes, strict=True)]


def is_focus_measure_spec(spec: str) -> bool:
    return spec.endswith(".json")


def load_focus_measure_classifier(spec: str, *, threshold: float = 0.5) -> FocusMeasureClassifier:
    return FocusMeasureClassifier(FocusMeasureCalibration.load(Path(spec)), threshold=threshold)
