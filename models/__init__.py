"""The paper's networks (SDCNN classifier, ResUNet reconstructor), their runtime,
training, evaluation and the optical simulator that makes their training data.

TensorFlow is only imported by ``refocusd.models.runtime`` and the modules that build or
train networks, lazily, so importing this package is cheap.
"""

from refocusd.models.api import CropScore, FocusClassifier, FrameReconstructor, ModelError, Verdict

__all__ = ["CropScore", "FocusClassifier", "FrameReconstructor", "ModelError", "Verdict"]
