"""ResUNet: the paper's reconstruction network (Xue et al. 2021, section 4.4 and Fig. S6).

A valid-convolution U-Net (572x572x3 -> 388x388x3 at the paper's size) whose double
convolutions are pre-activation residual blocks::

    a  = ReLU(InsNorm(x))                      # pre-activation, shared by both paths
    y1 = Conv3x3(ReLU(InsNorm(Conv3x3(a))))    # main path, valid convolutions (-4 px)
    y2 = Conv1x1(Crop2(a))                     # shortcut from the cropped normalised input
    out = y1 + y2

Encoder filters ``b, 2b, 4b, 8b, 16b`` (``b`` = 64 in the paper) with 2x2 max pooling,
decoder Conv2DTranspose 2x2/2 + cropped skip + residual block, and a 1x1 head to three
channels clamped to [0, 255]. The instance norm (``layers.InstanceNormalization``)
normalises each sample over H, W and C jointly with scalar gamma/beta.

Block arrangement: the first encoder block sees the image itself and has no
pre-activation (the count of 32,427,685 fixes 17 two-parameter norms for 9 blocks, so one
block lacks its pre-norm; normalising a raw image and then ReLU-ing it would discard half
of it). The image is instead mapped 0..255 -> -1..1 by a parameter-free rescaling, so the
first convolution and the first shortcut see centred values.

Every convolution is "valid", so the network is fully convolutional: one set of weights
runs at any input size ``s`` with ``s % 16 == 12`` and ``s >= 188``; the output is
``s - 184`` (see :func:`valid_input_sizes`). The skip crops do not depend on ``s``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from refocusd.models.tf_import import tensorflow  # noqa: E402

tensorflow()  # TensorFlow (under keras) starts without its C++ chatter on stderr

import keras  # noqa: E402
from keras import layers  # noqa: E402

from refocusd.models.layers import InstanceNormalization  # noqa: E402
from refocusd.models.tiling import (  # noqa: E402
    MARGIN,
    PAPER_INPUT_SIZE,
    PAPER_OUTPUT_SIZE,
    is_valid_input_size,
    output_size,
    valid_input_sizes,
)

PAPER_BASE_FILTERS = 64
REDUCED_BASE_FILTERS = 16  # the shipped CPU default: same topology, 1/16 of the weights
PAPER_PARAMETERS = 32_427_685
DEPTH = 5  # encoder levels, the last one being the bottleneck

__all__ = [
    "DEPTH",
    "MARGIN",
    "PAPER_BASE_FILTERS",
    "PAPER_INPUT_SIZE",
    "PAPER_OUTPUT_SIZE",
    "PAPER_PARAMETERS",
    "REDUCED_BASE_FILTERS",
    "build_resunet",
    "is_valid_input_size",
    "output_size",
    "skip_crops",
    "valid_input_sizes",
]


def skip_crops() -> list[int]:
    """Pixels cropped per side from each encoder skip (shallowest first): [88, 40, 16, 4].

    Derived from the paper's 572 px input; the differences are the same at every valid size.
    """
    size = PAPER_INPUT_SIZE
    skips: list[int] = []
    for _ in range(DEPTH - 1):
        size -= 4
        skips.append(size)
        size //= 2
    size -= 4  # bottleneck block
    crops: list[int] = []
    for skip in reversed(skips):
        size *= 2
        crops.append((skip - size) // 2)
        size -= 4
    return list(reversed(crops))


def build_resunet(base_filters: int = PAPER_BASE_FILTERS, input_size: int | None = PAPER_INPUT_SIZE,
                  name: str | None = None) -> keras.Model:
    """The paper's ResUNet. ``input_size=None`` builds it for any valid square or
    rectangular size (the runtime and the trainer choose the tile)."""
    if base_filters < 1:
        raise ValueError(f"base_filters must be >= 1, got {base_filters}")
    if input_size is not None and not is_valid_input_size(input_size):
        raise ValueError(
            f"input_size {input_size} is not valid for the ResUNet: it must be >= 188 and "
            f"leave 12 when divided by 16 (e.g. 252, 380, 572)"
        )
    filters = [base_filters * 2**level for level in range(DEPTH)]
    inputs = keras.Input((input_size, input_size, 3), name="frame")
    # 0..255 -> -1..1 (no parameters): the first block has no normalisation of its own.
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)

    skips = []
    for level, width in enumerate(filters):
        x = _residual_block(x, width, preactivate=level > 0, name=f"enc{level + 1}")
        if level < DEPTH - 1:
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"enc{level + 1}_pool")(x)

    crops = skip_crops()
    for level in reversed(range(DEPTH - 1)):
        width = filters[level]
        up = layers.Conv2DTranspose(
            width, 2, strides=2, kernel_initializer="he_normal", name=f"dec{level + 1}_up"
        )(x)
        skip = layers.Cropping2D(crops[level], name=f"dec{level + 1}_skipcrop")(skips[level])
        x = layers.Concatenate(name=f"dec{level + 1}_concat")([skip, up])
        x = _residual_block(x, width, preactivate=True, name=f"dec{level + 1}")

    x = layers.Conv2D(3, 1, kernel_initializer="he_normal", name="head")(x)
    # Clamp to the 8-bit range; float32 so mixed precision does not quantise the output.
    outputs = layers.ReLU(max_value=255.0, dtype="float32", name="clamp")(x)
    return keras.Model(inputs, outputs, name=name or f"resunet{base_filters}")


def _residual_block(x: keras.KerasTensor, filters: int, *, preactivate: bool,
                    name: str) -> keras.KerasTensor:
    init = "he_normal"
    if preactivate:
        x = InstanceNormalization(name=f"{name}_norm1")(x)
        x = layers.ReLU(name=f"{name}_relu1")(x)
    main = layers.Conv2D(filters, 3, padding="valid", kernel_initializer=init,
                         name=f"{name}_conv1")(x)
    main = InstanceNormalization(name=f"{name}_norm2")(main)
    main = layers.ReLU(name=f"{name}_relu2")(main)
    main = layers.Conv2D(filters, 3, padding="valid", kernel_initializer=init,
                         name=f"{name}_conv2")(main)
    shortcut = layers.Cropping2D(2, name=f"{name}_crop")(x)
    shortcut = layers.Conv2D(filters, 1, kernel_initializer=init, name=f"{name}_shortcut")(shortcut)
    return layers.Add(name=f"{name}_add")([main, shortcut])
