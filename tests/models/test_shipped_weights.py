"""The shipped default models: present, verified against their cards, small enough to ship."""

import pytest

from refocusd.models.store import check_model, default_folder

MAX_SHIPPED_BYTES = 20 * 2**20


@pytest.mark.parametrize("kind", ["classifier", "reconstructor"])
def test_shipped_model_is_verified_and_under_20_mb(kind):
    card = check_model("default", kind)  # resolves, parses the card, checks the SHA-256
    weights = default_folder(kind) / card.weights_file
    assert weights.stat().st_size <= MAX_SHIPPED_BYTES
    assert card.kind == kind and card.training.seed is not None and card.training.command


def test_shipped_reconstructor_tiles_a_1604_frame_without_seams():
    """The shipped default on a 1604 px frame runs as 2 x 2 overlapping tiles of 836 px.
    Stitched, it must agree with the same network run on the whole frame in one window
    (the reference without any tile edge), with no step in the difference where tiles meet;
    cutting the tiles hard at the overlap centre instead is shown to leave one."""
    import numpy as np

    from refocusd.models import tiling
    from refocusd.models.preprocessing import to_network_range
    from refocusd.models.runtime import load_reconstructor
    from refocusd.models.synth.dataset import SynthRequest, render_item

    reconstructor = load_reconstructor("default", device="cpu")
    # A 10x defocused field rendered at 544 px (periodic) and repeated out to 1604 px: the
    # simulator's content at a fraction of the cost of rendering 1604 px.
    item = render_item(SynthRequest(kind="reconstructor", n=1, seed=77, size=544, objective="10x"), 0)
    field = next(v for k, v in item.frames.items() if k.startswith("input/"))
    frame = np.tile(field, (3, 3))[:1604, :1604]
    plan = tiling.plan_tiles(1604, 1604, tile=reconstructor.tile_for(1604, 1604))
    assert len(plan) == 4 and plan.xs == (0, 768)

    net_in, _ = to_network_range(frame)
    padded = np.pad(net_in, ((92, 92), (92, 92), (0, 0)), mode="symmetric")
    whole = reconstructor._model(padded[None], training=False).numpy()[0].mean(axis=-1)
    framed = tiling.pad_frame(net_in, plan)
    outputs = {p: reconstructor._run(tiling.window(framed, plan, p)[None].astype(np.float32))[0]
               for p in plan.positions}
    stitcher = tiling.Stitcher(plan, 3)  # what the runtime does with these tiles
    for position, out in outputs.items():
        stitcher.add(position, out)
    tiled = stitcher.result().mean(axis=-1)

    def worst_step(image: np.ndarray) -> float:
        """Largest column-to-column jump of (image - whole) inside the overlap band,
        relative to the typical jump elsewhere."""
        jumps = np.abs(np.diff(image - whole, axis=1)).mean(axis=0)
        return float(jumps[760:844].max() / np.median(jumps))

    assert np.abs(tiled - whole).mean() < 2.0  # grey levels of 255
    hard = whole.copy()
    cut = 802  # the centre of the 768..836 overlap
    for (y, x), out in outputs.items():
        out = out.mean(axis=-1)
        rows = slice(y, y + plan.tile)
        if x == 0:
            hard[rows, :cut] = out[:, :cut]
        else:
            hard[rows, cut:] = out[:, cut - x:]
    assert worst_step(hard) > 3.0  # a hard cut shows as a step ...
    assert worst_step(tiled) < 2.0  # ... the blended stitch does not
