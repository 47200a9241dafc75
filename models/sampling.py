"""``[models] pixel_size_um``: the pixel size of frames whose source does not state one."""

from __future__ import annotations

from collections.abc import Sequence
import numpy as np

from refocusd.models.api import DeviceInfo, FocusClassifier, Verdict


class DefaultPixelSize:
    """A classifier that fills in ``pixel_size_um`` where the frame's source did not know
    it (the source's own value always wins)."""

    def __init__(self, inner: FocusClassifier, pixel_size_um: float) -> None:
        if not pixel_size_um > 0:
            raise ValueError(f"pixel_size_um must be > 0, got {pixel_size_um}")
        self._inner = inner
        self.pixel_size_um = float(pixel_size_um)

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def device(self) -> DeviceInfo:
        return self._inner.device

    @property
    def threshold(self) -> float:
        return self._inner.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:  # a SIGHUP reload sets the real one's
        self._inner.threshold = value

    def classify(self, pixels: np.ndarray, *, pixel_size_um: float | None = None) -> Verdict:
        size = self.pixel_size_um if pixel_size_um is None else pixel_size_um
        return self._inner.classify(pixels, pixel_size_um=size)

    def classify_batch(
        self, frames: Sequence[np.ndarray], *, pixel_sizes: Sequence[float | None] | None = None
    ) -> list[Verdict]:
        sizes = [None] * len(frames) if pixel_sizes is None else list(pixel_sizes)
        filled = [self.pixel_size_um if s is None else s for s in sizes]
        return self._inner.classify_batch(frames, pixel_sizes=filled)


def with_default_pixel_size(classifier: FocusClassifier, pixel_size_um: float | None) -> FocusClassifier:
    return classifier if pixel_size_um is None else DefaultPixelSize(classifier, pixel_size_um)
