"""``refocusd synth`` end to end: the console script in a real subprocess, real TIFF files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocusd.models.synth.dataset import PLANS, SynthError, SynthRequest, generate_dataset, render_item


def _refocusd() -> str:
    beside = Path(sys.executable).parent / "refocusd"
    found = str(beside) if beside.exists() else shutil.which("refocusd")
    assert found, "the refocusd console script is not installed"
    return found


def _synth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_refocusd(), "synth", *args], capture_output=True, text=True, timeout=300)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _gradient_energy(image: np.ndarray) -> float:
    gy, gx = np.gradient(image.astype(np.float64))
    return float(np.mean(gy**2 + gx**2))


def test_reconstructor_pairs_layout_manifest_and_reproducibility(tmp_path: Path) -> None:
    # The paper's domain (phase contrast, spread cells): there the target is visibly sharper.
    args = ["--kind", "reconstructor", "--n", "4", "--size", "128", "--seed", "7",
            "--domain", "positive_phase", "--domain", "spread_cells"]
    first = _synth(*args, "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    assert "wrote 4 reconstructor" in first.stdout
    root = tmp_path / "a"
    inputs = sorted(p.name for p in (root / "input").iterdir())
    targets = sorted(p.name for p in (root / "target").iterdir())
    assert len(inputs) == 4 and inputs == targets

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["kind"] == "reconstructor" and manifest["seed"] == 7 and manifest["complete"]
    assert manifest["parameters"]["size"] == 128 and manifest["parameters"]["bit_depth"] == 8
    assert {item["objective"] for item in manifest["items"]} == {"10x", "20x"}  # mixed by default
    sharper = 0
    for item in manifest["items"]:
        assert item["input"] == f"input/{item['name']}" and item["target"] == f"target/{item['name']}"
        assert item["substrate"] in ("tcps", "hydrogel", "pdms") and item["target_z_um"] == 0.0
        distance = min(abs(abs(item["z_um"]) - d) for d in PLANS[item["objective"]].pair_distances_um)
        assert distance <= 1.5  # the paper's fixed offsets with ±1.5 µm stage jitter
        x = tifffile.imread(root / item["input"])
        y = tifffile.imread(root / item["target"])
        assert x.shape == y.shape == (128, 128) and x.dtype == y.dtype == np.uint8
        assert not np.array_equal(x, y)
        sharper += _gradient_energy(y) > _gradient_energy(x)
    assert sharper >= 3  # targets are the in-focus frames
    assert {np.sign(item["z_um"]) for item in manifest["items"]} == {-1.0, 1.0}
    for objective in ("10x", "20x"):  # 4 pairs hold both objectives and both distances
        zs = [abs(i["z_um"]) for i in manifest["items"] if i["objective"] == objective]
        nearest = {min(PLANS[objective].pair_distances_um, key=lambda d: abs(d - z)) for z in zs}
        assert nearest == set(PLANS[objective].pair_distances_um)

    again = _synth(*args, "--out", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    assert _files(root) == _files(tmp_path / "b")  # same seed → byte-identical files
    other = _synth("--kind", "reconstructor", "--n", "1", "--size", "128", "--seed", "8", "--out", str(tmp_path / "c"))
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "c/input/000000.tif").read_bytes() != (root / "input/000000.tif").read_bytes()


def test_classifier_split_ranges_and_bit_depth(tmp_path: Path) -> None:
    out = tmp_path / "cls"
    run = _synth("--kind", "classifier", "--out", str(out), "--n", "6", "--size", "96", "--bit-depth", "16",
                 "--objective", "20x", "--seed", "1")
    assert run.returncode == 0, run.stderr
    assert len(list((out / "focused").glob("*.tif"))) == 3
    assert len(list((out / "defocused").glob("*.tif"))) == 3
    manifest = json.loads((out / "manifest.json").read_text())
    for item in manifest["items"]:
        assert item["objective"] == "20x" and 0.40 <= item["na"] <= 0.50
        frame = tifffile.imread(out / item["path"])
        assert frame.dtype == np.uint16 and frame.shape == (96, 96)
        # The label follows the frame's own depth of field; z is a signed continuum.
        dof = item["depth_of_field_um"]
        if item["label"] == "focused":
            assert abs(item["z_um"]) <= dof / 2
        else:
            assert dof / 2 < abs(item["z_um"]) <= 8 * dof

    # Regenerating the same kind in place replaces the previous run (no stale frames left).
    rerun = _synth("--kind", "classifier", "--out", str(out), "--n", "2", "--size", "96")
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(out.rglob("*.tif"))) == 2


def test_refuses_a_folder_of_another_kind_and_bad_arguments(tmp_path: Path) -> None:
    out = tmp_path / "cls"
    assert _synth("--kind", "classifier", "--out", str(out), "--n", "2", "--size", "64").returncode == 0
    wrong = _synth("--kind", "reconstructor", "--out", str(out), "--n", "2", "--size", "64")
    assert wrong.returncode == 2
    assert "holds a 'classifier' data set" in wrong.stderr
    assert not (out / "input").exists()

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    refused = _synth("--kind", "classifier", "--out", str(foreign), "--n", "2")
    assert refused.returncode == 2 and "not a synth data set" in refused.stderr
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]

    for bad in (["--objective", "60x"], ["--kind", "segmenter"]):
        args = {"--kind": "classifier", "--n": "2", "--out": str(tmp_path / "never")}
        args.update(dict(zip(bad[::2], bad[1::2])))
        result = _synth(*[x for kv in args.items() for x in kv])
        assert result.returncode == 2, (bad, result.stdout, result.stderr)
    assert not (tmp_path / "never").exists()


def test_items_do_not_depend_on_n_and_progress_is_reported(tmp_path: Path) -> None:
    small = render_item(SynthRequest(kind="classifier", n=4, seed=3, size=64), 3)
    large = render_item(SynthRequest(kind="classifier", n=40, seed=3, size=64), 3)
    assert small.record == large.record
    for rel in small.frames:
        np.testing.assert_array_equal(small.frames[rel], large.frames[rel])

    calls: list[tuple[int, int]] = []
    manifest = generate_dataset(tmp_path / "d", SynthRequest(kind="classifier", n=3, size=64),
                                progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [item["label"] for item in manifest["items"]] == ["focused", "defocused", "focused"]
    with pytest.raises(SynthError, match="n=0"):
        SynthRequest(kind="classifier", n=0)


def test_every_frame_records_its_domain_and_signed_z_and_domains_can_be_chosen(tmp_path: Path) -> None:
    from refocusd.models.synth.domains import MODES, SPECIMENS

    out = tmp_path / "all"
    run = _synth("--kind", "classifier", "--out", str(out), "--n", "16", "--size", "48", "--seed", "5")
    assert run.returncode == 0, run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == 2 and manifest["parameters"]["domains"]["modes"] == list(MODES)
    items = manifest["items"]
    for item in items:
        assert item["domains"] == [item["mode"], item["specimen"]]
        assert item["mode"] in MODES and item["specimen"] in SPECIMENS
        assert 0.1 <= item["pixel_size_um"] <= 2.0 and 0.1 <= item["na"] <= 0.75
        dof = item["depth_of_field_um"]
        assert dof > 0 and item["z_over_dof"] == pytest.approx(item["z_um"] / dof, abs=1e-3)
        assert (item["label"] == "focused") == (abs(item["z_um"]) <= dof / 2)
        assert item["noise"]["signal_e"] > 0 and 0 < item["noise"]["relative_noise"] < 1
        tags = tifffile.TiffFile(out / item["path"]).pages[0].tags
        per_cm = tags["XResolution"].value[0] / tags["XResolution"].value[1]
        assert 1e4 / per_cm == pytest.approx(item["pixel_size_um"], rel=1e-3)  # the pixel size travels
    assert len({i["mode"] for i in items}) >= 4 and len({i["specimen"] for i in items}) >= 4
    assert {i["objective"] for i in items} == {"4x", "10x", "20x", "40x"}  # "any" by default
    defocused = [i["z_um"] for i in items if i["label"] == "defocused"]
    assert min(defocused) < 0 < max(defocused)  # both signs

    # --domain restricts its axis, then --exclude-domain removes names: here negative phase
    # contrast and round cells only, at a fixed pixel size.
    only = tmp_path / "neg"
    run = _synth("--kind", "classifier", "--out", str(only), "--n", "4", "--size", "48",
                 "--domain", "negative_phase", "--domain", "brightfield", "--exclude-domain", "brightfield",
                 "--domain", "round_cells", "--pixel-size-um", "0.8")
    assert run.returncode == 0, run.stderr
    items = json.loads((only / "manifest.json").read_text())["items"]
    assert {(i["mode"], i["specimen"]) for i in items} == {("negative_phase", "round_cells")}
    assert {i["pixel_size_um"] for i in items} == {0.8}

    listed = subprocess.run([_refocusd(), "synth", "--list-domains"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and all(name in listed.stdout for name in (*MODES, *SPECIMENS))
    bad = _synth("--kind", "classifier", "--n", "2", "--domain", "negatve_phase", "--out", str(tmp_path / "never"))
    assert bad.returncode == 2 and "unknown domain(s) negatve_phase" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "never").exists()


def test_regenerating_in_place_deletes_only_what_synth_wrote(tmp_path: Path) -> None:
    out = tmp_path / "cls"
    args = ["--kind", "classifier", "--out", str(out), "--size", "48", "--domain", "brightfield"]
    assert _synth(*args, "--n", "4").returncode == 0
    mine = out / "focused" / "hand_labelled.tif"
    tifffile.imwrite(mine, np.full((48, 48), 7, np.uint8))
    edited = out / "defocused" / "000001.tif"  # a synth frame the user replaced by their own
    tifffile.imwrite(edited, np.full((48, 48), 9, np.uint8))
    notes = out / "focused" / "notes.txt"
    notes.write_text("my labels")
    before = {p: p.read_bytes() for p in (mine, edited, notes)}

    clash = _synth(*args, "--n", "2", "--seed", "1")  # would write over the edited frame
    assert clash.returncode == 2 and "would overwrite 1 file(s)" in clash.stderr
    assert "defocused/000001.tif" in clash.stderr
    assert (out / "focused" / "000002.tif").is_file()  # refused before deleting anything

    rerun = _synth(*args, "--n", "1", "--seed", "1")
    assert rerun.returncode == 0, rerun.stderr
    assert "kept 3 file(s)" in rerun.stdout
    for path, data in before.items():
        assert path.read_bytes() == data  # the user's files are untouched
    for gone in ("focused/000002.tif", "defocused/000003.tif"):
        assert not (out / gone).exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["kept_files"]) == ["defocused/000001.tif", "focused/hand_labelled.tif", "focused/notes.txt"]
    assert (out / "focused" / "000000.tif").is_file() and manifest["items"][0]["sha256"]

    # An interrupted earlier run (manifest written, items not yet recorded) is cleaned too.
    manifest["items"], manifest["complete"] = [], False
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "focused" / "000000.tif.tmp").write_bytes(b"half")
    generate_dataset(out, SynthRequest(kind="classifier", n=1, seed=2, size=48, domains=("brightfield",)))
    assert not (out / "focused" / "000000.tif.tmp").exists()
    assert mine.read_bytes() == before[mine] and notes.read_text() == "my labels"


def test_domain_selection_and_request_validation() -> None:
    from refocusd.models.synth.domains import MODES, SPECIMENS, select_domains

    assert select_domains() == select_domains([], [])
    assert select_domains().modes == MODES and select_domains().specimens == SPECIMENS
    chosen = select_domains(["fluorescence", "sparse"], [])
    assert chosen.modes == ("fluorescence",) and chosen.specimens == ("sparse",)
    loo = select_domains([], ["negative_phase", "round_cells"])
    assert "negative_phase" not in loo.modes and len(loo.modes) == len(MODES) - 1
    assert "round_cells" not in loo.specimens and len(loo.specimens) == len(SPECIMENS) - 1
    request = SynthRequest(kind="classifier", n=40, size=32, exclude_domains=("fluorescence",))
    assert all(render_item(request, i).record["mode"] != "fluorescence" for i in range(0, 40, 7))
    for bad, message in (({"exclude_domains": MODES}, "no imaging mode"),
                         ({"domains": ("forest",)}, "unknown domain"),
                         ({"pixel_size_um": (2.0, 1.0)}, "pixel_size_um"),
                         ({"pixel_size_um": (0.5, 0.5), "camera_pixel_um": 6.5}, "not both"),
                         ({"objective": "60x"}, "objective")):
        with pytest.raises(SynthError, match=message):
            SynthRequest(kind="classifier", n=1, **bad)  # type: ignore[arg-type]


def test_parallel_workers_write_the_same_files(tmp_path: Path) -> None:
    request = SynthRequest(kind="reconstructor", n=4, size=32, seed=9)
    one = generate_dataset(tmp_path / "one", request)
    two = generate_dataset(tmp_path / "two", request, workers=2)
    assert one["items"] == two["items"]
    files = {k: v for k, v in _files(tmp_path / "one").items() if k != "manifest.json"}
    assert files == {k: v for k, v in _files(tmp_path / "two").items() if k != "manifest.json"}


def test_cleanup_of_a_data_set_from_the_previous_synth_version(tmp_path: Path) -> None:
    """A version-1 manifest lists its files without hashes: those files go, others stay,
    and a manifest path outside the data folders is never touched."""
    out = tmp_path / "old"
    (out / "focused").mkdir(parents=True)
    (out / "defocused").mkdir()
    for rel in ("focused/000000.tif", "defocused/000001.tif", "focused/mine.tif"):
        tifffile.imwrite(out / rel, np.zeros((8, 8), np.uint8))
    outside = tmp_path / "precious.tif"
    outside.write_bytes(b"keep")
    items = [{"path": "focused/000000.tif", "label": "focused"}, {"path": "defocused/000001.tif"},
             {"path": "../precious.tif"}]
    (out / "manifest.json").write_text(json.dumps({"format": "refocusd-synth", "version": 1, "kind": "classifier",
                                                   "n": 2, "items": items}))
    manifest = generate_dataset(out, SynthRequest(kind="classifier", n=1, size=32))
    assert manifest["kept_files"] == ["focused/mine.tif"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.tif")) == ["focused/000000.tif", "focused/mine.tif"]
    assert outside.read_bytes() == b"keep"
