"""Training augmentations: pure numpy, no TensorFlow (the training input pipelines call them).

Geometric: the 8 symmetries of the square (flips and 90° rotations). Intensity: polarity
inversion, gamma and contrast changes. Intensity operations act on the image's own range
``[min, max]``, so they do not depend on the bit depth or exposure, and they keep that range
(contrast also keeps the mean). Every function returns float32 and leaves its input alone.

:class:`Augmentation` is one drawn set of parameters; :meth:`Augmentation.apply` gives the
same transform for every image it is applied to, so a reconstructor's input and target
stay aligned (:func:`augment_pair`).

One physical caveat: for a weak phase object in bright field, an intensity-inverted image
looks like the same field at the opposite defocus (contrast inverts across focus), and in
phase contrast it looks like the other ring polarity. Polarity inversion therefore keeps
the focused/defocused label and |z|, but not the sign of z: a signed-defocus target must
not be trained on inverted images as if the sign were unchanged
(``Augmentation.inverted`` says when it was applied).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Augmentation",
    "AugmentationSpec",
    "adjust_contrast",
    "adjust_gamma",
    "augment",
    "augment_pair",
    "dihedral",
    "draw_augmentation",
    "invert_polarity",
]


def _as_float(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"want an (H, W) or (H, W, C) image, got shape {arr.shape}")
    return arr.astype(np.float32, copy=True)


ValueRange = tuple[float, float]


def _range(image: np.ndarray, value_range: ValueRange | None) -> ValueRange:
    if value_range is not None:
        return float(value_range[0]), float(value_range[1])
    return float(image.min()), float(image.max())


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """Symmetry ``k`` (0–7) of the square: ``k % 4`` quarter turns, then a left-right flip
    when ``k ≥ 4``. k = 0 is the identity; all 8 are distinct on a generic image."""
    if not 0 <= k < 8:
        raise ValueError(f"k={k} (want 0–7)")
    out = np.rot90(_as_float(image), k % 4, axes=(0, 1))
    if k >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def invert_polarity(image: np.ndarray, value_range: ValueRange | None = None) -> np.ndarray:
    """Mirror the intensities within the image's range: ``min + max − I``."""
    out = _as_float(image)
    lo, hi = _range(out, value_range)
    return np.float32(lo + hi) - out


def adjust_gamma(image: np.ndarray, gamma: float, value_range: ValueRange | None = None) -> np.ndarray:
    """``min + (max − min)·x^γ`` with ``x`` the image scaled to [0, 1] (γ > 0; 1 is identity)."""
    if gamma <= 0:
        raise ValueError(f"gamma={gamma} (want > 0)")
    out = _as_float(image)
    lo, hi = _range(out, value_range)
    if hi <= lo:
        return out
    x = np.clip((out - lo) / np.float32(hi - lo), 0.0, 1.0)
    return (np.float32(lo) + np.float32(hi - lo) * np.power(x, np.float32(gamma))).astype(np.float32)


def adjust_contrast(image: np.ndarray, factor: float, value_range: ValueRange | None = None,
                    mean: float | None = None) -> np.ndarray:
    """Scale deviations from the mean by ``factor`` (> 0), clipped to the image's range."""
    if factor <= 0:
        raise ValueError(f"factor={factor} (want > 0)")
    out = _as_float(image)
    lo, hi = _range(out, value_range)
    mean = np.float32(out.mean() if mean is None else mean)
    return np.clip(mean + np.float32(factor) * (out - mean), lo, hi).astype(np.float32)


@dataclass(frozen=True)
class AugmentationSpec:
    """Which augmentations to draw, and their ranges (gamma and contrast log-uniform)."""

    flips_and_rotations: bool = True
    polarity_probability: float = 0.5
    gamma_range: tuple[float, float] = (0.7, 1.4)
    contrast_range: tuple[float, float] = (0.7, 1.4)

    def __post_init__(self) -> None:
        if not 0.0 <= self.polarity_probability <= 1.0:
            raise ValueError(f"polarity_probability={self.polarity_probability} (want 0–1)")
        for name, (lo, hi) in (("gamma_range", self.gamma_range), ("contrast_range", self.contrast_range)):
            if not 0.0 < lo <= hi:
                raise ValueError(f"{name}=({lo}, {hi}) (want 0 < min ≤ max)")


@dataclass(frozen=True)
class Augmentation:
    """One drawn transform: symmetry ``k``, inversion, then gamma, then contrast."""

    k: int = 0
    inverted: bool = False
    gamma: float = 1.0
    contrast: float = 1.0

    def apply(self, image: np.ndarray, value_range: ValueRange | None = None,
              mean: float | None = None) -> np.ndarray:
        """Transform ``image``. ``value_range`` and ``mean`` (default: the image's own) fix
        the intensity mapping, so that several images get exactly the same one."""
        out = dihedral(image, self.k)
        if value_range is None:
            value_range = _range(out, None)
        lo, hi = value_range
        pivot = mean  # a given mean pivot goes through the same map as the pixels
        if self.inverted:
            out = invert_polarity(out, value_range)
            pivot = None if pivot is None else lo + hi - pivot
        if self.gamma != 1.0 and hi > lo:
            out = adjust_gamma(out, self.gamma, value_range)
            if pivot is not None:
                pivot = lo + (hi - lo) * float(np.clip((pivot - lo) / (hi - lo), 0.0, 1.0)) ** self.gamma
        if self.contrast != 1.0:
            out = adjust_contrast(out, self.contrast, value_range, pivot)
        return out


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else float(lo)


def draw_augmentation(rng: np.random.Generator, spec: AugmentationSpec | None = None) -> Augmentation:
    spec = spec or AugmentationSpec()
    return Augmentation(
        k=int(rng.integers(0, 8)) if spec.flips_and_rotations else 0,
        inverted=bool(rng.random() < spec.polarity_probability),
        gamma=_log_uniform(rng, *spec.gamma_range),
        contrast=_log_uniform(rng, *spec.contrast_range),
    )


def augment(image: np.ndarray, rng: np.random.Generator,
            spec: AugmentationSpec | None = None) -> tuple[np.ndarray, Augmentation]:
    """A random augmentation of one image, and what was drawn."""
    aug = draw_augmentation(rng, spec)
    return aug.apply(image), aug


def augment_pair(source: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                 spec: AugmentationSpec | None = None) -> tuple[np.ndarray, np.ndarray, Augmentation]:
    """The same random augmentation applied to an input and its target (reconstructor)."""
    if np.shape(source)[:2] != np.shape(target)[:2]:
        raise ValueError(f"input {np.shape(source)} and target {np.shape(target)} differ in size")
    aug = draw_augmentation(rng, spec)
    src, tgt = np.asarray(source, dtype=np.float32), np.asarray(target, dtype=np.float32)
    joint = (float(min(src.min(), tgt.min())), float(max(src.max(), tgt.max())))
    mean = float(tgt.mean())  # one intensity map for both: the target's mean is its pivot
    return aug.apply(src, joint, mean), aug.apply(tgt, joint, mean), aug
