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
class Verdict:
    """The classifier's answer for one frame."""

    p_focused: float
    label: Label
    model_id: str
    latency_s: float

    def as_dict(self) -> dict[str, object]:
        return {
            "p_focused": round(self.p_focused, 6),
            "label": self.label,
            "model": self.model_id,
            "latency_ms": round(self.latency_s * 1000, 3),
        }


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
    """Focused/defocused classification of whole frames (any size, mono/RGB, 8/16-bit)."""

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

    def classify(self, pixels: np.ndarray) -> Verdict: ...

    def classify_batch(self, frames: Sequence[np.ndarray]) -> list[Verdict]: ...


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
