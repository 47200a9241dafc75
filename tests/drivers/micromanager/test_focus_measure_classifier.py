"""The focus-measure classifier used for samples the SDCNN was not trained on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from refocusd.models.focus_measure_classifier import (
    FocusMeasureCalibration,
    fit_threshold,
    is_focus_measure_spec,
    load_focus_measure_classifier,
)
from refocusd.models.focus_measures import gradient_energy
from refocusd.models import ModelError


def beads(seed: int, n: int, sigma: float, brightness: float = 1000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = np.zeros((256, 256))
    field[rng.integers(0, 256, n), rng.integers(0, 256, n)] = brightness
    return gaussian_filter(field, 1.0 + sigma) + 10.0


def test_gradient_energy_falls_with_blur_and_ignores_brightness_and_bead_count():
    sharp, blurred = gradient_energy(beads(0, 40, 0.0)), gradient_energy(beads(0, 40, 3.0))
    assert sharp > 2 * blurred
    assert gradient_energy(beads(0, 40, 0.0, brightness=50.0)) == pytest.approx(sharp, rel=0.05)
    assert gradient_energy(beads(1, 120, 0.0)) == pytest.approx(sharp, rel=0.15)


def test_fit_threshold_separable_and_overlapping():
    assert fit_threshold([0.8, 0.9], [0.2, 0.4]) == pytest.approx((0.6, 0.1))
    threshold, scale = fit_threshold([0.55, 0.8, 0.85, 0.9], [0.2, 0.6, 0.65])
    assert threshold == pytest.approx(0.725) and scale > 0  # one focused plane below: the fewest errors
    with pytest.raises(ModelError):
        fit_threshold([0.9], [])


def test_calibration_round_trip_and_classification(tmp_path):
    path = tmp_path / "beads.json"
    FocusMeasureCalibration("gradient_energy", threshold=0.5, scale=0.05, focused_within_um=1.5).save(path)
    assert is_focus_measure_spec(str(path)) and not is_focus_measure_spec("default")
    classifier = load_focus_measure_classifier(str(path))
    assert classifier.model_id == "focus-measure:gradient_energy@0.5"
    sharp, blurred = classifier.classify_batch([beads(0, 40, 0.0), beads(0, 40, 4.0)])
    assert (sharp.label, blurred.label) == ("focused", "defocused")
    assert sharp.p_focused > 0.9 > 0.1 > blurred.p_focused
    path.write_text('{"kind": "something else"}')
    with pytest.raises(ModelError, match="not a focus-measure calibration"):
        load_focus_measure_classifier(str(path))
