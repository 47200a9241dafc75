"""The inference runtime on freshly initialised models saved to a temporary folder
(not the shipped weights): verdicts, batching, frame formats, reconstruction shapes."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from structlog.testing import capture_logs

from refocusd.models.api import FocusClassifier, FrameReconstructor, ModelError
from refocusd.models.card import ModelCard, classifier_input_spec, reconstructor_input_spec
from refocusd.models.preprocessing import PixelFormatError
from refocusd.models.resunet import build_resunet
from refocusd.models.runtime import load_classifier, load_reconstructor, select_device
from refocusd.models.sdcnn import build_sdcnn
from refocusd.models.store import save_model

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cls") / "sdcnn"
    card = ModelCard(name="rt-sdcnn", version="0.1", kind="classifier", architecture="sdcnn",
                     input=classifier_input_spec())
    tf.keras.utils.set_random_seed(3)  # the same weights whichever tests ran before in this process
    save_model(build_sdcnn(), folder, card)
    return folder


@pytest.fixture(scope="module")
def classifier(classifier_folder: Path):
    return load_classifier(classifier_folder, device="cpu")


@pytest.fixture(scope="module")
def reconstructor_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Narrow (base 2) but the real topology, fully convolutional like trained models."""
    folder = tmp_path_factory.mktemp("rec") / "resunet"
    card = ModelCard(name="rt-resunet", version="0.1", kind="reconstructor",
                     architecture="resunet", params={"base_filters": 2},
                     input=reconstructor_input_spec(None))
    save_model(build_resunet(2, None), folder, card)
    return folder


@pytest.fixture(scope="module")
def reconstructor(reconstructor_folder: Path):
    return load_reconstructor(reconstructor_folder, device="cpu")


def test_classifier_implements_the_protocol_and_reports_its_model(classifier) -> None:
    assert isinstance(classifier, FocusClassifier)
    card = classifier.card
    assert classifier.model_id == f"rt-sdcnn@0.1:{card.weights_sha256[:12]}"
    verdict = classifier.classify(np.zeros((300, 400), np.uint16))
    assert verdict.model_id == classifier.model_id
    assert 0.0 <= verdict.p_focused <= 1.0 and verdict.latency_s > 0
    assert verdict.label == ("focused" if verdict.p_focused >= 0.5 else "defocused")


def test_every_frame_format_gives_the_same_answer_for_the_same_image(classifier) -> None:
    rng = np.random.default_rng(0)
    mono8 = rng.integers(0, 255, (700, 900), dtype=np.uint8)
    forms = [
        mono8,
        mono8[..., None],
        np.repeat(mono8[..., None], 3, axis=2),
        mono8.astype(np.uint16) * 257,  # 16-bit: standardisation removes the scale
        mono8.astype(np.float32) / 255.0,
        mono8.astype(np.int32),
        mono8.astype(">u2"),  # big-endian, as some TIFFs are
    ]
    ps = [classifier.classify(f).p_focused for f in forms]
    np.testing.assert_allclose(ps, ps[0], atol=1e-4)


def test_batch_equals_one_by_one_across_sizes_and_dtypes(classifier) -> None:
    rng = np.random.default_rng(1)
    frames = [
        rng.integers(0, 65535, (2048, 2048), dtype=np.uint16),
        rng.integers(0, 255, (512, 512, 3), dtype=np.uint8),
        rng.normal(size=(1000, 1300)).astype(np.float32),
        rng.integers(0, 255, (90, 60), dtype=np.uint8),
    ] * 10  # 40 frames: more than one internal batch
    batch = classifier.classify_batch(frames)
    single = [classifier.classify(f) for f in frames[:4]]
    assert len(batch) == 40
    np.testing.assert_allclose([v.p_focused for v in batch[:4]],
                               [v.p_focused for v in single], atol=1e-5)
    np.testing.assert_allclose([v.p_focused for v in batch[:4]],
                               [v.p_focused for v in batch[-4:]], atol=1e-6)
    assert classifier.classify_batch([]) == []


