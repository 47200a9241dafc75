"""The paper's two networks: parameter counts, shapes, layer arrangement, custom layer."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from refocusd.models.layers import InstanceNormalization
from refocusd.models.resunet import (
    PAPER_PARAMETERS,
    REDUCED_BASE_FILTERS,
    build_resunet,
    skip_crops,
    valid_input_sizes,
)
from refocusd.models.sdcnn import PARAMETERS, build_sdcnn


def resunet_parameters(b: int) -> int:
    """Independent count from the paper's description: 9 residual blocks (3x3, 3x3, 1x1
    shortcut, all with bias), 17 two-parameter instance norms, 4 transposed 2x2 convs and
    the 1x1 head to three channels."""

    def block(cin: int, f: int) -> int:
        return (9 * cin * f + f) + (9 * f * f + f) + (cin * f + f)

    filters = [b * 2**i for i in range(5)]
    total, cin = 0, 3
    for f in filters:
        total += block(cin, f)
        cin = f
    for f in reversed(filters[:4]):
        total += 4 * cin * f + f  # Conv2DTranspose 2x2
        total += block(2 * f, f)  # after concatenating the cropped skip
        cin = f
    return total + 17 * 2 + (b * 3 + 3)


def test_sdcnn_matches_the_paper() -> None:
    model = build_sdcnn()
    assert model.count_params() == PARAMETERS == 1_278_018
    assert model.input_shape == (None, 134, 134, 3)
    assert model.output_shape == (None, 2)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [64, 64, 128, 128, 256, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == "valid" for c in convs)
    assert all(isinstance(c.kernel_initializer, keras.initializers.HeNormal) for c in convs)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [p.pool_size for p in pools] == [(3, 3), (3, 3)]
    assert [p.strides for p in pools] == [(3, 3), (3, 3)]
    assert any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in model.layers)
    p = model(np.random.default_rng(0).normal(size=(2, 134, 134, 3)).astype("float32")).numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_paper_resunet_has_32_427_685_parameters() -> None:
    model = build_resunet(64, 572)
    assert model.count_params() == PAPER_PARAMETERS == 32_427_685 == resunet_parameters(64)
    assert model.input_shape == (None, 572, 572, 3)
    assert model.output_shape == (None, 388, 388, 3)
    norms = [layer for layer in model.layers if isinstance(layer, InstanceNormalization)]
    assert len(norms) == 17
    assert all([w.shape for w in n.weights] == [(), ()] for n in norms)
    widths = sorted({layer.filters for layer in model.layers
                     if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)})
    assert widths == [64, 128, 256, 512, 1024]


def test_reduced_resunet_is_the_same_topology_at_a_quarter_width() -> None:
    model = build_resunet(REDUCED_BASE_FILTERS, 572)
    assert model.count_params() == resunet_parameters(REDUCED_BASE_FILTERS)
    assert 1_900_000 < model.count_params() < 2_100_000
    assert model.output_shape == (None, 388, 388, 3)
    paper = build_resunet(64, 572)
    assert [type(layer) for layer in model.layers] == [type(layer) for layer in paper.layers]


def test_skip_crops_and_valid_sizes() -> None:
    assert skip_crops() == [88, 40, 16, 4]
    sizes = valid_input_sizes(180, 600)
    assert 188 in sizes and 252 in sizes and 572 in sizes
    assert 570 not in sizes and 574 not in sizes and 172 not in sizes
    assert all(s % 16 == 12 for s in sizes)
    with pytest.raises(ValueError, match="not valid"):
        build_resunet(4, 570)


def test_fully_convolutional_resunet_runs_trained_weights_at_other_sizes() -> None:
    fixed = build_resunet(4, 572)
    free = build_resunet(4, None)
    free.set_weights(fixed.get_weights())
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, size=(1, 572, 572, 3)).astype("float32")
    np.testing.assert_allclose(free(x).numpy(), fixed(x).numpy(), rtol=1e-4, atol=1e-3)
    small = rng.uniform(0, 255, size=(2, 252, 252, 3)).astype("float32")
    out = free(small).numpy()
    assert out.shape == (2, 68, 68, 3)
    assert out.min() >= 0.0 and out.max() <= 255.0


def test_output_is_clamped_to_the_8_bit_range() -> None:
    model = build_resunet(2, 188)
    # Huge head weights push raw outputs far outside 0..255 both ways.
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 0 + 1e4 * np.sign(np.random.default_rng(2).normal(size=kernel.shape)),
                      bias])
    out = model(np.random.default_rng(3).uniform(0, 255, (1, 188, 188, 3)).astype("float32"))
    out = out.numpy()
    assert out.min() == 0.0 and out.max() == 255.0


def test_instance_norm_pools_height_width_and_channels() -> None:
    layer = InstanceNormalization()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 8, 9, 5)).astype("float32")
    x[1] = x[1] * 7 + 3
    x[0, ..., 0] += 10  # one channel offset: joint statistics must not remove it per channel
    y = layer(x).numpy()
    for sample in y:
        assert abs(sample.mean()) < 1e-4
        assert abs(sample.std() - 1) < 1e-3
    assert y[0, ..., 0].mean() > 1.0  # a per-channel norm would have centred it
    assert [w.shape for w in layer.weights] == [(), ()]
    clone = InstanceNormalization.from_config(layer.get_config())
    assert clone.epsilon == layer.epsilon
