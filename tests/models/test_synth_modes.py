"""Physics of the broadened simulator: the imaging modes and specimen layouts behave as the
real ones do. Small grids (≤ 256 px), each test well under a second or two."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from refocusd.models.synth.camera import dust_field, illumination_field
from refocusd.models.synth.domains import MODES, draw_optics, optics_from_record, optics_record, specimen_sampling_um
from refocusd.models.synth.optics import OBJECTIVES, Optics, render
from refocusd.models.synth.specimen import LAYOUTS, Specimen, random_specimen

PC = OBJECTIVES["10x"]
MODE_OPTICS = {
    "positive_phase": PC,
    "negative_phase": dataclasses.replace(PC, phase_ring_shift_rad=-math.pi / 2),
    "brightfield": dataclasses.replace(PC, modality="brightfield"),
}


def _radius_um(n: int, dx: float) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return np.hypot(yy - n / 2, xx - n / 2) * dx


def _weak_phase_bump(n: int = 128, dx: float = 0.25) -> tuple[Specimen, np.ndarray]:
    r = _radius_um(n, dx)
    return Specimen(np.exp(1j * 0.2 * np.exp(-(r**2) / (2 * 2.5**2))), dx), r


@pytest.mark.parametrize("mode", list(MODE_OPTICS))
def test_defocus_sign_of_a_pure_phase_object_is_observable(mode: str) -> None:
    """Above and below focus look different, and the difference keeps its sign and grows
    with |z|: a phase-delaying object brightens past focus (z > 0) relative to before it,
    in bright field and in both phase-contrast polarities."""
    spec, r = _weak_phase_bump()
    optics = MODE_OPTICS[mode]
    centre = r < 1.5
    diffs = []
    for z in (2.0, 5.0, 10.0):
        above, below = render(spec, z, optics), render(spec, -z, optics)
        diffs.append(float(above[centre].mean() - below[centre].mean()))
        contrast = max(float(np.abs(above - 1).max()), float(np.abs(below - 1).max()))
        if z == 10.0:
            assert float(np.abs(above - below).max()) > 0.15 * contrast
    assert all(d > 0 for d in diffs), diffs
    assert diffs[0] < diffs[1] < diffs[2], diffs


def test_negative_phase_contrast_shows_the_object_bright_with_a_dark_halo_and_apodisation_damps_halos() -> None:
    n, dx = 128, 0.25
    r = _radius_um(n, dx)
    spec = Specimen(np.exp(1j * 0.3 * (r < 3.0)), dx)
    positive = render(spec, 0.0, MODE_OPTICS["positive_phase"])
    negative = render(spec, 0.0, MODE_OPTICS["negative_phase"])
    ring = (r > 3.0) & (r < 6.0)
    assert positive[r < 2].mean() < 0.8 and negative[r < 2].mean() > 1.2  # dark vs bright object
    assert positive[ring].max() > 1.15 and negative[ring].min() < 0.85  # bright vs dark halo
    apodised = render(spec, 0.0, dataclasses.replace(PC, phase_ring_apodization_transmission=0.3,
                                                      phase_ring_apodization_width_na=0.03))
    assert apodised[ring].max() - 1.0 < 0.9 * (positive[ring].max() - 1.0)
    for image in (positive, negative, apodised):
        assert float(image[r > 20].mean()) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("modality", ["dic", "oblique"])
def test_dic_and_oblique_light_show_a_phase_object_in_relief_at_focus(modality: str) -> None:
    """Shaded relief: one side of a phase bump bright, the other dark (antisymmetric along the
    shear or the illumination tilt), where bright field shows almost nothing at focus."""
    spec, r = _weak_phase_bump()
    optics = dataclasses.replace(PC, modality=modality, brightfield_condenser_na=0.05, oblique_offset_na=0.25,
                                 oblique_angle_rad=0.0, dic_shear_um=0.4, dic_bias_rad=0.6, dic_angle_rad=0.0)
    image = render(spec, 0.0, optics)
    n, dx = image.shape[0], 0.25
    row = image[n // 2] - 1.0
    d = int(round(2.5 / dx))
    left, right = float(row[n // 2 - d]), float(row[n // 2 + d])
    assert abs(left) > 0.02 and abs(right) > 0.02
    assert left * right < 0  # opposite shading on the two sides
    assert abs(left + right) < 0.5 * abs(left - right)
    column = image[:, n // 2] - 1.0  # across the shear: symmetric
    assert abs(float(column[n // 2 - d] - column[n // 2 + d])) < 0.2 * abs(left - right)
    bright = render(spec, 0.0, MODE_OPTICS["brightfield"])
    assert float(np.abs(bright - 1).max()) < 0.3 * float(np.abs(image - 1).max())


def test_fluorescence_blur_is_symmetric_in_z_and_keeps_the_emitted_light() -> None:
    n, dx = 128, 0.25
    r = _radius_um(n, dx)
    emission = np.exp(-(r**2) / 2.0).astype(np.float32)
    spec = Specimen(np.ones((n, n), np.complex64), dx, emission=emission)
    optics = Optics(na=0.3, modality="fluorescence", emission_wavelength_um=0.52)
    peaks = []
    for z in (0.0, 3.0, 6.0, 12.0):
        above, below = render(spec, z, optics), render(spec, -z, optics)
        np.testing.assert_allclose(above, below, atol=1e-5 * float(above.max()))
        assert float(above.sum()) == pytest.approx(float(emission.sum()), rel=1e-4)
        assert float(above.min()) > -1e-4 * float(above.max())  # an intensity PSF: no negative light
        peaks.append(float(above.max()))
    assert all(b < a for a, b in zip(peaks, peaks[1:])), peaks  # the blur grows with |z|
    with pytest.raises(ValueError, match="emission"):
        render(Specimen(np.ones((32, 32), np.complex64), dx), 0.0, optics)


def test_layouts_sparse_is_mostly_background_and_empty_has_no_cells() -> None:
    def covered(layout: str, seed: int) -> tuple[float, int]:
        spec = random_specimen((192, 192), np.random.default_rng(seed), pixel_size_um=0.8, layout=layout,  # type: ignore[arg-type]
                               substrate="tcps")
        image = render(spec, 0.0, PC)
        return float((np.abs(image - 1.0) > 0.15).mean()), spec.n_cells

    for seed in (1, 2):
        sparse, n_sparse = covered("sparse", seed)
        monolayer, n_mono = covered("monolayer", seed)
        empty, n_empty = covered("empty", seed)
        assert sparse < 0.15 and n_sparse >= 1
        assert monolayer > 2 * sparse and n_mono > 10 * n_sparse
        assert n_empty == 0 and empty < 0.05
    for layout in LAYOUTS:  # every layout renders a passive object with an emission map
        spec = random_specimen((64, 64), np.random.default_rng(0), pixel_size_um=1.0, layout=layout)
        assert spec.layout == layout and spec.emission is not None and spec.emission.min() >= 0
        assert float(np.abs(spec.transmission).max()) <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="layout"):
        random_specimen((64, 64), np.random.default_rng(0), pixel_size_um=1.0, layout="forest")  # type: ignore[arg-type]


def test_pixel_size_scales_features() -> None:
    """One physical object on one field, sampled at 0.5 and 1.0 µm: its footprint covers 4×
    the pixels at the finer sampling, and the two images agree where they meet."""
    field_um, radius = 64.0, 4.0
    fine_n, coarse_n = 128, 64
    spec = Specimen(np.exp(1j * 0.4 * (_radius_um(256, field_um / 256) < radius)), field_um / 256)
    fine = render(spec, 0.0, PC, out_shape=(fine_n, fine_n))
    coarse = render(spec, 0.0, PC, out_shape=(coarse_n, coarse_n))
    dark_fine, dark_coarse = int((fine < 0.8).sum()), int((coarse < 0.8).sum())
    assert dark_coarse > 5
    assert dark_fine / dark_coarse == pytest.approx(4.0, rel=0.25)
    np.testing.assert_allclose(fine[::2, ::2], coarse, atol=0.08)


def test_depth_of_field_follows_wavelength_na_and_pixel_size() -> None:
    optics = Optics(na=0.3, wavelength_um=0.55)
    assert optics.depth_of_field_total_um(0.37) == pytest.approx(0.55 / 0.09 + 0.37 / 0.3)
    wider = Optics(na=0.6, wavelength_um=0.55, condenser_annulus_na=(0.2, 0.3))
    assert wider.depth_of_field_total_um(0.37) < optics.depth_of_field_total_um(0.37) / 2
    assert optics.depth_of_field_total_um(1.0) > optics.depth_of_field_total_um(0.1)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_draws_valid_optics_and_a_sampling_that_holds_its_band(mode: str) -> None:
    rng = np.random.default_rng(3)
    for na in (0.1, 0.3, 0.75):
        optics = draw_optics(mode, 10.0, na, rng, 100.0)
        record = json.loads(json.dumps(optics_record(optics)))  # as the manifest stores it
        assert optics_from_record(record) == optics and record["modality"] == optics.modality
        dx = specimen_sampling_um(optics)
        lam = optics.emission_wavelength_um or optics.wavelength_um
        assert 1.0 / (2.0 * dx) > (2.0 * na if mode == "fluorescence" else na) / lam
        spec = random_specimen((32, 32), rng, pixel_size_um=dx, wavelength_um=optics.wavelength_um)
        image = render(spec, 3.0, optics, out_shape=(48, 48))
        assert image.shape == (48, 48) and np.isfinite(image).all()


def test_dust_and_strong_illumination_gradients_stay_physical() -> None:
    dust = dust_field((128, 128), np.random.default_rng(2), mean_count=6.0)
    assert float(dust.max()) <= 1.0 + 1e-6 and 0.7 < float(dust.min()) < 1.0
    np.testing.assert_array_equal(dust, dust_field((128, 128), np.random.default_rng(2), mean_count=6.0))
    assert float(dust_field((64, 64), np.random.default_rng(2), mean_count=0.0).min()) == 1.0
    lamp = illumination_field((128, 160), np.random.default_rng(5), strength=3.0)
    assert float(lamp.min()) > 0.0 and float(lamp.mean()) == pytest.approx(1.0, abs=1e-4)
    assert float(lamp.max() - lamp.min()) > 0.1


def test_oblique_light_partly_outside_the_pupil_adds_dark_field() -> None:
    spec, _ = _weak_phase_bump(64, 0.5)
    optics = Optics(na=0.3, modality="oblique", brightfield_condenser_na=0.1, oblique_offset_na=0.28)
    image = render(spec, 2.0, optics)
    assert np.isfinite(image).all()
    assert float(np.median(image)) == pytest.approx(1.0, abs=0.05)  # normalised by the direct light


def test_pixel_integration_is_the_detector_mtf() -> None:
    spec, r = _weak_phase_bump(128, 0.25)
    for optics in (PC, Optics(na=0.3, modality="fluorescence")):
        if optics.modality == "fluorescence":
            spec = Specimen(spec.transmission, 0.25, emission=np.exp(-(r**2) / 2.0).astype(np.float32))
        point = render(spec, 0.0, optics, out_shape=(64, 64))
        boxed = render(spec, 0.0, optics, out_shape=(64, 64), pixel_integration=True)
        assert float(boxed.mean()) == pytest.approx(float(point.mean()), rel=1e-4)  # light is kept
        assert 0.5 * float(point.std()) < float(boxed.std()) < float(point.std())  # fine detail softened
    clear = Specimen(np.ones((64, 64), np.complex64), 0.5)
    np.testing.assert_allclose(render(clear, 5.0, PC, out_shape=(32, 32), pixel_integration=True), 1.0, atol=1e-4)