def test_threshold_sets_the_label(classifier_folder: Path, classifier) -> None:
    frame = np.random.default_rng(2).integers(0, 255, (200, 200), dtype=np.uint8)
    p = classifier.classify(frame).p_focused
    assert 1e-3 < p < 1 - 1e-3, f"p_focused {p}: a saturated score leaves no threshold on one side"
    low = load_classifier(classifier_folder, device="cpu", threshold=p / 2)
    high = load_classifier(classifier_folder, device="cpu", threshold=(1 + p) / 2)
    assert low.classify(frame).label == "focused"
    assert high.classify(frame).label == "defocused"
    with pytest.raises(ValueError, match="threshold"):
        load_classifier(classifier_folder, device="cpu", threshold=1.5)


def test_bad_frames_raise_pixel_format_errors(classifier) -> None:
    with pytest.raises(PixelFormatError):
        classifier.classify(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(PixelFormatError, match="NaN"):
        classifier.classify(np.full((10, 10), np.nan, np.float32))


def test_wrong_kind_of_model_is_refused(classifier_folder: Path, reconstructor_folder: Path) -> None:
    with pytest.raises(ModelError, match="not a reconstructor"):
        load_reconstructor(classifier_folder, device="cpu")
    with pytest.raises(ModelError, match="not a classifier"):
        load_classifier(reconstructor_folder, device="cpu")


def test_device_selection_is_logged_with_its_reason() -> None:
    with capture_logs() as logs:
        cpu = select_device("cpu")
        auto = select_device("auto")
    assert cpu.kind == "cpu" and cpu.reason == "cpu requested" and cpu.tf_device == "/CPU:0"
    assert auto.kind == ("gpu" if HAS_GPU else "cpu")
    events = [e for e in logs if e["event"] == "models.device_selected"]
    assert [e["device"] for e in events] == ["cpu", auto.kind]
    assert all(e["reason"] for e in events)
    with pytest.raises(ModelError, match="device must be"):
        select_device("tpu")  # type: ignore[arg-type]


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU message")
def test_gpu_requested_without_a_gpu_is_a_clear_model_error() -> None:
    with pytest.raises(ModelError, match="no GPU"):
        select_device("gpu")


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")
def test_gpu_mixed_precision_agrees_with_float32(classifier_folder: Path, classifier) -> None:
    mixed = load_classifier(classifier_folder, device="gpu", mixed_precision=True)
    frame = np.random.default_rng(3).integers(0, 255, (1024, 1024), dtype=np.uint8)
    assert mixed.device.kind == "gpu"
    assert mixed.classify(frame).p_focused == pytest.approx(
        classifier.classify(frame).p_focused, abs=2e-2)


def test_mixed_precision_on_cpu_is_ignored_with_a_warning(classifier_folder: Path) -> None:
    with capture_logs() as logs:
        clf = load_classifier(classifier_folder, device="cpu", mixed_precision=True)
    assert any(e["event"] == "models.mixed_precision_ignored" for e in logs)
    assert 0 <= clf.classify(np.zeros((50, 50), np.uint8)).p_focused <= 1


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((512, 512), np.uint8), ((1000, 1300, 3), np.uint16), ((300, 200, 1), np.uint16),
     ((400, 450, 3), np.float32)],
)
def test_reconstruction_keeps_shape_channels_and_dtype(reconstructor, shape, dtype) -> None:
    rng = np.random.default_rng(4)
    if np.dtype(dtype).kind == "f":
        frame = rng.uniform(0, 1, shape).astype(dtype)
    else:
        frame = rng.integers(0, np.iinfo(dtype).max // 16, shape).astype(dtype)
    out = reconstructor.reconstruct(frame)
    assert out.shape == frame.shape and out.dtype == frame.dtype
    assert np.isfinite(out.astype(np.float64)).all()


def test_reconstructor_protocol_and_provenance(reconstructor, reconstructor_folder: Path) -> None:
    assert isinstance(reconstructor, FrameReconstructor)
    prov = reconstructor.provenance
    card = reconstructor.card
    assert prov["weights_sha256"] == card.weights_sha256
    assert prov["name"] == "rt-resunet" and prov["version"] == "0.1"
    assert prov["architecture"] == "resunet" and prov["base_filters"] == 2
    assert prov["tile"] == "auto" and prov["overlap"] == reconstructor.overlap
    assert str(prov["device"]).startswith("cpu:")


def test_fully_convolutional_models_pick_the_cheapest_tile(reconstructor) -> None:
    assert reconstructor.tile_for(388, 388) == 388  # the paper's tile for small frames
    assert reconstructor.tile_for(200, 120) == 388
    assert reconstructor.tile_for(1604, 1604) == 836  # 4 windows of 1020 instead of 25 of 572
    assert reconstructor.batch_size_for(836) == 1  # CPU
    frame = np.random.default_rng(6).integers(0, 255, (900, 1000), dtype=np.uint8)
    assert reconstructor.reconstruct(frame).shape == (900, 1000)


def test_tiled_reconstruction_equals_the_network_on_one_padded_tile(reconstructor) -> None:
    """A 388 px frame is exactly one tile: the runtime must equal the network applied to
    the frame mirrored by 92 px, as the paper does."""
    frame = np.random.default_rng(5).integers(0, 255, (388, 388, 3), dtype=np.uint8)
    padded = np.pad(frame, ((92, 92), (92, 92), (0, 0)), mode="symmetric").astype(np.float32)
    direct = reconstructor._model(padded[None], training=False).numpy()[0]
    expected = np.clip(np.rint(direct), 0, 255).astype(np.int16)
    got = reconstructor.reconstruct(frame).astype(np.int16)
    # Graph and eager kernels may round differently in the last float bit: allow +-1 grey.
    assert np.abs(got - expected).max() <= 1
    assert np.mean(got == expected) > 0.999


def test_fixed_size_paper_model_uses_its_own_tile(tmp_path: Path) -> None:
    card = ModelCard(name="rt-fixed", version="0", kind="reconstructor", architecture="resunet",
                     params={"base_filters": 2}, input=reconstructor_input_spec(572))
    save_model(build_resunet(2, 572), tmp_path / "m", card)
    rec = load_reconstructor(tmp_path / "m", device="cpu", tile_overlap=32)
    assert rec.tile == 388 and rec.overlap == 32
    assert rec.tile_for(1604, 1604) == 388 and rec.provenance["tile"] == 388
    out = rec.reconstruct(np.zeros((600, 500), np.uint8))
    assert out.shape == (600, 500)
    with pytest.raises(ModelError, match="built for 572"):
        load_reconstructor(tmp_path / "m", device="cpu", tile=196)


def test_mixed_precision_rebuild_keeps_the_weights(classifier_folder: Path,
                                                   reconstructor_folder: Path) -> None:
    """The GPU-only mixed-precision path, run on whatever device is here: float16 compute
    must give (nearly) the float32 answers because the weights carried over."""
    from refocusd.models import store
    from refocusd.models.runtime import DeviceInfo, _mixed_copy

    gpu = DeviceInfo("gpu", "test", "calling the rebuild directly")
    rng = np.random.default_rng(7)
    for folder, x in (
        (classifier_folder, rng.normal(size=(1, 134, 134, 3)).astype("float32")),
        (reconstructor_folder, rng.uniform(0, 255, (1, 252, 252, 3)).astype("float32")),
    ):
        card = store.load_card(folder)
        model = store.load_keras(folder, card)
        mixed = _mixed_copy(model, card, gpu)
        assert mixed is not model
        assert any(layer.dtype_policy.name == "mixed_float16" for layer in mixed.layers)
        want, got = model(x).numpy(), mixed(x).numpy()
        assert got.dtype == np.float32  # the output layers stay float32
        scale = max(1.0, float(np.abs(want).max()))
        assert np.abs(got - want).max() <= 0.02 * scale
