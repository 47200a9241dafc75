"""Follow mode: classify each image of an NDTiff dataset that Micro-Manager is writing.

The stage belongs to whoever runs the acquisition (the GUI), so this driver cannot
re-acquire: defocused images are reconstructed. The dataset's ``NDTiff.index`` is tailed
(:class:`IndexTail`); every image gets a source key made of the dataset path and its axes,
so a restarted refocusd reads the index from the start and the ledger skips what it has
already seen. Following ends when the index carries its finished marker, after
``follow_idle_timeout_s`` without new images (a dataset that never finishes), or on stop.

Note: pycromanager's *Python* writer (ndstorage) keeps ``NDTiff.index`` open with normal
buffering, so its entries reach the disk in 8 KiB chunks (about 50 images) and at the end;
images of such a dataset arrive in batches rather than one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import structlog
from ndstorage.ndtiff_file import SingleNDTiffReader

from refocusd.config.settings import MicroManagerSettings
from refocusd.drivers import pixel_size
from refocusd.drivers.base import Capabilities, Coordinates, DriverError, DriverHealth, Frame, SourceRef
from refocusd.drivers.clock import Clock
from refocusd.drivers.micromanager.ndtiff_tail import IndexRecord, IndexTail

log = structlog.get_logger(__name__)


class NDTiffFollower:
    """Implements ``Microscope`` and ``HealthReporting`` (no stage control)."""

    def __init__(self, settings: MicroManagerSettings, *, clock: Clock, experiment: str = "", plate: str = "") -> None:
        if settings.follow_dataset is None:
            raise DriverError("follow mode needs follow_dataset")
        self.settings = settings
        self.dataset = Path(settings.follow_dataset)
        self._clock = clock
        self._experiment = experiment
        self._plate = plate
        self._readers: dict[str, SingleNDTiffReader] = {}
        self._seen = 0
        self._last_new: float | None = None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def health(self) -> DriverHealth:
        up = self.dataset.is_dir()
        return DriverHealth(up=up, detail=f"{self._seen} images read" if up else f"{self.dataset} does not exist")

    def frames(self) -> Iterator[Frame]:
        return self._follow()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def _follow(self) -> Iterator[Frame]:
        tail = IndexTail(self.dataset)
        idle_limit = self.settings.follow_idle_timeout_s
        self._last_new = self._clock.now()
        log.info("follow.started", dataset=str(self.dataset))
        while not _stop_requested(self._clock):
            records = tail.read_new()
            for record in records:
                self._seen += 1
                yield self._frame(record)
            now = self._clock.now()
            if records:
                self._last_new = now
            if tail.finished:
                log.info("follow.finished", dataset=str(self.dataset), images=self._seen)
                return
            if idle_limit is not None and now - self._last_new > idle_limit:
                log.info("follow.idle_stop", dataset=str(self.dataset), images=self._seen,
                         idle_s=round(now - self._last_new, 1))
                return
            if not records:
                self._clock.sleep(self.settings.follow_poll_s)

    def _frame(self, record: IndexRecord) -> Frame:
        axes = record.axes
        source = SourceRef(uri=f"ndtiff://{self.dataset}?{urlencode(sorted(axes.items()))}")
        metadata: dict[str, Any] = {"axes": axes, "dataset": str(self.dataset)}
        try:
            reader = self._reader(record.entry.filename)
            pixels = np.asarray(reader.read_image(record.entry))
            image_md = reader.read_metadata(record.entry)
        except (OSError, ValueError, KeyError) as exc:
            log.error("driver.error", during="read", source=source.key, error=repr(exc))
            pixels, image_md = np.zeros((0, 0), np.uint16), {}
            metadata["error"] = f"unreadable image: {exc}"
        z = image_md.get("ZPosition_um_Intended", image_md.get("ZPosition_um"))
        position = int(axes.get("position", 0)) if str(axes.get("position", 0)).isdigit() else 0
        return Frame(
            pixels=pixels,
            coords=Coordinates(
                plate=self._plate,
                well=str(image_md.get("PositionName") or f"p{position}"),
                position=position,
                t=int(axes.get("time", 0)),
                z_index=int(axes.get("z", 0)) if isinstance(axes.get("z", 0), int) else 0,
                channel=str(axes.get("channel", "")),
            ),
            source=source,
            acquired_at=self._clock.now(),
            z_um=None if z is None else float(z),
            retry=int(axes.get("retry", 0)),
            experiment=self._experiment,
            metadata=metadata,
            pixel_size_um=pixel_size.from_micromanager(image_md),
        )

    def _reader(self, filename: str) -> SingleNDTiffReader:
        reader = self._readers.get(filename)
        if reader is None:
            reader = SingleNDTiffReader(str(self.dataset / filename))
            self._readers[filename] = reader
        return reader


def _stop_requested(clock: Clock) -> bool:
    return bool(getattr(clock, "stop_requested", False))  # getattr: only SystemClock can be stopped


__all__ = ["NDTiffFollower"]
