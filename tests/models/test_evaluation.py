"""Evaluation metrics against cases small enough to work out by hand (no TensorFlow)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from refocusd.models.datasets import DEFOCUSED, FOCUSED
from refocusd.models.evaluation import (
    PSNR_CAP_DB,
    ConfusionMatrix,
    RLSetting,
    best_richardson_lucy,
    data_range,
    disc_psf,
    gaussian_psf,
    psnr,
    richardson_lucy,
    roc_auc,
    ssim,
)


def _pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The definition: P(positive scores higher) + 0.5 P(tie), over all pairs."""
    pos, neg = scores[positive], scores[~positive]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_hand_cases() -> None:
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5
    # positives 0.8, 0.4; negatives 0.6, 0.2: 3 of the 4 pairs are ordered right.
    assert roc_auc([0.8, 0.4, 0.6, 0.2], [True, True, False, False]) == pytest.approx(0.75)
    # one tie (0.6 vs 0.6) counts half: (1 + 1 + 0.5 + 1) / 4
    assert roc_auc([0.8, 0.6, 0.6, 0.2], [True, True, False, False]) == pytest.approx(0.875)
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))


def test_auc_matches_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    positive = rng.random(60) < 0.4
    assert roc_auc(scores, positive) == pytest.approx(_pairwise_auc(scores, positive))


def test_confusion_matrix_counts() -> None:
    true = np.array([FOCUSED, FOCUSED, FOCUSED, DEFOCUSED, DEFOCUSED])
    pred = np.array([FOCUSED, DEFOCUSED, FOCUSED, FOCUSED, DEFOCUSED])
    c = ConfusionMatrix.from_labels(true, pred)
    assert c.as_rows() == [[2, 1], [1, 1]]


def test_psnr_and_data_range() -> None:
    a = np.zeros((8, 8), np.uint8)
    b = np.ones((8, 8), np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 1.0))
    assert psnr(a, a) == PSNR_CAP_DB
    assert data_range(np.zeros(3, np.uint16)) == 65535
    assert data_range(np.array([0.2, 0.7])) == pytest.approx(0.5)
    # 16-bit: the same error is much smaller relative to the range.
    assert psnr(a.astype(np.uint16), b.astype(np.uint16)) == pytest.approx(
        10 * math.log10(65535**2)
    )


def test_ssim_identity_and_degradation() -> None:
    rng = np.random.default_rng(1)
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    assert ssim(image, image) == pytest.approx(1.0)
    blurred = gaussian_filter(image.astype(float), (2, 2, 0)).astype(np.uint8)
    assert ssim(image, blurred) < 0.7
    with pytest.raises(ValueError):
        ssim(image, image[:32])


def test_psfs_are_normalised_and_sized() -> None:
    g, d = gaussian_psf(2.0), disc_psf(4.0)
    assert g.sum() == pytest.approx(1.0) and d.sum() == pytest.approx(1.0)
    assert g.shape == (13, 13) and d.shape == (9, 9)
    assert d[4, 4] == pytest.approx(d[4, 3])  # flat top
    assert d[0, 0] == 0.0  # corners outside the disc


def test_richardson_lucy_undoes_a_known_blur_better_than_nothing() -> None:
    rng = np.random.default_rng(2)
    target = np.zeros((96, 96), np.float64)
    target[rng.integers(8, 88, 40), rng.integers(8, 88, 40)] = 1.0  # point-like beads
    target = (gaussian_filter(target, 0.7) * 2000 + 20).clip(0, 255).astype(np.uint8)
    blurred = gaussian_filter(target.astype(np.float64), 2.0).round().astype(np.uint8)
    restored = richardson_lucy(blurred, RLSetting("gaussian", 2.0, 30))
    assert restored.dtype == np.uint8 and restored.shape == blurred.shape
    assert ssim(target, restored) > ssim(target, blurred) + 0.05
    best, setting = best_richardson_lucy(blurred, target)
    assert setting.psf in ("gaussian", "disc")
    assert ssim(target, best) >= ssim(target, restored) - 0.02


def test_defocus_bands_split_at_the_label_boundary() -> None:
    from refocusd.models.evaluation import defocus_band

    assert defocus_band(0.0, 4.0) == "0-0.25 DoF"
    assert defocus_band(-1.5, 4.0) == "0.25-0.5 DoF"
    assert defocus_band(2.0, 4.0) == "0.25-0.5 DoF", "the boundary itself is focused (|z| <= DoF/2)"
    assert defocus_band(2.1, 4.0) == "0.5-1 DoF"
    assert defocus_band(-40.0, 4.0) == ">4 DoF"
    assert defocus_band(None, 4.0) == defocus_band(1.0, None) == "?"
