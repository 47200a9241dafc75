"""Shared set-up for the NIS export-folder driver: real watchdog observers on temporary
folders, real TIFF files written by tifffile, the driver's table in a real SQLite file."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocusd.config.settings import NisSettings
from refocusd.daemon.state.ledger import Ledger
from refocusd.drivers import Frame, FrameUnreadable
from refocusd.drivers.nis import FileFingerprints, NisExportFolder


def write_tiff(path: Path, pixels: np.ndarray | list[np.ndarray], **kwargs) -> Path:
    """One page per array when given a list (a NIS time stack), else one page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pages = pixels if isinstance(pixels, list) else [pixels]
    with tifffile.TiffWriter(path) as tif:
        for page in pages:
            photometric = "rgb" if page.ndim == 3 else "minisblack"
            tif.write(page, photometric=photometric, metadata=None, **kwargs)
    return path


def noise(shape=(128, 128), dtype=np.uint16, seed=0) -> np.ndarray:
    hi = 255 if dtype == np.uint8 else 4000
    return np.random.default_rng(seed).integers(0, hi, shape, dtype=dtype)


@dataclass
class Collector:
    """Iterates the driver's frames on a thread, as the runner does, and records them."""

    driver: NisExportFolder
    frames: list[Frame] = field(default_factory=list)
    bad: list[FrameUnreadable] = field(default_factory=list)
    taken_at: dict[str, float] = field(default_factory=dict)
    on_frame: Callable[[Frame], None] | None = None
    keep_pixels: bool = True

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream = self.driver.frames()
        while True:
            try:
                frame = next(stream)
            except StopIteration:
                return
            except FrameUnreadable as exc:
                self.bad.append(exc)
                continue
            self.taken_at[frame.source.key] = time.monotonic()
            self.frames.append(frame if self.keep_pixels else dataclasses.replace(frame, pixels=None))
            if self.on_frame is not None:
                self.on_frame(frame)

    def wait(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out: {len(self.frames)} frames, bad={[b.reason for b in self.bad]}")
            time.sleep(0.02)

    def wait_frames(self, n: int, timeout: float = 20.0) -> None:
        self.wait(lambda: len(self.frames) >= n, timeout)

    def wait_bad(self, n: int, timeout: float = 20.0) -> None:
        self.wait(lambda: len(self.bad) >= n, timeout)

    def reasons(self) -> dict[str, str]:
        return {Path(b.source.uri).name: b.reason for b in self.bad if b.source is not None}

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)


@pytest.fixture
def watch_dir(tmp_path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    return folder


@pytest.fixture
def start_driver(tmp_path, watch_dir):
    """``start_driver(**NisSettings overrides)`` → a Collector already iterating; stopped after."""
    started: list[tuple[NisExportFolder, threading.Event, Collector]] = []

    def start(keep_pixels: bool = True, **overrides) -> Collector:
        values = {"watch_dir": watch_dir, "settle_s": 0.2, "give_up_s": 1.0, "rescan_interval_s": 30.0}
        values.update(overrides)
        stop = threading.Event()
        Ledger.open(tmp_path / "state" / "ledger.sqlite").close()  # its migrations create nis_files
        driver = NisExportFolder(
            NisSettings(**values), fingerprints=FileFingerprints(tmp_path / "state" / "ledger.sqlite"), stop=stop
        )
        collector = Collector(driver, keep_pixels=keep_pixels)
        started.append((driver, stop, collector))
        return collector

    yield start
    for driver, stop, collector in started:
        stop.set()
        collector.join()
        driver.close()
