"""Training augmentations (pure numpy): exact algebra on small arrays, and on simulated
frames, that they keep what the focus label rests on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from refocusd.models.augment import (
    Augmentation,
    AugmentationSpec,
    adjust_contrast,
    adjust_gamma,
    augment,
    augment_pair,
    dihedral,
    draw_augmentation,
    invert_polarity,
)
from refocusd.models.synth.optics import OBJECTIVES, render
from refocusd.models.synth.specimen import random_specimen


def _generic(shape: tuple[int, ...] = (6, 6)) -> np.ndarray:
    return np.random.default_rng(0).uniform(10, 200, shape).astype(np.uint16)


def test_dihedral_gives_the_eight_symmetries_of_the_square() -> None:
    image = _generic()
    outs = [dihedral(image, k) for k in range(8)]
    assert all(o.dtype == np.float32 and o.shape == image.shape for o in outs)
    np.testing.assert_array_equal(outs[0], image)
    assert len({o.tobytes() for o in outs}) == 8
    np.testing.assert_array_equal(outs[1], np.rot90(image))
    np.testing.assert_array_equal(outs[4], image[:, ::-1])
    # Each is a permutation of the pixels, and a rotation by 4 quarter turns is the identity.
    for o in outs:
        np.testing.assert_array_equal(np.sort(o, axis=None), np.sort(image.astype(np.float32), axis=None))
    np.testing.assert_array_equal(dihedral(dihedral(dihedral(dihedral(image, 1), 1), 1), 1), image)
    colour = _generic((4, 6, 3))
    assert dihedral(colour, 1).shape == (6, 4, 3)
    with pytest.raises(ValueError):
        dihedral(image, 8)


def test_intensity_changes_keep_the_range_and_invert_exactly() -> None:
    image = _generic().astype(np.float32)
    lo, hi = image.min(), image.max()
    inverted = invert_polarity(image)
    assert inverted.min() == pytest.approx(lo) and inverted.max() == pytest.approx(hi)
    np.testing.assert_allclose(invert_polarity(inverted), image, rtol=1e-6)
    assert np.corrcoef(inverted.ravel(), image.ravel())[0, 1] == pytest.approx(-1.0)

    np.testing.assert_allclose(adjust_gamma(image, 1.0), image, rtol=1e-6)
    for g in (0.5, 2.0):
        out = adjust_gamma(image, g)
        assert out.min() == pytest.approx(lo) and out.max() == pytest.approx(hi)
        order = np.argsort(image, axis=None)
        assert np.all(np.diff(out.ravel()[order]) >= -1e-4)  # monotonic
    assert adjust_gamma(image, 2.0).mean() < image.mean() < adjust_gamma(image, 0.5).mean()

    flat = adjust_contrast(image, 0.5)
    assert flat.mean() == pytest.approx(image.mean(), rel=1e-5)
    assert flat.std() == pytest.approx(0.5 * image.std(), rel=1e-4)
    steep = adjust_contrast(image, 3.0)
    assert steep.min() >= lo and steep.max() <= hi  # clipped to the range
    image_before = image.copy()
    invert_polarity(image)
    np.testing.assert_array_equal(image, image_before)  # inputs are left alone
    for bad in (lambda: adjust_gamma(image, 0.0), lambda: adjust_contrast(image, -1.0)):
        with pytest.raises(ValueError):
            bad()


def test_draws_are_reproducible_and_pairs_get_one_transform() -> None:
    spec = AugmentationSpec(polarity_probability=0.5)
    a = [draw_augmentation(np.random.default_rng(7), spec) for _ in range(2)]
    assert a[0] == a[1]
    draws = [draw_augmentation(np.random.default_rng(s), spec) for s in range(200)]
    assert {d.k for d in draws} == set(range(8))
    assert 60 < sum(d.inverted for d in draws) < 140
    assert all(0.7 <= d.gamma <= 1.4 and 0.7 <= d.contrast <= 1.4 for d in draws)
    none = AugmentationSpec(flips_and_rotations=False, polarity_probability=0.0,
                            gamma_range=(1.0, 1.0), contrast_range=(1.0, 1.0))
    image = _generic()
    out, aug = augment(image, np.random.default_rng(1), none)
    assert aug == Augmentation()
    np.testing.assert_array_equal(out, image)

    # A pair: same geometry and one intensity map (a target equal to its input stays equal).
    source = _generic((8, 8))
    for seed in range(10):
        x, y, aug = augment_pair(source, source.copy(), np.random.default_rng(seed))
        np.testing.assert_array_equal(x, y)
        assert x.shape == source.shape
    target = source.astype(np.float32) * 0.5 + 20
    x, y, aug = augment_pair(source, target, np.random.default_rng(3), AugmentationSpec(polarity_probability=1.0))
    # Geometry and ordering agree pixel for pixel: a monotonic map of one image to the other.
    assert aug.inverted
    assert np.corrcoef(x.ravel(), y.ravel())[0, 1] > 0.95
    with pytest.raises(ValueError, match="differ in size"):
        augment_pair(source, source[:4], np.random.default_rng(0))


def _laplacian_sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian over the variance of the image: a scale-free focus measure."""
    return float(ndimage.laplace(image.astype(np.float64)).var() / max(image.astype(np.float64).var(), 1e-12))


def test_augmentations_keep_the_focus_order_of_simulated_frames() -> None:
    optics = OBJECTIVES["10x"]
    spec = random_specimen((128, 128), np.random.default_rng(4), pixel_size_um=0.5, density=0.5, substrate="tcps")
    sharp = render(spec, 0.0, optics)
    blurred = render(spec, 25.0, optics)
    assert _laplacian_sharpness(sharp) > 2.0 * _laplacian_sharpness(blurred)
    for seed in range(16):
        aug = draw_augmentation(np.random.default_rng(seed), AugmentationSpec(polarity_probability=0.5))
        assert _laplacian_sharpness(aug.apply(sharp)) > 1.5 * _laplacian_sharpness(aug.apply(blurred)), aug
