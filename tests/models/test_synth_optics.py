"""Physics checks of the simulator: defocus blur, contrast inversion, energy, phase contrast,
partial coherence, camera noise. Small grids (128–256 px) keep each test well under a second."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from refocusd.models.synth.camera import Camera, acquire_frame, illumination_field, specimen_grid
from refocusd.models.synth.optics import OBJECTIVES, Optics, propagate, render
from refocusd.models.synth.specimen import Specimen, random_specimen

PAPER_PX_10X = 595.0 / 1608.0  # µm per camera pixel at 10x in the paper


def _radius_um(n: int, dx: float) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return np.hypot(yy - n / 2, xx - n / 2) * dx


def _gradient_energy(image: np.ndarray) -> float:
    gy, gx = np.gradient(image.astype(np.float64))
    return float(np.mean(gy**2 + gx**2))


def test_blur_grows_with_defocus() -> None:
    """Gradient energy falls with |z| on both sides of focus.

    Per specimen it falls strictly over 0–20 µm. Beyond that a phase object's contrast can
    come back inverted (the annulus' ring-shaped defocus PSF: a J0-like transfer), as in real
    phase-contrast microscopes, so 40 µm is checked on the mean over specimens and signs and
    against the in-focus value.
    """
    optics = OBJECTIVES["10x"]
    zs = (0.0, 5.0, 10.0, 20.0, 40.0)
    curves = []
    for seed in (11, 12, 13):
        spec = random_specimen(
            (256, 256), np.random.default_rng(seed), pixel_size_um=PAPER_PX_10X, density=0.5, substrate="tcps"
        )
        assert spec.n_cells > 0
        for sign in (1.0, -1.0):
            fm = np.array([_gradient_energy(render(spec, sign * z, optics)) for z in zs])
            fm /= fm[0]
            assert np.all(np.diff(fm[:4]) < 0), (seed, sign, fm)
            assert fm[4] < 0.3, (seed, sign, fm)
            curves.append(fm)
    mean = np.mean(curves, axis=0)
    assert np.all(np.diff(mean) < 0), mean
    assert mean[-1] < 0.2


@pytest.mark.parametrize("objective", ["10x", "20x"])
def test_pure_phase_object_inverts_contrast_across_focus_in_brightfield(objective: str) -> None:
    n, dx = 128, 0.25
    r = _radius_um(n, dx)
    phase = 0.2 * np.exp(-(r**2) / (2 * 2.5**2))  # weak phase bump, no absorption at all
    spec = Specimen(np.exp(1j * phase), dx)
    optics = dataclasses.replace(OBJECTIVES[objective], modality="brightfield")
    centre = r < 1.5
    images = {z: render(spec, z, optics) for z in (-5.0, 0.0, 5.0)}
    below, focus, above = (float(images[z][centre].mean() - 1.0) for z in (-5.0, 0.0, 5.0))
    assert above > 0.005 and below < -0.005, (below, above)  # opposite signs: inverted contrast
    assert abs(above + below) < 0.2 * abs(above - below)  # nearly symmetric about focus
    swing = min(np.abs(images[5.0] - 1).max(), np.abs(images[-5.0] - 1).max())
    assert np.abs(focus) < 0.05 * swing and np.abs(images[0.0] - 1).max() < 0.1 * swing


def test_angular_spectrum_propagation_conserves_energy() -> None:
    rng = np.random.default_rng(3)
    n, dx, lam = 256, 0.2, 0.55  # grid Nyquist 2.5/µm > 1/λ: evanescent waves exist here
    field = (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))).astype(np.complex64)
    f = np.fft.fftfreq(n, d=dx)
    propagating = (f[:, None] ** 2 + f[None, :] ** 2) < 1 / lam**2
    spectrum = np.fft.fft2(field)
    energy_propagating = float(np.sum(np.abs(spectrum[propagating]) ** 2) / n**2)
    assert energy_propagating < 0.8 * float(np.sum(np.abs(field) ** 2))  # the cut matters

    for z in (7.3, -25.0, 60.0):
        out = propagate(field, z, wavelength_um=lam, pixel_size_um=dx)
        energy = float(np.sum(np.abs(out.astype(np.complex128)) ** 2))
        assert energy == pytest.approx(energy_propagating, rel=1e-4)

    # Band-limited to propagating waves, the field is conserved exactly and comes back.
    band = np.fft.ifft2(np.where(propagating, spectrum, 0)).astype(np.complex64)
    there = propagate(band, 40.0, wavelength_um=lam, pixel_size_um=dx)
    back = propagate(there, -40.0, wavelength_um=lam, pixel_size_um=dx)
    e0 = float(np.sum(np.abs(band.astype(np.complex128)) ** 2))
    assert float(np.sum(np.abs(there.astype(np.complex128)) ** 2)) == pytest.approx(e0, rel=1e-4)
    assert np.abs(back - band).max() < 1e-4 * np.abs(band).max()
    assert np.abs(there - band).max() > 0.1 * np.abs(band).max()  # it did propagate


@pytest.mark.parametrize("objective", ["10x", "20x"])
def test_phase_contrast_shows_a_phase_object_dark_with_a_bright_halo(objective: str) -> None:
    n, dx = 128, 0.25
    r = _radius_um(n, dx)
    spec = Specimen(np.exp(1j * 0.3 * (r < 3.0)), dx)  # small pure phase disc (a nucleus)
    optics = OBJECTIVES[objective]
    image = render(spec, 0.0, optics)
    inside = float(image[r < 2.0].mean())
    halo = float(image[(r > 3.0) & (r < 6.0)].max())
    assert inside < 0.75  # positive phase contrast: phase-delaying objects are dark
    assert halo > 1.15  # ... surrounded by the bright halo of real phase contrast
    assert float(image[r > 20].mean()) == pytest.approx(1.0, abs=0.02)
    # The same object in bright field at focus is nearly invisible.
    bright = render(spec, 0.0, dataclasses.replace(optics, modality="brightfield"))
    assert np.abs(bright[r < 2.0].mean() - 1.0) < 0.25 * (1.0 - inside)


def _rebound(image: np.ndarray, radius_um: float, dx: float) -> float:
    """Mean, over rays leaving a disc edge, of the rises after the halo peak (ringing)."""
    n = image.shape[0]
    rr = np.arange(radius_um, radius_um + 15.0, 0.1)
    total = []
    for ang in np.linspace(0, 2 * np.pi, 32, endpoint=False):
        coords = [n / 2 + rr * np.sin(ang) / dx, n / 2 + rr * np.cos(ang) / dx]
        p = ndimage.map_coordinates(image, coords, order=3)
        total.append(np.clip(np.diff(p[int(np.argmax(p)) :]), 0, None).sum())
    return float(np.mean(total))


def test_annular_illumination_rings_less_than_a_coherent_plane_wave() -> None:
    n, dx, radius = 256, 0.25, 8.0
    spec = Specimen(np.exp(1j * 0.5 * (_radius_um(n, dx) < radius)), dx)  # sharp-edged disc
    annulus = OBJECTIVES["10x"]
    tilted = dataclasses.replace(annulus, n_illumination_directions=1)  # one point of the annulus
    on_axis = dataclasses.replace(annulus, n_illumination_directions=1, condenser_annulus_na=(0.0, 0.0))
    partial = _rebound(render(spec, 0.0, annulus), radius, dx)
    for coherent_optics in (tilted, on_axis):
        coherent = _rebound(render(spec, 0.0, coherent_optics), radius, dx)
        assert coherent > 0.05  # the coherent image rings ...
        assert partial < 0.25 * coherent  # ... the partially coherent one hardly does


@pytest.mark.parametrize("modality", ["phase_contrast", "brightfield"])
def test_clear_field_renders_background_one_at_any_defocus_and_output_size(modality: str) -> None:
    spec = Specimen(np.ones((64, 96), dtype=np.complex64), 0.5)
    optics = dataclasses.replace(OBJECTIVES["20x"], modality=modality)
    for z in (0.0, 13.0, -40.0):
        for shape in (None, (128, 192), (40, 60)):
            image = render(spec, z, optics, out_shape=shape)
            assert image.dtype == np.float32
            assert image.shape == (shape or (64, 96))
            np.testing.assert_allclose(image, 1.0, atol=1e-4)


def test_render_resamples_onto_a_finer_camera_grid_without_changing_the_image() -> None:
    spec = random_specimen((128, 128), np.random.default_rng(5), pixel_size_um=0.8, substrate="hydrogel")
    optics = OBJECTIVES["10x"]
    coarse = render(spec, 4.0, optics)
    fine = render(spec, 4.0, optics, out_shape=(256, 256))
    assert fine.shape == (256, 256)
    # Band-limited interpolation: every other fine pixel is close to the coarse one.
    err = np.abs(fine[::2, ::2] - coarse)
    assert float(err.mean()) < 0.02 * float(coarse.std())


def test_optics_validation_and_objectives() -> None:
    assert OBJECTIVES["10x"].na == 0.30 and OBJECTIVES["10x"].magnification == 10
    assert OBJECTIVES["20x"].na == 0.45 and OBJECTIVES["20x"].field_of_view_um == 300
    assert OBJECTIVES["20x"].depth_of_field_um < OBJECTIVES["10x"].depth_of_field_um
    for bad in ({"na": 1.2}, {"condenser_annulus_na": (0.2, 0.35)}, {"n_illumination_directions": 0}):
        with pytest.raises(ValueError, match="invalid Optics"):
            Optics(**bad)


def test_random_specimen_is_seedable_and_physical() -> None:
    a = random_specimen((128, 160), np.random.default_rng(9), pixel_size_um=0.4, density=0.4)
    b = random_specimen((128, 160), np.random.default_rng(9), pixel_size_um=0.4, density=0.4)
    c = random_specimen((128, 160), np.random.default_rng(10), pixel_size_um=0.4, density=0.4)
    assert a.transmission.dtype == np.complex64 and a.shape == (128, 160)
    np.testing.assert_array_equal(a.transmission, b.transmission)
    assert not np.array_equal(a.transmission, c.transmission)
    amplitude = np.abs(a.transmission)
    assert amplitude.max() <= 1.0 + 1e-6  # passive: absorbs, never amplifies
    assert amplitude.min() > 0.3  # "slight" absorption: cells are phase objects
    assert not a.transmission.flags.writeable
    with pytest.raises(ValueError, match="substrate"):
        random_specimen((64, 64), np.random.default_rng(0), pixel_size_um=0.4, substrate="glass")  # type: ignore[arg-type]


def test_camera_dtype_range_and_offset() -> None:
    rng = np.random.default_rng(0)
    intensity = np.linspace(0.0, 5.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    for bits, dtype in ((8, np.uint8), (12, np.uint16), (16, np.uint16)):
        camera = Camera(bit_depth=bits)
        frame = camera.expose(intensity, rng)
        assert frame.dtype == dtype
        assert int(frame.max()) == camera.max_adu  # 5× background saturates
        assert int(frame.max()) <= (1 << bits) - 1
        dark = camera.expose(np.zeros((64, 64), np.float32), rng)
        assert abs(float(dark.mean()) - camera.offset) < 1.0
    with pytest.raises(ValueError):
        Camera(bit_depth=10)  # type: ignore[arg-type]


def test_camera_noise_grows_with_signal() -> None:
    rng = np.random.default_rng(1)
    camera = Camera(bit_depth=16, full_well_e=20_000, read_noise_e=2.0)
    variances, means = [], []
    for level in (0.1, 0.5, 1.0, 2.0):
        frame = camera.expose(np.full((128, 128), level, np.float32), rng).astype(np.float64)
        variances.append(frame.var())
        means.append(frame.mean() - camera.offset)
    assert all(b > a for a, b in zip(variances, variances[1:]))
    # Shot noise: variance in ADU² ≈ mean ADU / gain (Poisson in electrons).
    expected = np.array(means) / camera.gain_e_per_adu
    np.testing.assert_allclose(variances, expected, rtol=0.15)


def test_illumination_field_is_smooth_and_centred_on_one() -> None:
    field = illumination_field((256, 320), np.random.default_rng(4))
    assert field.shape == (256, 320) and field.dtype == np.float32
    assert float(field.mean()) == pytest.approx(1.0, abs=1e-4)
    assert 0.005 < float(field.std()) < 0.15
    assert np.abs(np.diff(field, axis=1)).max() < 0.01  # no pixel-scale structure
    np.testing.assert_array_equal(field, illumination_field((256, 320), np.random.default_rng(4)))


def test_acquire_frame_renders_onto_the_camera_grid() -> None:
    optics = dataclasses.replace(OBJECTIVES["20x"], field_of_view_um=100.0)  # small field: fast
    grid, pixel = specimen_grid(optics, (256, 256), max_side=128)
    assert grid == (128, 128) and pixel == pytest.approx(100.0 / 128)
    spec = random_specimen(grid, np.random.default_rng(2), pixel_size_um=pixel, density=0.6)
    camera = Camera(bit_depth=8)
    sharp = acquire_frame(spec, 0.0, optics, camera, np.random.default_rng(3), (256, 256))
    blurred = acquire_frame(spec, 25.0, optics, camera, np.random.default_rng(3), (256, 256))
    assert sharp.shape == (256, 256) and sharp.dtype == np.uint8
    background = camera.background_fill * camera.max_adu
    assert abs(float(np.median(sharp)) - background) < 0.15 * background
    assert _gradient_energy(sharp) > _gradient_energy(blurred)
    with pytest.raises(ValueError, match="illumination shape"):
        acquire_frame(spec, 0.0, optics, camera, np.random.default_rng(3), (256, 256),
                      illumination=np.ones((10, 10), np.float32))
