"""Reject frames the classifier must not see; the reason goes to the ledger verbatim."""

from __future__ import annotations

import numpy as np

MAX_SIDE = 32_768


def frame_problem(pixels: object) -> str | None:
    """Return why ``pixels`` is not a usable frame, or ``None`` when it is."""
    if not isinstance(pixels, np.ndarray):
        return f"not an image array (got {type(pixels).__name__})"
    if pixels.size == 0:
        return "empty image: the camera or file returned no pixels"
    if pixels.ndim == 3 and pixels.shape[-1] not in (1, 3, 4):
        return f"unsupported channel count {pixels.shape[-1]} in shape {pixels.shape}"
    if pixels.ndim not in (2, 3):
        return f"expected a 2-D mono or 3-D colour image, got shape {pixels.shape}"
    if min(pixels.shape[:2]) < 16 or max(pixels.shape[:2]) > MAX_SIDE:
        return f"implausible frame size {pixels.shape[1]}x{pixels.shape[0]}"
    if pixels.dtype.kind not in "uif" or pixels.dtype.itemsize > 8:
        return f"unsupported pixel type {pixels.dtype}"
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        return "image contains NaN or infinite values"
    return None
