"""Focus-surface memory: where focus lies across a plate, learnt from the foci found.

Every frame judged focused (an accepted original or a successful re-acquisition) is one
observation of the focal surface: stage (x, y), clock time, focus z. The model is a plane
with a linear drift in time, ``z = a + b·x + c·y + d·t`` (plate tilt and thermal creep),
fitted by least squares with a light ridge on the slopes (two points along a row say
nothing about the column tilt), one pass of outlier rejection, plus the inverse-distance
mean of the nearest observations' residuals (the plate's bow, well to well). Drivers that
allow it start each field's focusing from its prediction instead of the last field's z.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import structlog

log = structlog.get_logger(__name__)

_RIDGE = 0.05  # on slopes in µm/mm and drift in µm/h: weak, it only settles unknown terms
_NEIGHBOURS = 3
_NEIGHBOUR_RANGE_MM = 20.0
_OUTLIER_UM = 3.0


class FocusSurfaceMemory:
    """Implements the drivers' :data:`~refocusd.drivers.base.FocusStartProvider` through
    :meth:`start_z`."""

    def __init__(self, *, max_points: int = 256) -> None:
        self._points: deque[tuple[float, float, float, float]] = deque(maxlen=max_points)

    def __len__(self) -> int:
        return len(self._points)

    def observe(self, x_um: float, y_um: float, t_s: float, z_um: float) -> None:
        if all(np.isfinite(v) for v in (x_um, y_um, t_s, z_um)):
            self._points.append((float(x_um), float(y_um), float(t_s), float(z_um)))

    def start_z(self, x_um: float, y_um: float, t_s: float) -> float | None:
        """Predicted focus z at (x, y) and time ``t_s``; None before the first observation."""
        if not self._points:
            return None
        pts = np.asarray(self._points)
        if len(pts) == 1:
            return float(pts[0, 3])
        xy_mm = pts[:, :2] / 1000.0
        t_h = pts[:, 2] / 3600.0
        z = pts[:, 3]
        origin = np.array([xy_mm[:, 0].mean(), xy_mm[:, 1].mean(), t_h.mean()])
        features = np.column_stack([np.ones(len(pts)), xy_mm - origin[:2], t_h - origin[2]])
        keep = np.ones(len(pts), bool)
        for _ in range(2):
            coef = _ridge_fit(features[keep], z[keep])
            residual = z - features @ coef
            inliers = np.abs(residual) <= max(_OUTLIER_UM, 3 * float(np.median(np.abs(residual[keep]))))
            if inliers.sum() < 2 or np.array_equal(inliers, keep):
                break
            keep = inliers
        query_mm = np.array([x_um, y_um]) / 1000.0
        query = np.array([1.0, *(query_mm - origin[:2]), t_s / 3600.0 - origin[2]])
        predicted = float(query @ coef)
        distance = np.hypot(*(xy_mm[keep] - query_mm).T)
        near = np.argsort(distance)[:_NEIGHBOURS]
        near = near[distance[near] <= _NEIGHBOUR_RANGE_MM]
        if len(near):
            weights = 1.0 / (distance[near] + 1.0) ** 2
            predicted += float(np.sum(weights * residual[keep][near]) / weights.sum())
        log.debug("focus_surface.predicted", x_um=round(x_um, 1), y_um=round(y_um, 1), z_um=round(predicted, 3),
                  points=int(keep.sum()))
        return predicted


def _ridge_fit(features: np.ndarray, z: np.ndarray) -> np.ndarray:
    penalty = np.sqrt(_RIDGE) * np.eye(features.shape[1])[1:]
    a = np.vstack([features, penalty])
    b = np.concatenate([z, np.zeros(len(penalty))])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    return coef
