"""SDCNN: the paper's focused/defocused classifier (Xue et al. 2021, Fig. S2).

Input: 134x134x3, already resized and standardised (``refocusd.models.preprocessing``
documents the definition; the runtime does it inside its compiled call). Output: softmax
over two classes, index 0 = focused (the paper's one-hot ``[1, 0]``), index 1 = defocused.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from refocusd.models.tf_import import tensorflow  # noqa: E402

tensorflow()  # TensorFlow (under keras) starts without its C++ chatter on stderr

import keras  # noqa: E402
from keras import layers  # noqa: E402

INPUT_SIZE = 134
PARAMETERS = 1_278_018
FOCUSED_INDEX = 0
DEFOCUSED_INDEX = 1


def build_sdcnn(name: str = "sdcnn") -> keras.Model:
    """Conv3x3(64)x2, pool 3; Conv3x3(128)x2, pool 3; Conv3x3(256)x2; GAP; Dense 512; Dense 2."""
    init = "he_normal"
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="frame")
    x = inputs
    for stage, filters in enumerate((64, 128, 256), start=1):
        for index in (1, 2):
            x = layers.Conv2D(
                filters, 3, padding="valid", activation="relu", kernel_initializer=init,
                name=f"conv{stage}_{index}",
            )(x)
        if stage < 3:
            x = layers.MaxPooling2D(pool_size=3, strides=3, name=f"pool{stage}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(512, activation="relu", kernel_initializer=init, name="fc")(x)
    x = layers.Dense(2, kernel_initializer=init, name="logits")(x)
    # Softmax in float32 so mixed precision cannot round probabilities to 0/1 early.
    outputs = layers.Activation("softmax", dtype="float32", name="p")(x)
    return keras.Model(inputs, outputs, name=name)
