"""``refocusd classify`` / ``refocusd reconstruct`` run as users run them: a subprocess on
real TIFF/PNG/JPEG files, with freshly initialised models saved to a temporary folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from refocusd.models.card import ModelCard, classifier_input_spec, reconstructor_input_spec
from refocusd.models.resunet import build_resunet
from refocusd.models.sdcnn import build_sdcnn
from refocusd.models.store import save_model


def refocusd(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "refocusd"
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "from refocusd.daemon.cli import main; main()"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "200"}
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    save_model(build_sdcnn(), root / "cls", ModelCard(
        name="cli-sdcnn", version="0", kind="classifier", architecture="sdcnn",
        input=classifier_input_spec()))
    save_model(build_resunet(2, None), root / "rec", ModelCard(
        name="cli-resunet", version="0", kind="reconstructor", architecture="resunet",
        params={"base_filters": 2}, input=reconstructor_input_spec(None)))
    return {"classifier": root / "cls", "reconstructor": root / "rec"}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    nested = root / "plate" / "well_A1"
    nested.mkdir(parents=True)
    paths = {
        "tif16": root / "plate" / "a_mono16.tif",
        "png": nested / "b_rgb.png",
        "jpg": nested / "c_gray.jpg",
        "stack": root / "stack.tif",
        "page0": root / "page0.tif",
        "broken": root / "plate" / "z_broken.tif",
        "notimage": root / "plate" / "y_text.png",
    }
    tifffile.imwrite(paths["tif16"], rng.integers(0, 4095, (600, 700), dtype=np.uint16))
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(paths["png"])
    Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(paths["jpg"])
    stack = rng.integers(0, 65535, (4, 200, 220), dtype=np.uint16)
    tifffile.imwrite(paths["stack"], stack, photometric="minisblack")  # 4 pages
    tifffile.imwrite(paths["page0"], stack[0])
    good = paths["tif16"].read_bytes()
    paths["broken"].write_bytes(good[: len(good) // 3])  # truncated mid-pixels
    paths["notimage"].write_text("this is not a PNG\n")
    return paths


def test_classify_json_lines_with_an_unreadable_file(models, images) -> None:
    folder = images["tif16"].parent
    result = refocusd("classify", folder, images["stack"], images["page0"],
                      "--model", models["classifier"], "--json", "--device", "cpu")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    rows = json_lines(result.stdout)
    by_path = {Path(r["path"]).name: r for r in rows}
    # The folder expands recursively and sorted; every input has exactly one line.
    assert [Path(r["path"]).name for r in rows[:5]] == [
        "a_mono16.tif", "b_rgb.png", "c_gray.jpg", "y_text.png", "z_broken.tif"]
    assert len(rows) == 7
    for name in ("a_mono16.tif", "b_rgb.png", "c_gray.jpg", "stack.tif", "page0.tif"):
        row = by_path[name]
        assert set(row) == {"path", "p_focused", "label", "model", "defocus_um",
                            "defocus_sigma_um", "pixel_size_um"}
        assert 0.0 <= row["p_focused"] <= 1.0
        assert row["label"] == ("focused" if row["p_focused"] >= 0.5 else "defocused")
        assert row["model"].startswith("cli-sdcnn@0:")
    for name in ("z_broken.tif", "y_text.png"):
        assert set(by_path[name]) == {"path", "error"}
        assert "cannot read image" in by_path[name]["error"]
    # A multi-page TIFF is classified by its first page.
    assert by_path["stack.tif"]["p_focused"] == pytest.approx(by_path["page0.tif"]["p_focused"])


def test_classify_table_and_clean_exit(models, images, tmp_path: Path) -> None:
    missing = tmp_path / "missing.tif"
    result = refocusd("classify", images["png"], images["jpg"], missing,
                      "--model", models["classifier"], "--device", "cpu", "--threshold", "0.3")
    assert result.returncode == 1
    assert "b_rgb.png" in result.stdout and "c_gray.jpg" in result.stdout
    assert "no such file or folder" in result.stdout
    assert "unreadable" in result.stdout

    ok = refocusd("classify", images["png"], "--model", models["classifier"], "--json")
    assert ok.returncode == 0, ok.stderr
    assert len(json_lines(ok.stdout)) == 1


def test_classify_with_an_unusable_model_is_exit_2_without_traceback(images, tmp_path: Path) -> None:
    result = refocusd("classify", images["png"], "--model", tmp_path / "nope", "--json")
    assert result.returncode == 2
    assert "model error" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_reconstruct_writes_ome_tiff_with_provenance_and_leaves_inputs_alone(
    models, images, tmp_path: Path
) -> None:
    inputs = [images["tif16"], images["png"], images["broken"]]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs}
    out = tmp_path / "out"
    result = refocusd("reconstruct", *inputs, "--out", out,
                      "--model", models["reconstructor"], "--device", "cpu")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    rows = {Path(r["path"]).name: r for r in json_lines(result.stdout)}
    assert "error" in rows["z_broken.tif"]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs} == before

    written = Path(rows["a_mono16.tif"]["output"])
    assert written == out / "a_mono16.reconstructed.ome.tif"
    pixels = tifffile.imread(written)
    assert pixels.shape == (600, 700) and pixels.dtype == np.uint16
    sidecar = json.loads(written.with_name(written.name + ".json").read_text())
    assert sidecar["source"]["sha256"] == before[images["tif16"]]
    assert sidecar["reconstructor"]["name"] == "cli-resunet"
    card = json.loads((models["reconstructor"] / "model.json").read_text())
    assert sidecar["reconstructor"]["weights_sha256"] == card["weights_sha256"]
    with tifffile.TiffFile(written) as tif:
        assert tif.is_ome and "urn:refocusd:provenance" in tif.ome_metadata
    rgb = tifffile.imread(rows["b_rgb.png"]["output"])
    assert rgb.shape == (300, 400, 3) and rgb.dtype == np.uint8

    again = refocusd("reconstruct", images["png"], "--out", out,
                     "--model", models["reconstructor"], "--device", "cpu")
    assert again.returncode == 1
    assert "already exists" in json_lines(again.stdout)[0]["error"]
