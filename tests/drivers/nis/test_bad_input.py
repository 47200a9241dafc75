"""Every kind of bad export is refused with a clear reason and the driver keeps going."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import tifffile
from conftest import noise, write_tiff
from test_readers import _declare_size


def test_bad_files_are_refused_with_reasons_and_good_ones_still_taken(start_driver, watch_dir, tmp_path):
    (watch_dir / "zero.tif").write_bytes(b"")
    full = write_tiff(tmp_path / "full.tif", noise((256, 256))).read_bytes()
    (watch_dir / "truncated.tif").write_bytes(full[: len(full) // 2])
    (watch_dir / "notes.tif").write_text("not an image\n")
    tifffile.imwrite(watch_dir / "five_samples.tif", noise((32, 32, 5), np.uint8),
                     photometric="minisblack", planarconfig="contig")
    _declare_size(write_tiff(watch_dir / "huge.tif", noise((64, 64))), 100_000, 100_000)
    (watch_dir / "half.nd2").write_bytes(b"\xda\xce\xbe\x0a" + b"\x00" * 4000)
    outside = write_tiff(tmp_path / "outside.tif", noise(seed=7))
    (watch_dir / "link_out.tif").symlink_to(outside)
    os.mkfifo(watch_dir / "pipe.tif")  # would block a naive reader forever
    write_tiff(watch_dir / "good name with spaces – Zellkultur µ_t001xy01.tif", noise(seed=8))

    collector = start_driver(give_up_s=0.6)
    collector.wait_bad(8, timeout=15)
    collector.wait_frames(1)
    reasons = collector.reasons()
    assert reasons["zero.tif"] == "empty file (0 bytes)"
    assert "truncated" in reasons["truncated.tif"]
    assert reasons["notes.tif"].startswith("not a TIFF file")
    assert "wrong dimensionality" in reasons["five_samples.tif"]
    assert "absurd" in reasons["huge.tif"]
    assert "chunk-map signature missing" in reasons["half.nd2"]
    assert reasons["link_out.tif"] == "symlink pointing outside the watched folder (not followed)"
    assert reasons["pipe.tif"] == "not a regular file"
    (good,) = collector.frames
    assert good.source.uri.endswith("Zellkultur µ_t001xy01.tif")
    assert collector.alive(), "the driver keeps going"
    # A refused file is not refused again while unchanged.
    collector.driver._rescan()
    time.sleep(0.8)
    assert len(collector.bad) == 8


def test_file_deleted_between_event_and_read_is_refused(start_driver, watch_dir):
    collector = start_driver(settle_s=1.0)
    doomed = write_tiff(watch_dir / "doomed_t001.tif", noise())
    time.sleep(0.3)  # seen by the watcher, not yet settled
    doomed.unlink()
    collector.wait_bad(1)
    assert collector.reasons() == {"doomed_t001.tif": "file deleted before it could be read"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_permission_denied_is_refused(start_driver, watch_dir):
    locked = write_tiff(watch_dir / "locked.tif", noise())
    locked.chmod(0)
    collector = start_driver()
    collector.wait_bad(1)
    assert collector.reasons()["locked.tif"].startswith("permission denied")
