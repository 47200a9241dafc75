"""Typed interfaces between the networks and the rest of refocusd.

Nothing here imports TensorFlow: the daemon and CLI depend on these Protocols, and the
TensorFlow-owning runtime (``refocusd.models.runtime``) implements them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from refocusd.config.errors import UsageError

Label = Literal["focused", "defocused"]


class ModelError(UsageError, RuntimeError):
    """A model could not be found, verified, loaded or run. The message names the file."""

    label = "model error"


@dataclass(frozen=True, slots=True)
class CropScore:
    """One crop the classifier looked at, in the frame's native pixels (top-left ``y, x``,
    side ``size``), with what the network said about it."""

    y: int
    x: int
    size: int
    p_focused: float
    defocus_um: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "y": self.y,
            "x": self.x,
            "size": self.size,
            "p_focused": round(self.p_focused, 6),
            "defocus_um": None if self.defocus_um is None else round(self.defocus_um, 3),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classifier's answer for one frame.

    ``defocus_um`` is SIGNED: the frame's z minus the focal plane, in µm, so the stage
    correction is ``z_new = z_now - defocus_um``. ``defocus_sigma_um`` is its 1-sigma
    uncertainty (large where the sign cannot be known, e.g. fluorescence). Both are None
    for classifiers without a defocus estimate. ``pixel_size_um`` is the sampling the frame
    was classified at (None: native pixels, the pixel size was unknown). ``crops`` are the
    regions that were scored (empty for whole-frame classifiers).
    """

    p_focused: float
    label: Label
    model_id: str
    latency_s: float
    defocus_um: float | None = None
    defocus_sigma_um: float | None = None
    pixel_size_um: float | None = None
    crops: tuple[CropScore, ...] = ()

    def as_dict(self, detail: bool = False) -> dict[str, object]:
        out: dict[str, object] = {
            "p_focused": round(self.p_focused, 6),
            "label": self.label,
            "model": self.model_id,
            "latency_ms": round(self.latency_s * 1000, 3),
            "defocus_um": None if self.defocus_um is None else round(self.defocus_um, 3),
            "defocus_sigma_um": (
                None if self.defocus_sigma_um is None else round(self.defocus_sigma_um, 3)
            ),
            "pixel_size_um": self.pixel_size_um,
        }
        if detail:
            out["crops"] = [c.as_dict() for c in self.crops]
        return out


def valid_threshold(value: float) -> float:
    """A classifier threshold: strictly between 0 and 1 (``ValueError`` otherwise)."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {value}")
    return float(value)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Where inference runs, and why there."""

    kind: Literal["gpu", "cpu"]
    name: str
    reason: str

    @property
    def tf_device(self) -> str:
        return "/GPU:0" if self.kind == "gpu" else "/CPU:0"

    def describe(self) -> str:
        return f"{self.kind}:{self.name}"


@runtime_checkable
class FocusClassifier(Protocol):
    """Focused/defocused classification of whole frames (any size, mono/RGB, 8/16-bit).

    ``pixel_size_um`` is the frame's sampling in µm per pixel when known; classifiers
    trained at a physical sampling bring the frame to it (None: native pixels)."""

    @property
    def model_id(self) -> str:
        """``name@version`` plus the first 12 hex digits of the weights' SHA-256."""
        ...

    @property
    def device(self) -> DeviceInfo:
        """Where the classifier runs (logged at start, exported as a metric)."""
        ...

    @property
    def threshold(self) -> float:
        """p(focused) at or above which a frame is ``focused``."""
        ...

    @threshold.setter
    def threshold(self, value: float) -> None:
        """Change the threshold (a SIGHUP reload does); values outside (0, 1) are refused."""
        ...

    def classify(self, pixels: np.ndarray, *, pixel_size_um: float | None = None) -> Verdict: ...

    def classify_batch(
        self, frames: Sequence[np.ndarray], *, pixel_sizes: Sequence[float | None] | None = None
    ) -> list[Verdict]: ...


@runtime_checkable
class FrameReconstructor(Protocol):
    """Defocused frame in, reconstructed frame out, same shape, channels and dtype."""

    @property
    def model_id(self) -> str: ...

    @property
    def provenance(self) -> dict[str, object]:
        """Model name, version, weights SHA-256, architecture and tiling parameters."""
        ...

    @property
    def threads(self) -> int:
        """How many frames it reconstructs at once (a Dask cluster: its worker threads)."""
        ...

    def parameters_for(self, height: int, width: int) -> dict[str, object]:
        """The parameters a ``height x width`` frame is reconstructed with (for provenance)."""
        ...

    def reconstruct(self, pixels: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:
        """Release what it holds (a cluster connection); a no-op for local models."""
        ...
