"""Every kind of bad export is refused with a clear reason and the driver keeps going."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
from conftest import noise, write_tiff
from structlog.testing import capture_logs
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


PROBE = """
import json, sys, threading
from pathlib import Path
from refocusd.config.settings import NisSettings
from refocusd.drivers import FrameUnreadable
from refocusd.drivers.nis import FileFingerprints, NisExportFolder
from refocusd.daemon.state.ledger import Ledger
Ledger.open(Path(sys.argv[2])).close()  # the ledger's migrations create the fingerprints table
driver = NisExportFolder(NisSettings(watch_dir=Path(sys.argv[1]), settle_s=0.1, exit_when_idle_s=1.0),
                         fingerprints=FileFingerprints(Path(sys.argv[2])))
stream, bad, good = driver.frames(), {}, []
while True:
    try:
        good.append(Path(next(stream).source.uri).name)
    except FrameUnreadable as exc:
        bad[Path(exc.source.uri).name] = exc.reason
    except StopIteration:
        break
driver.close()
print(json.dumps({"bad": bad, "good": good}))
"""


def test_permission_denied_is_refused(watch_dir, tmp_path):
    """Root reads any file, so as root the driver runs without the capabilities that allow it."""
    locked = write_tiff(watch_dir / "locked.tif", noise())
    write_tiff(watch_dir / "open.tif", noise(seed=2))
    locked.chmod(0)
    command = [sys.executable, "-c", PROBE, str(watch_dir), str(tmp_path / "ledger.sqlite")]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        drop = "-dac_override,-dac_read_search"
        command = [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["bad"] == {"locked.tif": "permission denied: Permission denied"}
    assert seen["good"] == ["open.tif"]


def test_symlink_inside_the_folder_is_not_read_twice(start_driver, watch_dir):
    write_tiff(watch_dir / "real_t001.tif", noise(seed=11))
    (watch_dir / "alias_t001.tif").symlink_to(watch_dir / "real_t001.tif")
    with capture_logs() as logs:
        collector = start_driver()
        collector.wait_frames(1)
        time.sleep(0.4)
        collector.driver._rescan()
        time.sleep(0.6)
    assert [f.source.uri for f in collector.frames] == [str(watch_dir / "real_t001.tif")]
    assert collector.bad == []
    assert [e["event"] for e in logs].count("nis.file.symlink_skipped") == 1, "not again at every rescan"
