"""Tiling with symmetric padding and seamless raised-cosine stitching (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from refocusd.models.tiling import (
    MARGIN,
    apply_tiled,
    choose_tile,
    pad_frame,
    plan_tiles,
    ramp_weights,
    valid_input_sizes,
    valid_tiles,
    window,
)

TILE = 388


def centre_crop(batch: np.ndarray) -> np.ndarray:
    """An identity-like network: the window's centre, exactly what a perfect ResUNet
    would return for an in-focus input."""
    return batch[:, MARGIN:-MARGIN, MARGIN:-MARGIN, :]


def ramp_frame(height: int, width: int, channels: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.05 * yy + 0.11 * xx + 10 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
    return np.stack([base + 3 * c for c in range(channels)], axis=-1).astype(np.float32)


@pytest.mark.parametrize(
    ("height", "width", "channels"),
    [(512, 512, 1), (1000, 1300, 3), (1604, 1604, 1), (150, 260, 3), (388, 777, 1)],
)
def test_identity_through_the_tiler_returns_the_frame(height: int, width: int,
                                                      channels: int) -> None:
    frame = ramp_frame(height, width, channels)
    out = apply_tiled(frame, centre_crop, tile=TILE, overlap=64, batch_size=3)
    assert out.shape == frame.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, frame, rtol=0, atol=1e-3)


def test_plan_covers_the_frame_with_at_least_the_requested_overlap() -> None:
    for length in (388, 389, 700, 1604, 2048, 4000):
        plan = plan_tiles(length, 512, tile=TILE, overlap=64)
        ys = plan.ys
        assert ys[0] == 0 and ys[-1] + TILE == max(length, TILE)
        assert all(b - a <= TILE - 64 for a, b in zip(ys, ys[1:], strict=False))
        assert len(set(ys)) == len(ys)
    assert len(plan_tiles(1604, 1604, tile=TILE, overlap=64)) == 25


def test_windows_are_the_frame_padded_92_px_symmetrically() -> None:
    frame = ramp_frame(500, 600, 3)
    plan = plan_tiles(500, 600, tile=TILE, overlap=64)
    padded = pad_frame(frame, plan)
    expected = np.pad(frame, ((MARGIN, MARGIN), (MARGIN, MARGIN), (0, 0)), mode="symmetric")
    first = window(padded, plan, (0, 0))
    assert first.shape == (TILE + 2 * MARGIN, TILE + 2 * MARGIN, 3)
    np.testing.assert_array_equal(first, expected[: TILE + 184, : TILE + 184])
    # Border context is the mirror image of the frame's own edge.
    np.testing.assert_array_equal(first[MARGIN - 1, MARGIN:], frame[0, : TILE + MARGIN])


def test_stitching_leaves_no_step_where_tiles_disagree() -> None:
    """Each tile is shifted by its own offset (a network whose tiles disagree). Hard
    stitching would show the full offset difference as a step at the tile borders; the
    raised-cosine blend spreads it over the overlap."""
    frame = ramp_frame(1000, 1300, 1)
    offsets = iter(np.random.default_rng(5).uniform(-20, 20, size=1000))

    def disagreeing(batch: np.ndarray) -> np.ndarray:
        return np.stack([tile + next(offsets) for tile in centre_crop(batch)])

    out = apply_tiled(frame, disagreeing, tile=TILE, overlap=64, batch_size=2)
    error = (out - frame)[..., 0]
    max_step = max(np.abs(np.diff(error, axis=0)).max(), np.abs(np.diff(error, axis=1)).max())
    # Offsets differ by up to 40; a sin² ramp over >= 64 px changes at most pi/2/64 per px.
    assert max_step < 40 * (np.pi / 2) / 64 + 1e-3
    assert np.abs(error).max() > 5  # the offsets are really there (the test can fail)


def test_ramp_weights_form_a_partition_of_unity_across_an_overlap() -> None:
    down = ramp_weights(TILE, 0, 64)
    up = ramp_weights(TILE, 64, 0)
    np.testing.assert_allclose(down[-64:] + up[:64], 1.0, atol=1e-12)
    assert (down > 0).all() and (up > 0).all()
    assert down[0] == 1.0 and up[-1] == 1.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        plan_tiles(0, 10)
    with pytest.raises(ValueError):
        plan_tiles(100, 100, tile=388, overlap=388)
    with pytest.raises(ValueError, match="tile output has shape"):
        apply_tiled(np.zeros((50, 50, 1), np.float32), lambda b: b[:, :10, :10])
    assert valid_input_sizes(500, 600) == [508, 524, 540, 556, 572, 588]


def test_choose_tile_needs_the_fewest_window_pixels() -> None:
    def cost(height: int, width: int, tile: int) -> int:
        plan = plan_tiles(height, width, tile=tile, overlap=64)
        return len(plan) * plan.window**2

    tiles = valid_tiles()
    assert tiles[0] == 388 and all(t % 16 == 4 for t in tiles)
    for height, width in [(1604, 1604), (2048, 2048), (512, 700), (300, 200), (1000, 3000)]:
        chosen = choose_tile(height, width, overlap=64)
        assert chosen in tiles
        assert cost(height, width, chosen) == min(cost(height, width, t) for t in tiles)
    assert choose_tile(1604, 1604) == 836
    assert choose_tile(300, 200) == 388


def test_big_tiles_stitch_exactly_too() -> None:
    frame = ramp_frame(1604, 1604, 1)
    out = apply_tiled(frame, centre_crop, tile=836, overlap=64, batch_size=1)
    np.testing.assert_allclose(out, frame, rtol=0, atol=1e-3)
