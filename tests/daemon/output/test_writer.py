"""The writer with real tifffile + ome-types round trips on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from ome_types import from_xml

from refocusd.daemon.output.provenance import build_provenance, sha256_file
from refocusd.daemon.output.writer import (
    PROVENANCE_NAMESPACE,
    OutputExists,
    WriterError,
    reconstruction_path,
    sidecar_path,
    write_reconstruction,
)
from refocusd.models import Verdict


def source_and_provenance(tmp_path: Path, name: str = "A01_t003.tif") -> tuple[Path, dict]:
    source = tmp_path / "raw" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(source, np.full((8, 8), 7, np.uint16))
    prov = build_provenance(
        reason="missed_timepoint", source_path=source, source_sha256=sha256_file(source),
        coords={"plate": "P1", "well": "A01", "t": 3}, acquired_at=1_767_225_600.0,
        verdict=Verdict(0.08, "defocused", "sdcnn@1", 0.004),
        reconstructor={"name": "resunet", "version": "1", "weights_sha256": "e" * 64},
        parameters={"tile": 388}, run_id="run-1", device="CPU",
    )
    return source, prov


def make_pixels(kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "uint8":
        return rng.integers(0, 256, (37, 53), dtype=np.uint8)
    if kind == "uint16":
        return rng.integers(0, 65536, (37, 53), dtype=np.uint16)
    return rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["uint8", "uint16", "rgb8"])
def test_round_trip_pixels_ome_and_sidecar(tmp_path: Path, kind: str) -> None:
    source, prov = source_and_provenance(tmp_path)
    raw_before = source.read_bytes()
    pixels = make_pixels(kind)
    out = tmp_path / "out" / "A01_t003.reconstructed.ome.tif"
    assert write_reconstruction(pixels, out, prov, source_path=source) == out

    np.testing.assert_array_equal(tifffile.imread(out), pixels)
    with tifffile.TiffFile(out) as tif:
        doc = from_xml(tif.ome_metadata)
        assert tif.pages[0].photometric == (2 if kind == "rgb8" else 1)  # RGB / MINISBLACK
    (image,) = doc.images
    px = image.pixels
    assert (px.size_x, px.size_y, px.size_z, px.size_t) == (53, 37, 1, 1)
    assert px.type.value == pixels.dtype.name
    if kind == "rgb8":
        assert px.size_c == 3 and px.interleaved and px.channels[0].samples_per_pixel == 3
    else:
        assert px.size_c == 1 and px.channels[0].samples_per_pixel == 1
    (annotation,) = doc.structured_annotations.map_annotations
    assert annotation.namespace == PROVENANCE_NAMESPACE
    assert [ref.id for ref in image.annotation_refs] == [annotation.id]
    pairs = {m.k: m.value for m in annotation.value.ms}
    assert pairs["source.sha256"] == prov["source"]["sha256"] == sha256_file(source)
    assert pairs["reason"] == "missed_timepoint" and pairs["classifier.label"] == "defocused"

    assert json.loads(sidecar_path(out).read_text()) == prov
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, out.name + ".json"]
    assert source.read_bytes() == raw_before


def test_non_ascii_provenance_survives_the_ascii_tiff_description(tmp_path: Path) -> None:
    _, prov = source_and_provenance(tmp_path, name="Zellkultur_µm_grün.tif")
    out = tmp_path / "out.ome.tif"
    write_reconstruction(make_pixels("uint8"), out, prov)
    with tifffile.TiffFile(out) as tif:
        doc = from_xml(tif.ome_metadata)
    pairs = {m.k: m.value for m in doc.structured_annotations.map_annotations[0].value.ms}
    assert pairs["source.path"].endswith("Zellkultur_µm_grün.tif")


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    _, prov = source_and_provenance(tmp_path)
    out = tmp_path / "r.ome.tif"
    first, second = make_pixels("uint8"), make_pixels("uint8") // 2
    write_reconstruction(first, out, prov)
    with pytest.raises(OutputExists) as info:
        write_reconstruction(second, out, prov)
    assert info.value.path == out
    np.testing.assert_array_equal(tifffile.imread(out), first)
    write_reconstruction(second, out, prov, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(out), second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.ome.tif", "r.ome.tif.json", "raw"]


def test_never_writes_onto_the_source(tmp_path: Path) -> None:
    source, prov = source_and_provenance(tmp_path)
    raw = source.read_bytes()
    with pytest.raises(WriterError, match="is the source frame"):
        write_reconstruction(make_pixels("uint8"), source, prov, overwrite=True)
    link = tmp_path / "alias.tif"
    link.symlink_to(source)
    with pytest.raises(WriterError, match="is the source frame"):
        write_reconstruction(make_pixels("uint8"), link, {}, source_path=source, overwrite=True)
    assert source.read_bytes() == raw


def test_orphan_sidecar_from_a_crash_is_replaced(tmp_path: Path) -> None:
    _, prov = source_and_provenance(tmp_path)
    out = tmp_path / "r.ome.tif"
    sidecar_path(out).write_text("{half")
    write_reconstruction(make_pixels("uint8"), out, prov)
    assert json.loads(sidecar_path(out).read_text()) == prov


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4, 4), np.uint8), np.zeros((2, 4, 4, 3), np.uint8), np.zeros((4, 4), bool),
     np.zeros((0, 4), np.uint8)],
)
def test_unsupported_arrays_are_refused(tmp_path: Path, pixels: np.ndarray) -> None:
    with pytest.raises(WriterError, match="cannot write"):
        write_reconstruction(pixels, tmp_path / "x.ome.tif", {})
    assert list(tmp_path.iterdir()) == []


def test_read_only_directory_is_a_writer_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: directory permissions are not enforced")
    _, prov = source_and_provenance(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(WriterError, match="permission denied"):
            write_reconstruction(make_pixels("uint8"), locked / "r.ome.tif", prov)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_output_under_a_regular_file_is_a_writer_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(WriterError, match="cannot write reconstruction"):
        write_reconstruction(make_pixels("uint8"), blocker / "r.ome.tif", {})


# A real failed write half-way through the file: the process file-size limit makes write()
# fail with EFBIG after 64 KiB, as a full disk fails with ENOSPC (which cannot be produced
# here without mounting a small filesystem).
HALF_WRITE = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    from pathlib import Path
    from refocusd.daemon.output.writer import WriterError, write_reconstruction
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get an OSError instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    try:
        write_reconstruction(np.ones((512, 512), np.uint16), Path(sys.argv[1]), {"reason": "x"})
    except WriterError as exc:
        print("WriterError:", exc)
    """
)


