"""Does a reconstruction look better than its input? The score every reconstruction carries.

A reconstruction is what the lab keeps of a lost time point, so it must never pass for an
improvement when it is not one. :func:`score_reconstruction` judges the output against its
own input with two independent witnesses:

- the focus classifier (the same one that sent the frame here): ``p_focused`` and, where the
  classifier estimates it, the signed defocus, before and after;
- a classical, model-free sharpness measure (:func:`detail_sharpness`) and its gain.

Measured on simulated pairs, the network sharpens fine detail even of inputs far beyond its
training range (it draws edges it cannot know), so the sharpness gain alone cannot tell
help from harm; the classifier's change of mind can, and the sharpness gain guards against
an output that lost detail. The result is ``quality = "improved"`` only if every witness
agrees; otherwise ``"not_improved"`` with the reasons. An input without structure (an empty field, or one so
far out of focus that nothing is left) is ``not_improved`` whatever the output shows,
because whatever detail the network draws there cannot come from the specimen.

Pure numpy/scipy and the :class:`~refocusd.models.api.FocusClassifier` protocol: no
TensorFlow here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from refocusd.models.api import FocusClassifier, Verdict

Quality = Literal["improved", "not_improved"]
IMPROVED: Quality = "improved"
NOT_IMPROVED: Quality = "not_improved"

_MAX_SIDE = 1024  # frames are strided to about this side: the score costs milliseconds


@dataclass(frozen=True, slots=True)
class QualityRule:
    """When a reconstruction counts as improved (``[reconstruction]`` settings).

    - the classifier must find it clearly more focused than its input: its log-odds of
      "focused" up by ``min_logit_gain`` (about x2.7 in odds for 1.0), or a verdict of
      focused (``p_focused >= 0.5``) where the input had none;
    - ``min_p_focused``: optionally, an absolute floor for the output's ``p_focused`` (0: off);
    - ``min_sharpness_gain``: the fine-detail sharpness must not fall below this ratio;
    - ``min_input_structure``: below this the input holds nothing to restore;
    - where the classifier estimates defocus, its magnitude must not grow by more than
      ``defocus_tolerance_um`` (or the input estimate's sigma, if larger).

    Defaults were calibrated with ``bench/bench_reconstruction_gate.py`` (BENCHMARKS.md).
    """

    min_logit_gain: float = 1.0
    min_p_focused: float = 0.0
    min_sharpness_gain: float = 0.9
    min_input_structure: float = 0.008
    defocus_tolerance_um: float = 1.0  # the estimate may grow by this (or its sigma) at most

    def __post_init__(self) -> None:
        if self.min_sharpness_gain <= 0 or not 0.0 <= self.min_p_focused <= 1.0:
            raise ValueError(
                f"min_sharpness_gain must be > 0 and min_p_focused in [0, 1], got "
                f"{self.min_sharpness_gain} and {self.min_p_focused}"
            )
        if self.min_input_structure < 0 or self.min_logit_gain < 0:
            raise ValueError(
                f"min_input_structure and min_logit_gain must be >= 0, got "
                f"{self.min_input_structure} and {self.min_logit_gain}"
            )


@dataclass(frozen=True, slots=True)
class ReconstructionScore:
    """How a reconstruction compares with its input; written into every provenance."""

    quality: Quality
    reasons: tuple[str, ...]
    p_focused_before: float
    p_focused_after: float
    defocus_um_before: float | None
    defocus_um_after: float | None
    sharpness_before: float
    sharpness_after: float
    sharpness_gain: float
    input_structure: float
    classifier: str

    @property
    def improved(self) -> bool:
        return self.quality == IMPROVED

    def as_dict(self) -> dict[str, object]:
        def r(value: float | None, digits: int = 4) -> float | None:
            return None if value is None else round(float(value), digits)

        return {
            "quality": self.quality,
            "reasons": list(self.reasons),
            "p_focused_before": r(self.p_focused_before),
            "p_focused_after": r(self.p_focused_after),
            "defocus_um_before": r(self.defocus_um_before, 3),
            "defocus_um_after": r(self.defocus_um_after, 3),
            "sharpness_before": r(self.sharpness_before, 5),
            "sharpness_after": r(self.sharpness_after, 5),
            "sharpness_gain": r(self.sharpness_gain),
            "input_structure": r(self.input_structure, 5),
            "classifier": self.classifier,
        }


def _luminance(pixels: np.ndarray) -> np.ndarray:
    image = np.asarray(pixels)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=-1)
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W) or (H, W, C) frame, got shape {np.shape(pixels)}")
    step = max(1, max(image.shape) // _MAX_SIDE)
    return np.asarray(image[::step, ::step], dtype=np.float32)


def detail_sharpness(pixels: np.ndarray) -> float:
    """Energy of fine detail (a difference of Gaussians, sigma 1 and 3 px) relative to the
    frame's brightness.

    Defocus removes exactly this band; the sigma-1 smoothing keeps pixel noise out of it, so
    a network that merely denoises does not score as sharper, and dividing by the mean makes
    it independent of exposure and bit depth.
    """
    image = _luminance(pixels)
    mean = float(image.mean())
    if mean <= 0:
        return 0.0
    fine = ndimage.gaussian_filter(image, 1.0) - ndimage.gaussian_filter(image, 3.0)
    return float(fine.std() / mean)


def input_structure(pixels: np.ndarray) -> float:
    """Contrast of everything coarser than pixel noise and finer than the illumination
    (sigma 1 to 16 px), relative to the brightness: ~0 for an empty field."""
    image = _luminance(pixels)
    mean = float(image.mean())
    if mean <= 0:
        return 0.0
    band = ndimage.gaussian_filter(image, 1.0) - ndimage.gaussian_filter(image, 16.0)
    return float(band.std() / mean)


def score_reconstruction(
    classifier: FocusClassifier,
    before: np.ndarray,
    after: np.ndarray,
    rule: QualityRule | None = None,
    *,
    verdict_before: Verdict | None = None,
    pixel_size_um: float | None = None,
) -> ReconstructionScore:
    """Score ``after`` (the reconstruction) against ``before`` (its input).

    ``verdict_before``: the classifier's verdict on the input when the caller has it (the
    ledger does), else it is classified here.
    """
    rule = rule or QualityRule()
    if verdict_before is None:
        verdict_before = _classify(classifier, before, pixel_size_um)
    verdict_after = _classify(classifier, after, pixel_size_um)
    sharp_before, sharp_after = detail_sharpness(before), detail_sharpness(after)
    gain = sharp_after / sharp_before if sharp_before > 0 else (1.0 if sharp_after == 0 else float("inf"))
    structure = input_structure(before)

    reasons: list[str] = []
    if structure < rule.min_input_structure:
        reasons.append(
            f"the input holds no structure to restore (contrast {structure:.4f} < "
            f"{rule.min_input_structure})"
        )
    if gain < rule.min_sharpness_gain:
        reasons.append(f"fine-detail sharpness fell (gain {gain:.3f} < {rule.min_sharpness_gain})")
    p_before, p_after = verdict_before.p_focused, verdict_after.p_focused
    logit_gain = _logit(p_after) - _logit(p_before)
    now_focused = p_after >= 0.5 > p_before
    if logit_gain < rule.min_logit_gain and not now_focused:
        reasons.append(
            f"the classifier does not find it clearly more focused (p_focused {p_before:.3f} -> "
            f"{p_after:.3f}, log-odds {logit_gain:+.2f} < +{rule.min_logit_gain})"
        )
    if p_after < rule.min_p_focused:
        reasons.append(f"p_focused {p_after:.3f} < {rule.min_p_focused}")
    dz_before, dz_after = verdict_before.defocus_um, verdict_after.defocus_um
    if dz_before is not None and dz_after is not None:
        tolerance = max(rule.defocus_tolerance_um, verdict_before.defocus_sigma_um or 0.0)
        if abs(dz_after) - abs(dz_before) > tolerance:
            reasons.append(f"estimated defocus grew ({dz_before:+.1f} -> {dz_after:+.1f} um, "
                           f"tolerance {tolerance:.1f})")
    return ReconstructionScore(
        quality=NOT_IMPROVED if reasons else IMPROVED,
        reasons=tuple(reasons),
        p_focused_before=verdict_before.p_focused,
        p_focused_after=verdict_after.p_focused,
        defocus_um_before=dz_before,
        defocus_um_after=dz_after,
        sharpness_before=sharp_before,
        sharpness_after=sharp_after,
        sharpness_gain=gain if np.isfinite(gain) else 1e6,
        input_structure=structure,
        classifier=classifier.model_id,
    )


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


def _classify(classifier: FocusClassifier, pixels: np.ndarray, pixel_size_um: float | None) -> Verdict:
    return classifier.classify(pixels, pixel_size_um=pixel_size_um)


@dataclass(frozen=True, slots=True)
class QualityScorer:
    """A classifier and a rule: what the reconstruct-and-write pipeline scores with."""

    classifier: FocusClassifier
    rule: QualityRule = QualityRule()

    def score(self, before: np.ndarray, after: np.ndarray, *, verdict: Verdict | None = None,
              pixel_size_um: float | None = None) -> ReconstructionScore:
        """``verdict``: the input's verdict as recorded; reused when this classifier made it."""
        reuse = verdict is not None and verdict.model_id == self.classifier.model_id
        if pixel_size_um is None and verdict is not None:
            pixel_size_um = verdict.pixel_size_um
        return score_reconstruction(self.classifier, before, after, self.rule,
                                    verdict_before=verdict if reuse else None,
                                    pixel_size_um=pixel_size_um)
