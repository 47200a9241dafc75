"""Custom Keras layers of the paper's networks, registered so ``.keras`` files load in safe mode.

Importing this module imports Keras (and so TensorFlow): only the network builders, the
model store and the runtime import it, lazily.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from refocusd.models.tf_import import tensorflow  # noqa: E402

tensorflow()  # TensorFlow (under keras) starts without its C++ chatter on stderr

import keras  # noqa: E402
from keras import ops  # noqa: E402


@keras.saving.register_keras_serializable(package="refocusd")
class InstanceNormalization(keras.layers.Layer):
    """The paper's "instance norm": each sample normalised over H, W and C *jointly*.

    Unlike the usual per-channel instance norm, the authors' layer takes one mean and one
    variance per sample and has a single scalar ``gamma`` and ``beta`` (2 parameters), which
    is what makes the ResUNet add up to exactly 32,427,685 parameters.
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(), initializer="zeros")

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        # Statistics in float32 even under mixed precision: a 572x572x64 sum overflows fp16.
        x = ops.cast(inputs, "float32")
        mean, variance = ops.moments(x, axes=[1, 2, 3], keepdims=True)
        # Fold the affine into one per-sample scale and shift: two passes over the (large)
        # feature map instead of four.
        scale = ops.cast(self.gamma, "float32") * ops.rsqrt(variance + self.epsilon)
        shift = ops.cast(self.beta, "float32") - mean * scale
        return ops.cast(x * scale + shift, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "epsilon": self.epsilon}
