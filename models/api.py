"""Typed interfaces between the networks and the rest of refocusd.

Nothing here imports TensorFlow: the daemon and CLI depend on these Protocols, and the
TensorFlow-owning runtime (``refocusd.models.runtime``) implements them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Label = Literal["focused", "defocused"]


class ModelError(RuntimeError):
    """A model could not be found, verified, loaded or run. The message names the file."""


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


@runtime_checkable
class FocusClassifier(Protocol):
    """Focused/defocused classification of whole frames (any size, mono/RGB, 8/16-bit)."""

    @property
    def model_id(self) -> str:
        """``name@version`` plus the first 12 hex digits of the weights' SHA-256."""
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

    def reconstruct(self, pixels: np.ndarray) -> np.ndarray: ...
