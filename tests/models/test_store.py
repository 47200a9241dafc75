"""Model folders: save/load round trip, hash verification, clear errors for broken models."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import numpy as np
import pytest

from refocusd.models.api import ModelError
from refocusd.models.card import (
    CARD_FILE,
    ModelCard,
    classifier_input_spec,
    reconstructor_input_spec,
)
from refocusd.models.resunet import build_resunet
from refocusd.models.sdcnn import build_sdcnn
from refocusd.models.store import (
    default_folder,
    load_card,
    load_keras,
    resolve,
    save_model,
    sha256_file,
)


def classifier_card(**extra: object) -> ModelCard:
    return ModelCard(
        name="unit-sdcnn", version="1.2.3", kind="classifier", architecture="sdcnn",
        input=classifier_input_spec(), **extra,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelCard, np.ndarray]:
    """A fresh SDCNN saved once; tests copy the folder before breaking it."""
    folder = tmp_path_factory.mktemp("models") / "sdcnn"
    model = build_sdcnn()
    x = np.random.default_rng(0).normal(size=(2, 134, 134, 3)).astype("float32")
    card = save_model(model, folder, classifier_card(metrics={"accuracy": 0.5}))
    return folder, card, (x, model(x).numpy())


@pytest.fixture
def copy(saved, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(saved[0], target)
    return target


def test_round_trip_gives_the_same_network_and_a_complete_card(saved) -> None:
    folder, card, (x, expected) = saved
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.keras"]
    assert card.weights_sha256 == sha256_file(folder / "model.keras")
    assert card.params["parameter_count"] == 1_278_018
    assert card.libraries.tensorflow and card.libraries.keras and card.libraries.numpy
    assert card.model_id == f"unit-sdcnn@1.2.3:{card.weights_sha256[:12]}"
    on_disk = load_card(folder)
    assert on_disk == card
    assert json.loads((folder / CARD_FILE).read_text())["metrics"] == {"accuracy": 0.5}
    model = load_keras(folder, on_disk)
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-6)


def test_resunet_with_custom_layers_round_trips_in_safe_mode(tmp_path: Path) -> None:
    model = build_resunet(2, None)
    card = ModelCard(name="unit-resunet", version="0", kind="reconstructor",
                     architecture="resunet", params={"base_filters": 2},
                     input=reconstructor_input_spec(None))
    written = save_model(model, tmp_path / "rec", card)
    assert written.base_filters == 2 and written.input.size is None
    x = np.random.default_rng(1).uniform(0, 255, (1, 252, 252, 3)).astype("float32")
    loaded = load_keras(tmp_path / "rec", load_card(tmp_path / "rec"))
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-4)


def test_flipped_byte_is_detected_before_loading(copy: Path) -> None:
    weights = copy / "model.keras"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.keras does not match its card"):
        load_keras(copy, load_card(copy))


def test_truncated_weights_are_detected(copy: Path) -> None:
    weights = copy / "model.keras"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match=str(weights)):
        load_keras(copy, load_card(copy))


def test_corrupt_archive_with_matching_hash_is_a_model_error(copy: Path) -> None:
    """Someone re-hashed garbage into the card: Keras fails, we still name the file."""
    weights = copy / "model.keras"
    weights.write_bytes(b"not a zip archive at all")
    card = json.loads((copy / CARD_FILE).read_text())
    card["weights_sha256"] = sha256_file(weights)
    (copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"cannot load .*model\.keras"):
        load_keras(copy, load_card(copy))


def test_missing_card_and_missing_weights(copy: Path) -> None:
    (copy / "model.keras").unlink()
    with pytest.raises(ModelError, match=r"model\.keras is missing"):
        load_keras(copy, load_card(copy))
    (copy / CARD_FILE).unlink()
    with pytest.raises(ModelError, match=r"model\.json is missing"):
        resolve(copy, "classifier")


def test_unparsable_and_invalid_cards_name_the_file(copy: Path) -> None:
    (copy / CARD_FILE).write_text("{ not json")
    with pytest.raises(ModelError, match=r"model\.json is not a valid model card"):
        load_card(copy)
    card = classifier_card().model_dump(mode="json")
    card["kind"] = "teapot"
    card["weights_file"] = "../elsewhere.keras"
    (copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"kind.*weights_file|weights_file.*kind"):
        load_card(copy)


def test_resolve_accepts_folder_keras_file_and_card(saved) -> None:
    folder = saved[0]
    assert resolve(folder, "classifier") == folder
    assert resolve(str(folder / "model.keras"), "classifier") == folder
    assert resolve(folder / CARD_FILE, "classifier") == folder


def test_resolve_refuses_wrong_kind_and_missing_paths(saved, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="describes a classifier model, not a reconstructor"):
        resolve(saved[0], "reconstructor")
    with pytest.raises(ModelError, match="does not exist"):
        resolve(tmp_path / "nowhere", "classifier")
    other = tmp_path / "other.keras"
    shutil.copy(saved[0] / "model.keras", other)
    shutil.copy(saved[0] / CARD_FILE, tmp_path / CARD_FILE)
    with pytest.raises(ModelError, match="is not the weights file named by"):
        resolve(other, "classifier")


@pytest.mark.parametrize("kind", ["classifier", "reconstructor"])
def test_default_resolves_to_the_packaged_folder_or_says_none_is_installed(kind: str) -> None:
    folder = default_folder(kind)
    assert folder.parts[-2:] == ("weights", kind)
    if (folder / CARD_FILE).is_file():  # shipped weights present
        assert resolve("default", kind) == folder
        assert load_card(folder).kind == kind
    else:
        with pytest.raises(ModelError, match=f"no default {kind} model is installed"):
            resolve("default", kind)


def test_saving_replaces_atomically_and_leaves_no_temporary_files(saved, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    first = save_model(build_sdcnn(), folder, classifier_card())
    second = save_model(build_sdcnn(), folder, classifier_card())
    assert first.weights_sha256 != second.weights_sha256  # fresh random weights
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.keras"]
    assert load_card(folder).weights_sha256 == sha256_file(folder / "model.keras")
