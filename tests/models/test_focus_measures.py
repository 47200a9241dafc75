import numpy as np
import pytest
from scipy import ndimage

from refocusd.models.focus_measures import FOCUS_MEASURES


@pytest.mark.parametrize("name", sorted(FOCUS_MEASURES))
def test_measures_fall_with_blur(name):
    rng = np.random.default_rng(0)
    sharp = ndimage.gaussian_filter(rng.random((256, 256)), 1.0) * 1000 + 100
    scores = [FOCUS_MEASURES[name](ndimage.gaussian_filter(sharp, sigma)) for sigma in (0, 1, 2, 4)]
    assert scores == sorted(scores, reverse=True), scores


@pytest.mark.parametrize("name", sorted(FOCUS_MEASURES))
def test_measures_accept_rgb_and_large_frames(name):
    rgb = np.random.default_rng(1).integers(0, 255, (2048, 2048, 3), dtype=np.uint8)
    assert np.isfinite(FOCUS_MEASURES[name](rgb))
