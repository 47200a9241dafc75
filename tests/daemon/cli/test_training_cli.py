"""``refocusd train`` / ``refocusd evaluate`` run as users run them: real subprocesses, real
TensorFlow, tiny real TIFF data sets written here with tifffile (2 epochs x 2 steps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy.ndimage import gaussian_filter

from refocusd.models.datasets import (
    DEFOCUSED,
    FOCUSED,
    DatasetError,
    read_image,
    scan_classifier_folder,
    scan_paired_folder,
    split_indices,
)

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REFOCUSD, *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def _texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Sharp random texture in 16-bit (a stand-in for a focused frame)."""
    field = gaussian_filter(rng.random((size, size)), 0.8)
    field = (field - field.min()) / np.ptp(field)
    return (2_000 + 30_000 * field).astype(np.uint16)


def _blur(frame: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    return gaussian_filter(frame.astype(np.float64), sigma).astype(frame.dtype)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 focused / 8 defocused frames and 8 input/target pairs, 64x64 uint16 TIFFs."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    for sub in ("focused", "defocused", "input", "target"):
        (root / sub).mkdir()
    for i in range(8):
        sharp = _texture(rng)
        other = _texture(rng)
        tifffile.imwrite(root / "focused" / f"f{i:02d}.tif", sharp)
        tifffile.imwrite(root / "defocused" / f"d{i:02d}.tif", _blur(other))
        tifffile.imwrite(root / "target" / f"p{i:02d}.tif", other)
        tifffile.imwrite(root / "input" / f"p{i:02d}.tif", _blur(other))
    (root / "manifest.json").write_text(json.dumps({"made_by": "test", "seed": 7}))
    return root


def _card(folder: Path) -> dict:
    assert (folder / "model.keras").is_file()
    return json.loads((folder / "model.json").read_text())


@pytest.fixture(scope="module")
def classifier(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "cls"
    result = run(
        "train", "classifier", "--data", str(data), "--out", str(out),
        "--epochs", "2", "--steps-per-epoch", "2", "--seed", "3",
    )
    assert result.returncode == 0, result.stderr
    return out


def test_train_classifier_writes_a_model_with_a_card(classifier: Path, data: Path) -> None:
    card = _card(classifier)
    assert card["kind"] == "classifier" and card["architecture"] == "sdcnn"
    assert card["params"]["parameter_count"] == 1_278_018
    # Weights only (no optimizer slots): ~4 bytes per parameter plus the archive.
    assert (classifier / "model.keras").stat().st_size < 1.2 * 4 * 1_278_018
    assert len(card["weights_sha256"]) == 64
    training = card["training"]
    assert training["seed"] == 3 and training["epochs"] == 2
    assert "train classifier" in training["command"] and "--seed 3" in training["command"]
    assert training["data"]["counts"] == {"focused": 8, "defocused": 8}
    assert training["data"]["manifest"]["made_by"] == "test"
    assert training["extra"]["interrupted"] is False
    assert training["extra"]["mode"] == "scratch"
    # The paper's schedule: lr 1e-3 for the first five epochs.
    assert [h["lr"] for h in training["extra"]["history"]] == pytest.approx([1e-3, 1e-3])
    assert set(card["metrics"]["validation"]) == {"loss", "accuracy", "auc"}


def test_fine_tune_from_a_trained_classifier(classifier: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    result = run(
        "train", "classifier", "--data", str(data), "--out", str(out), "--base", str(classifier),
        "--epochs", "2", "--steps-per-epoch", "2",
    )
    assert result.returncode == 0, result.stderr
    card, base = _card(out), _card(classifier)
    extra = card["training"]["extra"]
    assert extra["mode"] == "fine-tune"
    assert extra["base_model"].startswith(f"{base['name']}@{base['version']}:")
    assert [h["lr"] for h in extra["history"]] == pytest.approx([2e-4, 2e-4])
    assert card["weights_sha256"] != base["weights_sha256"]  # the weights did change


def test_evaluate_classifier_json(classifier: Path, data: Path) -> None:
    result = run("evaluate", "classifier", "--model", str(classifier), "--data", str(data), "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert {"model", "n", "accuracy", "auc", "confusion", "threshold", "data"} <= set(report)
    assert report["n"] == 16
    confusion = report["confusion"]
    assert sum(confusion.values()) == 16
    assert confusion["focused_as_focused"] + confusion["focused_as_defocused"] == 8
    correct = confusion["focused_as_focused"] + confusion["defocused_as_defocused"]
    assert report["accuracy"] == pytest.approx(correct / 16)
    assert 0.0 <= report["auc"] <= 1.0


def test_train_and_fine_tune_reconstructor_then_evaluate(
    data: Path, classifier: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rec"
    result = run(
        "train", "reconstructor", "--data", str(data), "--out", str(out), "--epochs", "2",
        "--steps-per-epoch", "2", "--seed", "1", "--base-filters", "4", "--tile", "20",
    )
    assert result.returncode == 0, result.stderr
    card = _card(out)
    assert card["kind"] == "reconstructor" and card["architecture"] == "resunet"
    assert card["params"]["base_filters"] == 4
    assert card["input"]["size"] is None  # fully convolutional: the runtime picks the tile
    assert card["training"]["extra"]["tile"] == 20
    assert {"ssim", "loss", "input_ssim"} <= set(card["metrics"]["validation"])

    tuned = tmp_path / "rec-tuned"
    result = run(
        "train", "reconstructor", "--data", str(data), "--out", str(tuned), "--base", str(out),
        "--epochs", "1", "--steps-per-epoch", "2", "--tile", "20",
    )
    assert result.returncode == 0, result.stderr
    tuned_card = _card(tuned)
    assert tuned_card["params"]["base_filters"] == 4
    assert tuned_card["training"]["extra"]["base_model"] == (
        f"{card['name']}@{card['version']}:{card['weights_sha256'][:12]}"
    )

    result = run(
        "evaluate", "reconstructor", "--model", str(tuned), "--data", str(data),
        "--classifier", str(classifier), "--json",
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    report = json.loads(line)
    assert report["n"] == 8
    for key in ("input", "reconstruction", "richardson_lucy"):
        assert set(report[key]) == {"mean_ssim", "mean_psnr"}
        assert -1.0 <= report[key]["mean_ssim"] <= 1.0
    # The inputs really are blurred copies of the targets: SSIM well below 1.
    assert report["input"]["mean_ssim"] < 0.9
    assert 0.0 <= report["realism_auc_focused_vs_reconstructed"] <= 1.0
    assert report["realism_auc_focused_vs_defocused"] is not None


def test_ctrl_c_leaves_the_best_model_so_far(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [*REFOCUSD, "train", "classifier", "--data", str(data), "--out", str(out),
         "--epochs", "500", "--steps-per-epoch", "2"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until one epoch has been validated
        if line.lstrip().startswith("epoch") and "/500" in line:
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout
    card = _card(out)
    extra = card["training"]["extra"]
    assert extra["interrupted"] is True
    assert 1 <= card["training"]["epochs"] < 500
    assert extra["best_epoch"] is not None
    # It loads: the evaluate command verifies the hash and runs the network.
    result = run("evaluate", "classifier", "--model", str(out), "--data", str(data), "--json")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("missing", "has no 'defocused/' subfolder"),
        ("empty", "'defocused/' holds no images"),
        ("unreadable", "unreadable image"),
        ("nofolder", "does not exist"),
    ],
)
def test_bad_data_folder_exits_2_with_a_clear_message(
    tmp_path: Path, data: Path, layout: str, expected: str
) -> None:
    root = tmp_path / "bad"
    if layout != "nofolder":
        (root / "focused").mkdir(parents=True)
        tifffile.imwrite(root / "focused" / "a.tif", np.zeros((32, 32), np.uint8))
    if layout in ("empty", "unreadable"):
        (root / "defocused").mkdir()
    if layout == "unreadable":
        (root / "defocused" / "broken.tif").write_bytes(b"this is not a TIFF")
    result = run("train", "classifier", "--data", str(root), "--out", str(tmp_path / "m"))
    assert result.returncode == 2
    assert "data error" in result.stderr and expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()


def test_unpaired_reconstructor_folder_exits_2(tmp_path: Path) -> None:
    for sub in ("input", "target"):
        (tmp_path / sub).mkdir()
    tifffile.imwrite(tmp_path / "input" / "a.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "target" / "b.tif", np.zeros((32, 32), np.uint8))
    result = run("train", "reconstructor", "--data", str(tmp_path), "--out", str(tmp_path / "m"))
    assert result.returncode == 2
    assert "lack a partner" in result.stderr and "a.tif" in result.stderr


def test_invalid_tile_exits_2(data: Path, tmp_path: Path) -> None:
    result = run(
        "train", "reconstructor", "--data", str(data), "--out", str(tmp_path / "m"), "--tile", "50"
    )
    assert result.returncode == 2
    assert "--tile 50" in result.stderr and "388" in result.stderr


# ---------------------------------------------------------------- data folders (in-process)


def test_scan_and_read(data: Path, tmp_path: Path) -> None:
    folder = scan_classifier_folder(data)
    assert len(folder.focused) == len(folder.defocused) == 8
    assert list(folder.labels).count(FOCUSED) == 8 and list(folder.labels).count(DEFOCUSED) == 8
    pairs = scan_paired_folder(data)
    source, target = pairs.read_pair(pairs.names[0])
    assert source.shape == target.shape == (64, 64) and source.dtype == np.uint16

    planar = np.arange(3 * 16 * 20, dtype=np.uint8).reshape(3, 16, 20)
    tifffile.imwrite(tmp_path / "planar.tif", planar)
    assert read_image(tmp_path / "planar.tif").shape == (16, 20, 3)
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 16, 16), np.uint8))
    with pytest.raises(DatasetError, match="stack.tif"):
        read_image(tmp_path / "stack.tif")


def test_split_is_deterministic_and_stratified() -> None:
    labels = np.array([0] * 10 + [1] * 30)
    train, val = split_indices(labels, 0.2, seed=5)
    again_train, again_val = split_indices(labels, 0.2, seed=5)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    assert sorted([*train, *val]) == list(range(40))
    assert list(labels[val]).count(0) == 2 and list(labels[val]).count(1) == 6
    _, other_val = split_indices(labels, 0.2, seed=6)
    assert not np.array_equal(val, other_val)
    # Tiny classes still validate on both labels.
    _, small_val = split_indices(np.array([0, 0, 1, 1]), 0.1, seed=0)
    assert sorted(np.array([0, 0, 1, 1])[small_val]) == [0, 1]
