"""The physics-aware baseline restores a known weak phase object: the simulator renders it
out of focus and in focus, and the Wiener inversion of the weak-object transfer functions
at the true z comes much closer to the in-focus image than the defocused input does."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from refocusd.models.evaluation import ssim
from refocusd.models.physics import best_physics_deconvolution, physics_deconvolve, weak_object_transfer
from refocusd.models.synth.optics import OBJECTIVES, render
from refocusd.models.synth.specimen import Specimen

SIDE = 128
PIXEL_UM = 595.0 / 1608.0


def _weak_phase_object(seed: int, rms_rad: float = 0.05) -> Specimen:
    rng = np.random.default_rng(seed)
    phase = ndimage.gaussian_filter(rng.standard_normal((SIDE, SIDE)), 2.0, mode="wrap")
    phase *= rms_rad / phase.std()
    return Specimen(np.exp(1j * phase).astype(np.complex64), pixel_size_um=PIXEL_UM)


@pytest.mark.parametrize("z_um", [-20.0, 10.0])
def test_restores_a_weak_phase_object_better_than_the_input(z_um: float) -> None:
    optics = OBJECTIVES["10x"]
    specimen = _weak_phase_object(seed=1)
    defocused = render(specimen, z_um, optics).astype(np.float32)
    focused = render(specimen, 0.0, optics).astype(np.float32)
    restored, epsilon = best_physics_deconvolution(defocused, focused, optics, PIXEL_UM, z_um)
    mse_in = float(np.mean((defocused - focused) ** 2))
    mse_out = float(np.mean((restored - focused) ** 2))
    assert ssim(focused, restored) > ssim(focused, defocused) + 0.4
    assert mse_out < 0.5 * mse_in
    # The noise level picked by the search is one that a fixed default would also do well with.
    fixed = physics_deconvolve(defocused, optics, PIXEL_UM, z_um, epsilon=epsilon)
    np.testing.assert_allclose(fixed, restored)


def test_transfer_functions_match_the_simulator_for_a_weak_object() -> None:
    """The linear model is the simulator's own image formation to first order."""
    optics = OBJECTIVES["10x"]
    specimen = _weak_phase_object(seed=2, rms_rad=0.01)
    image = render(specimen, -10.0, optics)
    transfer = weak_object_transfer(optics, (SIDE, SIDE), PIXEL_UM, -10.0)
    phase = np.angle(specimen.transmission)
    predicted = 1.0 + np.real(np.fft.ifft2(transfer.phase * np.fft.fft2(phase)))
    residual = np.std(image - predicted) / np.std(image - 1.0)
    assert residual < 0.1
