"""Tiling of large frames for the ResUNet, and seamless stitching. Pure numpy.

The network maps a window of ``tile + 2 * MARGIN`` pixels to the ``tile`` pixels in its
centre (valid convolutions eat 92 px per side). A frame of any size is covered by a grid of
output tiles that overlap by at least ``overlap`` pixels, evenly spaced. The whole frame is
padded by ``MARGIN`` px per side in numpy's ``"symmetric"`` mode (the paper pads its 388 px
tiles the same way), so border tiles see the paper's mirrored context while interior tiles
see their real neighbourhood — which makes neighbouring predictions agree where they overlap.

Tiles are blended with raised-cosine (sin²) ramps across each overlap and normalised by
the summed weights, so a tile's own edge never shows as a step in the stitched frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

MARGIN = 92  # pixels the ResUNet's valid convolutions remove per side
PAPER_INPUT_SIZE = 572
PAPER_OUTPUT_SIZE = PAPER_INPUT_SIZE - 2 * MARGIN  # 388
MIN_INPUT_SIZE = 188  # smallest window whose bottleneck still has one pixel
DEFAULT_OVERLAP = 64
# Largest tile chosen automatically for fully convolutional models: a 1292 px window keeps
# one base-16 feature map near 100 MB (CPU) and the paper-size network within a few GB (GPU).
MAX_AUTO_TILE = 1108


def is_valid_input_size(size: int) -> bool:
    """Whether the ResUNet runs at ``size`` (four 2x poolings of valid-conv features)."""
    return size >= MIN_INPUT_SIZE and size % 16 == PAPER_INPUT_SIZE % 16


def output_size(input_size: int) -> int:
    """ResUNet output side for an input side (``input_size - 184``)."""
    if not is_valid_input_size(input_size):
        raise ValueError(f"{input_size} is not a valid ResUNet input size")
    return input_size - 2 * MARGIN


def valid_input_sizes(minimum: int = MIN_INPUT_SIZE, maximum: int = 1036) -> list[int]:
    """Valid ResUNet input sides in ``[minimum, maximum]``: 188, 204, ..., 252, ..., 572, ..."""
    return [s for s in range(max(minimum, MIN_INPUT_SIZE), maximum + 1) if is_valid_input_size(s)]


@dataclass(frozen=True, slots=True)
class TilePlan:
    """Output tiles covering an ``height x width`` frame.

    ``ys``/``xs`` are tile origins in frame coordinates; a frame smaller than one tile is
    mirrored out to ``tile`` at the bottom/right and cropped back after stitching.
    """

    height: int
    width: int
    tile: int
    overlap: int
    margin: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def window(self) -> int:
        """Side of the network input for one tile."""
        return self.tile + 2 * self.margin

    @property
    def extended_height(self) -> int:
        return max(self.height, self.tile)

    @property
    def extended_width(self) -> int:
        return max(self.width, self.tile)

    @property
    def positions(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


def plan_tiles(
    height: int,
    width: int,
    *,
    tile: int = PAPER_OUTPUT_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    margin: int = MARGIN,
) -> TilePlan:
    """Evenly spaced tiles overlapping by at least ``overlap`` pixels."""
    if height < 1 or width < 1:
        raise ValueError(f"cannot tile an empty frame of {height}x{width}")
    if tile < 1 or margin < 0:
        raise ValueError(f"tile must be >= 1 and margin >= 0, got {tile} and {margin}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    return TilePlan(
        height, width, tile, overlap, margin,
        _origins(max(height, tile), tile, overlap), _origins(max(width, tile), tile, overlap),
    )


def valid_tiles(minimum: int = PAPER_OUTPUT_SIZE, maximum: int = MAX_AUTO_TILE) -> list[int]:
    """Output tile sides a fully convolutional ResUNet can produce in ``[minimum, maximum]``."""
    return [s - 2 * MARGIN for s in valid_input_sizes(minimum + 2 * MARGIN, maximum + 2 * MARGIN)]


def choose_tile(height: int, width: int, *, overlap: int = DEFAULT_OVERLAP,
                minimum: int = PAPER_OUTPUT_SIZE, maximum: int = MAX_AUTO_TILE) -> int:
    """The output tile that needs the fewest network pixels to cover a frame.

    Each tile costs its whole window, ``(tile + 184)²``, so a 1604 px frame takes 25 paper
    tiles (8.2 M window pixels) but 4 tiles of 836 (4.2 M). Ties go to the smaller tile.
    """
    def cost(tile: int) -> int:
        plan = plan_tiles(height, width, tile=tile, overlap=overlap)
        return len(plan) * plan.window**2

    return min(valid_tiles(minimum, maximum), key=lambda t: (cost(t), t))


def _origins(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    if length <= tile:
        return (0,)
    count = math.ceil((length - overlap) / (tile - overlap))
    count = max(count, 2)
    step = (length - tile) / (count - 1)
    return tuple(int(round(i * step)) for i in range(count))


def pad_frame(image: np.ndarray, plan: TilePlan) -> np.ndarray:
    """``(H, W, C)`` frame mirrored by ``margin`` per side (plus up to ``tile`` at the end)."""
    if image.ndim != 3 or image.shape[:2] != (plan.height, plan.width):
        raise ValueError(f"expected a ({plan.height}, {plan.width}, C) frame, got {image.shape}")
    m = plan.margin
    extra_y = plan.extended_height - plan.height
    extra_x = plan.extended_width - plan.width
    # numpy mirrors repeatedly when a pad is wider than the frame, so tiny frames work too.
    return np.pad(image, ((m, m + extra_y), (m, m + extra_x), (0, 0)), mode="symmetric")


def window(padded: np.ndarray, plan: TilePlan, position: tuple[int, int]) -> np.ndarray:
    """The network input for the tile at ``position`` (a view into ``padded``)."""
    y, x = position
    return padded[y : y + plan.window, x : x + plan.window]


def ramp_weights(tile: int, before: int, after: int) -> np.ndarray:
    """1-D blending weights: sin² ramps over the ``before``/``after`` overlaps, 1 elsewhere.

    Ramps are capped at half a tile so they never collide; every weight is > 0.
    """
    weights = np.ones(tile, dtype=np.float64)
    for length, sl in ((before, slice(None)), (after, slice(None, None, -1))):
        length = min(length, tile // 2)
        if length > 0:
            ramp = np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2
            weights[sl][:length] *= ramp
    return weights


def _axis_weights(origins: tuple[int, ...], tile: int) -> list[np.ndarray]:
    out = []
    for i, origin in enumerate(origins):
        before = origins[i - 1] + tile - origin if i > 0 else 0
        after = origin + tile - origins[i + 1] if i + 1 < len(origins) else 0
        out.append(ramp_weights(tile, before, after))
    return out


class Stitcher:
    """Accumulates weighted output tiles; :meth:`result` divides by the summed weights."""

    def __init__(self, plan: TilePlan, channels: int) -> None:
        self.plan = plan
        shape = (plan.extended_height, plan.extended_width)
        self._sum = np.zeros((*shape, channels), dtype=np.float32)
        self._weight = np.zeros(shape, dtype=np.float32)
        self._wy = dict(zip(plan.ys, _axis_weights(plan.ys, plan.tile), strict=True))
        self._wx = dict(zip(plan.xs, _axis_weights(plan.xs, plan.tile), strict=True))

    def add(self, position: tuple[int, int], tile: np.ndarray) -> None:
        t = self.plan.tile
        if tile.shape[:2] != (t, t) or tile.shape[2] != self._sum.shape[2]:
            raise ValueError(
                f"tile output has shape {tile.shape}, expected ({t}, {t}, {self._sum.shape[2]})"
            )
        y, x = position
        w = np.outer(self._wy[y], self._wx[x]).astype(np.float32)
        self._sum[y : y + t, x : x + t] += tile * w[..., None]
        self._weight[y : y + t, x : x + t] += w

    def result(self) -> np.ndarray:
        out = self._sum / self._weight[..., None]
        return out[: self.plan.height, : self.plan.width]


def batches(plan: TilePlan, batch_size: int) -> Iterator[list[tuple[int, int]]]:
    positions = plan.positions
    for start in range(0, len(positions), batch_size):
        yield positions[start : start + batch_size]


def apply_tiled(
    image: np.ndarray,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    tile: int = PAPER_OUTPUT_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    margin: int = MARGIN,
    batch_size: int = 4,
) -> np.ndarray:
    """Run ``fn`` (``(N, window, window, C)`` -> ``(N, tile, tile, C')``) over ``image``
    (``(H, W, C)``) tile by tile, in batches, and stitch the result (``(H, W, C')`` float32)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    plan = plan_tiles(image.shape[0], image.shape[1], tile=tile, overlap=overlap, margin=margin)
    padded = pad_frame(image, plan)
    stitcher: Stitcher | None = None
    for group in batches(plan, batch_size):
        inputs = np.stack([window(padded, plan, p) for p in group])
        outputs = np.asarray(fn(inputs))
        if outputs.ndim != 4 or outputs.shape[0] != len(group):
            raise ValueError(f"tile function returned shape {outputs.shape} for {len(group)} tiles")
        if stitcher is None:
            stitcher = Stitcher(plan, outputs.shape[3])
        for position, out in zip(group, outputs, strict=True):
            stitcher.add(position, out)
    assert stitcher is not None  # a plan always has at least one tile
    return stitcher.result()
