"""Crop networks: focus logit + signed defocus with its uncertainty, from one crop.

Both take ``(S, S, 1)`` crops at the trained sampling, standardised per crop
(:mod:`refocusd.models.crops`), and are fully convolutional up to a global average pool
(any ``S`` >= 32 works; frames smaller than one crop come in smaller). Three linear
float32 outputs per crop: ``[focus logit, defocus mean, log sigma]``, the defocus in
units of ``crops.DEFOCUS_SCALE_UM`` (10 µm), signed as the Verdict's ``defocus_um``.

- ``focusnet`` (the default): a strided 5x5 stem and depthwise-separable stages at 1/2 ..
  1/16 resolution, about 30 k parameters and 7 M multiply-adds per 128-px crop, in the
  spirit of FocusLiteNN (MICCAI 2020): focus is a local, low-level property, and the crops
  carry the field's spread.
- ``sdcnn-crops``: the paper's SDCNN body (Xue et al. 2021: Conv3x3 64x2, pool 3, 128x2,
  pool 3, 256x2, GAP, Dense 512) on the same crops with the same three outputs, for
  comparison and for machines with time to spare (about 1.3 M parameters).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from refocusd.models.crops import OUTPUTS  # noqa: E402

CROP_ARCHITECTURES = ("focusnet", "sdcnn-crops")


def _head(x: keras.KerasTensor, width: int) -> keras.KerasTensor:
    x = layers.Dense(width, activation="relu", name="fc")(x)
    return layers.Dense(OUTPUTS, dtype="float32", name="focus_defocus")(x)


def build_focusnet(width: int = 16, name: str = "focusnet") -> keras.Model:
    """Stem Conv5x5/2 (w); SepConv3x3/2 (2w), SepConv3x3 (2w); SepConv3x3/2 (4w),
    SepConv3x3 (4w); SepConv3x3/2 (8w); GAP; Dense 4w; Dense 3."""
    inputs = keras.Input((None, None, 1), name="crop")
    x = layers.Conv2D(width, 5, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    plan = ((2, 2), (2, 1), (4, 2), (4, 1), (8, 2))
    for i, (mult, stride) in enumerate(plan, start=1):
        x = layers.SeparableConv2D(width * mult, 3, strides=stride, padding="same",
                                   use_bias=False, name=f"sep{i}")(x)
        x = layers.BatchNormalization(name=f"sep{i}_bn")(x)
        x = layers.ReLU(name=f"sep{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, _head(x, width * 4), name=name)


def build_sdcnn_crops(name: str = "sdcnn-crops") -> keras.Model:
    """The paper's SDCNN layers on 1-channel crops, with the crop networks' 3 outputs."""
    init = "he_normal"
    inputs = keras.Input((None, None, 1), name="crop")
    x = inputs
    for stage, filters in enumerate((64, 128, 256), start=1):
        for index in (1, 2):
            x = layers.Conv2D(filters, 3, padding="valid", activation="relu",
                              kernel_initializer=init, name=f"conv{stage}_{index}")(x)
        if stage < 3:
            x = layers.MaxPooling2D(pool_size=3, strides=3, name=f"pool{stage}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, _head(x, 512), name=name)


def build_crop_network(architecture: str, *, width: int = 16) -> keras.Model:
    if architecture == "focusnet":
        return build_focusnet(width)
    if architecture == "sdcnn-crops":
        return build_sdcnn_crops()
    raise ValueError(f"unknown crop architecture {architecture!r} (known: {', '.join(CROP_ARCHITECTURES)})")
