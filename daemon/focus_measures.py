"""Classical focus measures for software autofocus (higher = sharper).

Computed on a single channel in float32; frames larger than ``max_side`` are strided so a
2048×2048 frame costs a few milliseconds. References: Groen et al. 1985 (normalised
variance), Brenner et al. 1976, Vollath 1987 (F4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

FocusMeasureName = Literal["normalized_variance", "brenner", "vollath_f4"]


def _prepare(pixels: np.ndarray, max_side: int = 1024) -> np.ndarray:
    image = pixels if pixels.ndim == 2 else pixels[..., :3].mean(axis=-1)
    step = max(1, max(image.shape) // max_side)
    return np.asarray(image[::step, ::step], dtype=np.float32)


def normalized_variance(pixels: np.ndarray) -> float:
    image = _prepare(pixels)
    mean = float(image.mean())
    return float(image.var() / mean) if mean > 0 else 0.0


def brenner(pixels: np.ndarray) -> float:
    image = _prepare(pixels)
    diff = image[:, 2:] - image[:, :-2]
    return float(np.mean(diff * diff))


def vollath_f4(pixels: np.ndarray) -> float:
    image = _prepare(pixels)
    return float(np.mean(image[:, :-1] * image[:, 1:]) - np.mean(image[:, :-2] * image[:, 2:]))


FOCUS_MEASURES: dict[str, Callable[[np.ndarray], float]] = {
    "normalized_variance": normalized_variance,
    "brenner": brenner,
    "vollath_f4": vollath_f4,
}
