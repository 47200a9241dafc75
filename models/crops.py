"""Crops at the trained sampling: where to look in a frame, and how to bring it to the net.

The crop classifier works at a fixed physical sampling (µm per pixel, recorded in the
model card). For a frame of known pixel size, a network crop of ``S`` px covers
``S * trained_um / pixel_um`` native pixels (at least ``S``: coarser frames are not
enlarged); the classifier picks K such squares, resamples
only those (cv2, area averaging when shrinking) and runs them through the network in one
batch. Pure numpy + OpenCV: no TensorFlow here, so training, evaluation and the runtime
share exactly this code.

Choosing crops (:func:`select_crops`) costs about a millisecond on a 2048² frame: it reads
a strided view (about 16 samples per crop side) and scores each candidate square by the
mean absolute high-pass of that view: structure of any kind, in focus or not, against a
flat background. The energy is capped at 6x its median, so a speck of saturated debris does
not outshine the field; a square has content when its score is well above what the
camera's own noise (estimated from neighbouring pixels) would give, or near the field's
best. The picks are spread over a grid of K cells laid over the field (rows and columns
follow the frame's aspect ratio); cells without content give their place to the next best
content elsewhere, overlapping earlier picks at most by half; a field without content
anywhere gets its single best square. So a sparse field with three cells is classified on
the cells, not on the empty substrate around them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

VIEW_SAMPLES = 16  # strided-view samples per crop side used for choosing crops
CONTENT_FRACTION = 0.25  # a candidate is content when above bg + this x (best - bg)
CAP_OVER_MEDIAN = 6.0  # structure energy is capped at this x its median (debris, specks)
CAP_QUANTILE = 0.995  # ... or at this quantile where the median is 0
NOISE_FACTOR = 2.0  # content: mean structure energy above this x pure noise's
NOISE_ROWS, NOISE_COLUMNS = 16, 512  # pixels sampled for the noise estimate
MAX_OVERLAP = 0.5  # fill-in picks may overlap earlier ones by at most this area fraction
MIN_NET_SIDE = 32  # smallest network input (frames smaller than a crop)
DEFOCUS_SCALE_UM = 10.0  # the network's defocus outputs are in units of 10 µm
OUTPUTS = 3  # per crop: focus logit, defocus mean, log sigma (defocus in DEFOCUS_SCALE_UM)
_CV2_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


@dataclass(frozen=True, slots=True)
class CropGeometry:
    """How one frame is cut: ``native`` px squares, resampled to ``net`` px."""

    native: int
    net: int
    pixel_size_um: float | None  # the frame's sampling (None: native pixels assumed)

    @property
    def scale(self) -> float:
        """Native pixels per network pixel."""
        return self.native / self.net


def crop_geometry(
    shape: tuple[int, int],
    *,
    input_size: int,
    trained_pixel_um: float | None,
    pixel_size_um: float | None,
) -> CropGeometry:
    """The crop sides for a ``shape`` frame; without both pixel sizes, native pixels."""
    height, width = shape[:2]
    if trained_pixel_um is None or pixel_size_um is None:
        native = float(input_size)
    else:
        if not pixel_size_um > 0:
            raise ValueError(f"pixel size must be > 0 µm, got {pixel_size_um}")
        # Shrink to the trained sampling, never enlarge: a frame coarser than the trained
        # sampling is used at its own pixels (upsampling adds no detail, and would make a
        # sharp 4x frame look like a blurred 10x one).
        native = input_size * max(1.0, trained_pixel_um / pixel_size_um)
    side = max(1, int(round(native)))
    if side <= min(height, width):
        return CropGeometry(side, input_size, pixel_size_um)
    # A frame smaller than one crop: one square as large as the frame allows, at the
    # same sampling (the network is fully convolutional).
    small = min(height, width)
    net = max(MIN_NET_SIDE, int(round(small * input_size / native)))
    return CropGeometry(small, net, pixel_size_um)


def _mono_view(pixels: np.ndarray, step: int) -> np.ndarray:
    view = pixels[::step, ::step]
    if view.ndim == 3:
        return view.mean(axis=2, dtype=np.float32)
    return view.astype(np.float32)


def _grid_shape(k: int, height: int, width: int) -> tuple[int, int]:
    rows = max(1, min(k, int(round(math.sqrt(k * height / max(width, 1))))))
    return rows, max(1, math.ceil(k / rows))


def _positions(last: int, stride: int) -> np.ndarray:
    """0, stride, 2*stride ... and ``last`` itself (the far edge is a candidate too)."""
    steps = np.arange(0, last + 1, stride)
    return steps if steps[-1] == last else np.append(steps, last)


def _overlap(a: tuple[int, int], b: tuple[int, int], side: int) -> float:
    dy = max(0, side - abs(a[0] - b[0]))
    dx = max(0, side - abs(a[1] - b[1]))
    return dy * dx / float(side * side)


def _noise_energy(pixels: np.ndarray) -> float:
    """Mean |high-pass| that pure camera noise would give in the strided view: 0.8 sigma,
    sigma from the median absolute difference of neighbouring pixels along a few rows
    (the differences are centred on 0, so their median is not subtracted)."""
    height = pixels.shape[0]
    rows = pixels[:: max(1, height // NOISE_ROWS), :NOISE_COLUMNS]
    if rows.ndim == 3:
        rows = rows[..., 0]
    d = np.abs(np.diff(rows.astype(np.float32), axis=1)).ravel()
    if d.size == 0:
        return 0.0
    mad = float(np.partition(d, d.size // 2)[d.size // 2])
    return 0.8 * 1.4826 * mad / math.sqrt(2.0)


def select_crops(pixels: np.ndarray, side: int, k: int) -> list[tuple[int, int]]:
    """Up to ``k`` top-left corners ``(y, x)`` of ``side``-px squares with content, spread
    over the field (see the module docstring). ``pixels``: ``(H, W)`` or ``(H, W, C)``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    height, width = pixels.shape[:2]
    side = min(side, height, width)
    step = max(1, side // VIEW_SAMPLES)
    view = _mono_view(pixels, step)
    vside = max(1, min(side // step, *view.shape))
    # Structure at and below the crop scale; a flat or smoothly lit background scores ~0.
    blur = max(3, (vside // 2) | 1)
    energy = np.abs(view - cv2.blur(view, (blur, blur), borderType=cv2.BORDER_REFLECT))
    # A speck of saturated debris must not make the rest of the field look empty: energy is
    # capped at a few times the field's median (its high quantile where the median is 0).
    sample = energy[::2, ::2].ravel()  # a quarter of the view is plenty for two quantiles
    middle, high = sample.size // 2, int(CAP_QUANTILE * (sample.size - 1))
    ranked = np.partition(sample, (middle, high))
    cap = CAP_OVER_MEDIAN * float(ranked[middle]) or float(ranked[high])
    if cap > 0:
        np.minimum(energy, cap, out=energy)
    # Mean energy of every vside x vside window, at its top-left corner.
    window = cv2.boxFilter(energy, -1, (vside, vside), anchor=(0, 0), normalize=True,
                           borderType=cv2.BORDER_CONSTANT)
    max_y, max_x = view.shape[0] - vside, view.shape[1] - vside
    stride = max(1, vside // 4)
    ys, xs = _positions(max_y, stride), _positions(max_x, stride)
    scores = window[np.ix_(ys, xs)]
    flat = scores.ravel()
    order = np.argsort(flat)[::-1]
    best, background = float(flat[order[0]]), float(np.median(flat))
    # Content: well above the camera's own noise, or near the field's best. Either alone
    # fails: the noise test cannot rank, and one bright speck sets the best too high.
    threshold = min(background + CONTENT_FRACTION * (best - background),
                    max(NOISE_FACTOR * _noise_energy(pixels), 1e-6 * abs(float(view.mean()))))
    content = order[(flat[order] >= threshold) & (flat[order] > 0)]
    if content.size == 0:
        content = order[:1]
    iy, ix = np.divmod(content, len(xs))
    cy = np.minimum(ys[iy] * step, height - side)
    cx = np.minimum(xs[ix] * step, width - side)
    rows, cols = _grid_shape(k, height, width)
    cell = (np.minimum(rows - 1, (cy + side // 2) * rows // height) * cols
            + np.minimum(cols - 1, (cx + side // 2) * cols // width))
    _, first = np.unique(cell, return_index=True)  # content is best first: each cell's best
    cell_best = np.sort(first)
    picks: list[tuple[int, int]] = []

    def take(indices: np.ndarray) -> bool:
        for i in indices:
            candidate = (int(cy[i]), int(cx[i]))
            if all(_overlap(candidate, p, side) <= MAX_OVERLAP for p in picks):
                picks.append(candidate)
                if len(picks) == k:
                    return True
        return False

    # Spread first (each grid cell's best, best cells first), then fill in with more
    # content elsewhere, overlapping earlier picks by at most half.
    if not take(cell_best):
        take(np.arange(len(content)))
    return picks


def extract_crops(
    pixels: np.ndarray, corners: list[tuple[int, int]], geometry: CropGeometry
) -> np.ndarray:
    """``(len(corners), net, net, 1)`` float32 crops, each standardised on its own
    (zero mean, unit variance: independent of gain, offset and bit depth)."""
    side, net = geometry.native, geometry.net
    out = np.empty((len(corners), net, net), dtype=np.float32)
    interpolation = cv2.INTER_AREA if side > net else cv2.INTER_LINEAR
    for i, (y, x) in enumerate(corners):
        crop = pixels[y : y + side, x : x + side]
        if crop.ndim == 3:
            crop = crop.mean(axis=2, dtype=np.float32) if crop.shape[2] > 1 else crop[:, :, 0]
        if crop.dtype not in _CV2_DTYPES:
            crop = crop.astype(np.float32)
        if side != net:
            crop = cv2.resize(np.ascontiguousarray(crop), (net, net), interpolation=interpolation)
        out[i] = crop
    mean = out.mean(axis=(1, 2), keepdims=True)
    std = out.std(axis=(1, 2), keepdims=True)
    floor = 1e-3 * np.maximum(np.abs(mean), 1.0)
    out -= mean
    out /= np.maximum(std, floor)
    return out[..., None]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One frame's answer from its crops."""

    logit: float
    defocus_um: float | None
    defocus_sigma_um: float | None

    @property
    def p_focused(self) -> float:
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, self.logit))))


def crop_probabilities(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))


def aggregate(logits: np.ndarray, mu: np.ndarray | None = None,
              log_sigma: np.ndarray | None = None) -> Aggregate:
    """Mean logit over the crops; defocus as the inverse-variance weighted mean of the
    crops' estimates, with a sigma that keeps the typical single-crop uncertainty (crops
    of one field are not independent) plus the crops' disagreement."""
    logit = float(np.mean(logits))
    if mu is None or log_sigma is None:
        return Aggregate(logit, None, None)
    mu_um = np.asarray(mu, np.float64) * DEFOCUS_SCALE_UM
    sigma_um = np.exp(np.clip(np.asarray(log_sigma, np.float64), -8.0, 8.0)) * DEFOCUS_SCALE_UM
    w = 1.0 / np.square(sigma_um)
    mean = float(np.sum(w * mu_um) / np.sum(w))
    spread = float(np.sum(w * np.square(mu_um - mean)) / np.sum(w))
    sigma = math.sqrt(len(w) / float(np.sum(w)) + spread)
    return Aggregate(logit, mean, sigma)
