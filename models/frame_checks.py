"""The one frame validator: what counts as a frame, for every driver, the CLI, training and
the worker. The reason a frame is refused goes to the ledger (or the user) verbatim.

A frame is one mono ``(H, W)`` or RGB ``(H, W, 3)`` plane. :func:`as_frame` brings the
layouts files and cameras produce to that form by one set of rules: leading singleton axes
are dropped, planar RGB ``(3, H, W)`` is interleaved, an alpha channel is dropped and
``(H, W, 1)`` is squeezed. Anything else (a z-stack, a time series) is not one frame.
"""

from __future__ import annotations

import numpy as np

MAX_SIDE = 32_768
MIN_SIDE = 16


class InvalidFrame(ValueError):
    """The pixels are not a usable frame; the message is the reason."""


def as_frame(pixels: object) -> np.ndarray:
    """``pixels`` as a validated ``(H, W)`` or ``(H, W, 3)`` frame; :class:`InvalidFrame` if not."""
    if not isinstance(pixels, np.ndarray):
        raise InvalidFrame(f"not an image array (got {type(pixels).__name__})")
    if pixels.size == 0:
        raise InvalidFrame("empty image: the camera or file returned no pixels")
    while pixels.ndim > 2 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim == 3 and pixels.shape[0] in (3, 4) and pixels.shape[-1] not in (3, 4):
        pixels = np.moveaxis(pixels, 0, -1)  # planar RGB(A)
    if pixels.ndim == 3 and pixels.shape[-1] == 4:
        pixels = pixels[..., :3]  # alpha carries no focus information
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 3 and pixels.shape[-1] != 3:
        raise InvalidFrame(f"unsupported channel count {pixels.shape[-1]} in shape {pixels.shape}")
    if pixels.ndim != 2 and pixels.ndim != 3:
        raise InvalidFrame(f"expected a 2-D mono or 3-D colour image, got shape {pixels.shape}")
    if min(pixels.shape[:2]) < MIN_SIDE or max(pixels.shape[:2]) > MAX_SIDE:
        raise InvalidFrame(f"implausible frame size {pixels.shape[1]}x{pixels.shape[0]}")
    if pixels.dtype.kind not in "uif" or pixels.dtype.itemsize > 8:
        raise InvalidFrame(f"unsupported pixel type {pixels.dtype}")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise InvalidFrame("image contains NaN or infinite values")
    return pixels


def frame_problem(pixels: object) -> str | None:
    """Return why ``pixels`` is not a usable frame, or ``None`` when it is."""
    try:
        as_frame(pixels)
    except InvalidFrame as exc:
        return str(exc)
    return None
