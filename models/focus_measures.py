"""Classical focus measures for software autofocus (higher = sharper).

Computed on a single channel in float32; frames larger than ``max_side`` are strided so a
2048×2048 frame costs a few milliseconds. References: Groen et al. 1985 (normalised
variance), Brenner et al. 1976, Vollath 1987 (F4); gradient energy
(Subbarao et al. 1993) normalised by the variance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

FocusMeasureName = Literal["normalized_variance", "brenner", "vollath_f4", "gradient_energy"]


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


def gradient_energy(pixels: np.ndarray) -> float:
    """Squared central differences in x and y over the image variance.

    Dividing by the variance makes it independent of brightness and of how many objects
    are in the field (sparse beads), so one threshold works across positions.
    """
    image = _prepare(pixels)
    variance = float(image.var())
    if variance <= 0:
        return 0.0
    dx = image[:, 2:] - image[:, :-2]
    dy = image[2:, :] - image[:-2, :]
    return float((np.mean(dx * dx) + np.mean(dy * dy)) / variance)


FOCUS_MEASURES: dict[str, Callable[[np.ndarray], float]] = {
    "normalized_variance": normalized_variance,
    "brenner": brenner,
    "vollath_f4": vollath_f4,
    "gradient_energy": gradient_energy,
}