def test_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "out" / "r.ome.tif"
    proc = subprocess.run([sys.executable, "-c", HALF_WRITE, str(out)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "WriterError:" in proc.stdout and "short write" in proc.stdout
    assert list(out.parent.iterdir()) == []  # no temp file, no sidecar, no image


def test_reconstruction_path_mirrors_the_source_layout(tmp_path: Path) -> None:
    root, out = tmp_path / "raw", tmp_path / "recon"
    mirrored = reconstruction_path(
        root / "p1" / "A01" / "img_t001.ome.tiff", source_root=root, output_root=out
    )
    assert mirrored == out / "p1" / "A01" / "img_t001.reconstructed.ome.tif"
    assert reconstruction_path(root / "x.TIF", source_root=root, output_root=out) == (
        out / "x.reconstructed.ome.tif"
    )
    assert reconstruction_path(root / "a" / "run.nd2", source_root=None, output_root=out,
                               tag="t003_p02") == out / "run.nd2_t003_p02.reconstructed.ome.tif"
    with pytest.raises(WriterError, match="not under the source root"):
        reconstruction_path(tmp_path / "elsewhere" / "x.tif", source_root=root, output_root=out)
    with pytest.raises(WriterError, match="tag"):
        reconstruction_path(root / "x.tif", source_root=root, output_root=out, tag="../up")
