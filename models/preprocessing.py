"""Pixel conventions of the two networks. Pure numpy: no TensorFlow here.

Classifier (the paper's definition): the *whole* frame is resized bilinearly to 134x134
(``tf.image.resize``, half-pixel centres, no antialiasing), then standardised per image
(``tf.image.per_image_standardization``: ``(x - mean) / max(std, 1/sqrt(N))`` over all
pixels and channels). Mono frames are replicated to three channels; because resizing is
per channel and standardisation pools the channels, that equals standardising the mono
frame. Standardisation also makes the result independent of bit depth. The runtime does
this inside its compiled TensorFlow call; :func:`classifier_input` is the numpy reference.

Reconstructor: the network works in the paper's 8-bit range, 0..255, on three channels.
:func:`to_network_range` maps a frame there and returns the :class:`IntensityMap` that
:func:`from_network_range` uses to give the output the input's shape, channels and dtype:

- ``uint8``: unchanged (scale 1, offset 0);
- floats within [0, 1]: multiplied by 255;
- everything else (``uint16`` and other integers, other floats): the frame's own robust
  range, the 0.05th..99.95th percentiles, is stretched to 0..255. A 12-bit camera in a
  16-bit container would otherwise use 6 % of the network's range. The output is mapped
  back with the same line, rounded and clipped to the dtype's range.

Training code must use the same two functions so the network sees the same range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSIFIER_INPUT_SIZE = 134
NETWORK_MAX = 255.0
ROBUST_PERCENTILES = (0.05, 99.95)
_PERCENTILE_SAMPLES = 1 << 20  # percentiles from ~1 M evenly strided pixels: fast, stable


class PixelFormatError(ValueError):
    """The array is not a usable frame (wrong rank or channels, empty, NaN, bad dtype)."""


def as_hwc(pixels: np.ndarray) -> np.ndarray:
    """View of a frame as ``(H, W, C)`` with ``C`` 1 or 3, validated.

    Accepts ``(H, W)``, ``(H, W, 1)`` and ``(H, W, 3)``; integer or float pixels.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise PixelFormatError(
            f"expected a mono (H, W) / (H, W, 1) or RGB (H, W, 3) frame, got shape {arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise PixelFormatError(f"empty frame of shape {arr.shape}")
    kind = arr.dtype.kind
    if kind not in "uif":
        raise PixelFormatError(f"unsupported pixel type {arr.dtype} (need integers or floats)")
    if kind == "f" and not np.isfinite(arr).all():
        raise PixelFormatError("frame contains NaN or infinite pixel values")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``tf.image.resize(..., "bilinear", antialias=False)`` in numpy: half-pixel centres,
    edge-clamped. ``image``: ``(H, W, C)``; returns float32."""
    src = image.astype(np.float64, copy=False)
    ys = _sample_grid(image.shape[0], height)
    xs = _sample_grid(image.shape[1], width)
    y0, y1, wy = ys
    x0, x1, wx = xs
    top = src[y0][:, x0] * (1 - wx)[None, :, None] + src[y0][:, x1] * wx[None, :, None]
    bottom = src[y1][:, x0] * (1 - wx)[None, :, None] + src[y1][:, x1] * wx[None, :, None]
    return (top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]).astype(np.float32)


def _sample_grid(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = size_in / size_out
    centre = (np.arange(size_out) + 0.5) * scale - 0.5
    centre = np.clip(centre, 0, None)  # TF clamps the low side of the source coordinate
    lo = np.floor(centre).astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    lo = np.minimum(lo, size_in - 1)
    return lo, hi, centre - np.floor(centre)


def per_image_standardization(image: np.ndarray) -> np.ndarray:
    """``tf.image.per_image_standardization`` in numpy (float32)."""
    x = image.astype(np.float64, copy=False)
    std = max(float(x.std()), 1.0 / np.sqrt(x.size))
    return ((x - x.mean()) / std).astype(np.float32)


def classifier_input(pixels: np.ndarray) -> np.ndarray:
    """The SDCNN's ``(134, 134, 3)`` float32 input for one frame (numpy reference)."""
    hwc = as_hwc(pixels)
    resized = bilinear_resize(hwc, CLASSIFIER_INPUT_SIZE, CLASSIFIER_INPUT_SIZE)
    if resized.shape[2] == 1:
        resized = np.repeat(resized, 3, axis=2)
    return per_image_standardization(resized)


@dataclass(frozen=True, slots=True)
class IntensityMap:
    """``network = (pixel - offset) * scale``; how to give the output the input's form."""

    offset: float
    scale: float
    dtype: str
    channels: int
    squeeze: bool  # the input was (H, W): return (H, W)
    clip_unit: bool = False  # float input within [0, 1]: keep the output there

    def describe(self) -> dict[str, object]:
        return {"offset": self.offset, "scale": self.scale, "dtype": self.dtype}


def to_network_range(pixels: np.ndarray) -> tuple[np.ndarray, IntensityMap]:
    """``(H, W, 3)`` float32 in 0..255 for the ResUNet, and the map back (module docs)."""
    arr = np.asarray(pixels)
    hwc = as_hwc(arr)
    squeeze = arr.ndim == 2
    dtype = hwc.dtype
    clip_unit = False
    if dtype == np.uint8:
        offset, scale = 0.0, 1.0
    else:
        lo, hi = robust_range(hwc)
        if dtype.kind == "f" and lo >= 0.0 and float(hwc.max()) <= 1.0:
            offset, scale, clip_unit = 0.0, NETWORK_MAX, True
        else:
            offset, scale = lo, NETWORK_MAX / (hi - lo) if hi > lo else 1.0
    imap = IntensityMap(float(offset), float(scale), dtype.str, hwc.shape[2], squeeze, clip_unit)
    net = hwc.astype(np.float32)
    if offset != 0.0 or scale != 1.0:
        net -= np.float32(offset)
        net *= np.float32(scale)
    if net.shape[2] == 1:
        net = np.repeat(net, 3, axis=2)
    return net, imap


def from_network_range(output: np.ndarray, imap: IntensityMap) -> np.ndarray:
    """The network's ``(H, W, 3)`` 0..255 output in the input's shape, channels and dtype.

    Mono inputs get the mean of the three output channels.
    """
    out = np.asarray(output, dtype=np.float32)
    if out.ndim != 3 or out.shape[2] != 3:
        raise PixelFormatError(f"expected the network's (H, W, 3) output, got {out.shape}")
    if imap.channels == 1:
        out = out.mean(axis=2, keepdims=True)
    if imap.scale != 1.0 or imap.offset != 0.0:
        out = out / np.float32(imap.scale) + np.float32(imap.offset)
    dtype = np.dtype(imap.dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    elif imap.clip_unit:
        out = np.clip(out, 0.0, 1.0)
    result = out.astype(dtype)
    return result[:, :, 0] if imap.squeeze else result


def robust_range(hwc: np.ndarray) -> tuple[float, float]:
    """The 0.05th and 99.95th percentiles of a frame (from an even subsample)."""
    step = max(1, int(np.sqrt(hwc.shape[0] * hwc.shape[1] / _PERCENTILE_SAMPLES)))
    sample = hwc[::step, ::step].ravel()
    lo, hi = np.percentile(sample, ROBUST_PERCENTILES)
    return float(lo), float(hi)
