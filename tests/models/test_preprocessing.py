"""Preprocessing matches the paper's definition (TensorFlow's own ops, computed directly)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from refocusd.models.card import ModelCard, classifier_input_spec
from refocusd.models.preprocessing import (
    PixelFormatError,
    as_hwc,
    classifier_input,
    from_network_range,
    to_network_range,
)
from refocusd.models.runtime import load_classifier
from refocusd.models.sdcnn import build_sdcnn
from refocusd.models.store import save_model


def paper_preprocessing(frame: np.ndarray) -> np.ndarray:
    """What the authors did: tf.image.resize (bilinear) of the whole frame to 134x134, then
    tf.image.per_image_standardization; mono frames as three identical channels."""
    hwc = frame if frame.ndim == 3 else frame[..., None]
    if hwc.shape[2] == 1:
        hwc = np.repeat(hwc, 3, axis=2)
    x = tf.image.resize(tf.constant(hwc.astype(np.float32)), (134, 134), method="bilinear")
    return tf.image.per_image_standardization(x).numpy()


def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 65535, (2048, 2048), dtype=np.uint16),
        rng.integers(0, 255, (512, 700, 3), dtype=np.uint8),
        rng.normal(100, 20, (300, 211, 1)).astype(np.float32),
        rng.integers(0, 4095, (100, 90), dtype=np.int16),  # upsampled, non-native dtype path
    ]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory):
    folder: Path = tmp_path_factory.mktemp("cls")
    card = ModelCard(name="prep-test", version="0", kind="classifier", architecture="sdcnn",
                     input=classifier_input_spec())
    save_model(build_sdcnn(), folder, card)
    return load_classifier(folder, device="cpu")


@pytest.mark.parametrize("index", range(4))
def test_numpy_reference_equals_tensorflow(index: int) -> None:
    frame = frames()[index]
    # TF interpolates in float32 with its own operation order: ~1e-4 of a standard deviation.
    np.testing.assert_allclose(classifier_input(frame), paper_preprocessing(frame), atol=1e-3)


@pytest.mark.parametrize("index", range(4))
def test_runtime_preprocessing_equals_the_paper(classifier, index: int) -> None:
    frame = frames()[index]
    ours = classifier.preprocess(frame)
    assert ours.shape == (134, 134, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, paper_preprocessing(frame), atol=2e-4)
    # And what is classified is exactly that input run through the network.
    direct = float(classifier._model(ours[None], training=False).numpy()[0, 0])
    assert classifier.classify(frame).p_focused == pytest.approx(direct, abs=1e-5)


def test_standardisation_makes_bit_depth_irrelevant() -> None:
    rng = np.random.default_rng(1)
    eight = rng.integers(0, 255, (400, 400), dtype=np.uint8)
    sixteen = eight.astype(np.uint16) * 257
    np.testing.assert_allclose(classifier_input(eight), classifier_input(sixteen), atol=1e-5)


def test_uint8_round_trip_is_exact() -> None:
    frame = np.random.default_rng(2).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    net, imap = to_network_range(frame)
    assert net.shape == (64, 80, 3) and net.dtype == np.float32
    np.testing.assert_array_equal(net, frame.astype(np.float32))
    np.testing.assert_array_equal(from_network_range(net, imap), frame)


def test_uint16_uses_its_robust_range_and_maps_back() -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(200, 3800, (300, 400), dtype=np.uint16)  # a 12-bit camera
    frame[0, 0] = 65000  # a hot pixel must not squash the range
    net, imap = to_network_range(frame)
    assert net.shape == (300, 400, 3)
    assert np.percentile(net, 50) == pytest.approx(127.5, abs=10)
    assert np.percentile(net, 0.05) == pytest.approx(0, abs=1)
    assert np.percentile(net, 99.95) == pytest.approx(255, abs=1)
    back = from_network_range(net, imap)
    assert back.shape == frame.shape and back.dtype == np.uint16
    inner = frame < 60000
    assert np.abs(back.astype(int) - frame.astype(int))[inner].max() <= 1


def test_mono_output_is_the_channel_mean_in_the_input_form() -> None:
    frame = np.full((10, 12, 1), 100, np.uint8)
    _, imap = to_network_range(frame)
    out = np.zeros((10, 12, 3), np.float32)
    out[..., 0], out[..., 1], out[..., 2] = 90, 120, 300  # 300: clipped by the dtype
    back = from_network_range(out, imap)
    assert back.shape == (10, 12, 1) and back.dtype == np.uint8
    assert (back == 170).all()


def test_unit_floats_stay_in_the_unit_range() -> None:
    frame = np.random.default_rng(4).uniform(0, 1, (50, 50)).astype(np.float32)
    net, imap = to_network_range(frame)
    np.testing.assert_allclose(net[..., 0], frame * 255, rtol=1e-6)
    back = from_network_range(np.clip(net + 10, 0, 255), imap)
    assert back.dtype == np.float32 and back.max() <= 1.0


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((10, 10, 4), np.uint8), "shape"),
        (np.zeros((2, 10, 10, 3), np.uint8), "shape"),
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.zeros((4, 4), bool), "pixel type"),
    ],
)
def test_bad_frames_are_refused_clearly(pixels: np.ndarray, message: str) -> None:
    with pytest.raises(PixelFormatError, match=message):
        as_hwc(pixels)
