"""The model card: ``MODEL/model.json`` beside the Keras file ``MODEL/model.keras``.

A model is a folder. The card says what the network is (kind, architecture, widths), how
its input is prepared, what it was trained on and how (so it can be made again), how well
it did, which library versions wrote it and the SHA-256 of the weights file, which
:func:`refocusd.models.store.load_keras` checks before loading anything.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CARD_FILE = "model.json"
WEIGHTS_FILE = "model.keras"
CARD_FORMAT = "refocusd.model/1"

ModelKind = Literal["classifier", "reconstructor"]

CLASSIFIER_PREPROCESSING = (
    "whole frame bilinear resize to 134x134 (tf.image.resize), mono replicated to 3 "
    "channels, tf.image.per_image_standardization"
)
RECONSTRUCTOR_PREPROCESSING = (
    "0..255 range (uint8 as is; [0,1] floats x255; otherwise 0.05-99.95 percentile range "
    "stretched to 0..255), mono replicated to 3 channels, 388 px output tiles padded 92 px "
    "per side in symmetric mode, raised-cosine blending of overlaps"
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """Network input: side in pixels (``None``: fully convolutional), channels, recipe.

    Crop classifiers also record the sampling they were trained at (``pixel_size_um``,
    µm per network pixel) and how many crops a frame gets by default (``crops``)."""

    size: int | None
    channels: int = 3
    preprocessing: str
    output_size: int | None = None
    pixel_size_um: float | None = Field(None, gt=0)
    crops: int | None = Field(None, ge=1)


class TrainingInfo(_Strict):
    """How the weights were made: enough to make them again."""

    data: dict[str, Any] | str | None = None
    command: str = ""
    seed: int | None = None
    epochs: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class LibraryVersions(_Strict):
    python: str | None = None
    tensorflow: str | None = None
    keras: str | None = None
    numpy: str | None = None
    refocusd: str | None = None


def library_versions() -> LibraryVersions:
    """Installed versions, read from package metadata (does not import TensorFlow)."""

    def version(*names: str) -> str | None:
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return None

    tf = sys.modules.get("tensorflow")
    return LibraryVersions(
        python=".".join(map(str, sys.version_info[:3])),
        # getattr: the "tensorflow" entry of sys.modules may be a lazy placeholder
        tensorflow=getattr(tf, "__version__", None) or version(*_TF_DISTRIBUTIONS),
        keras=version("keras"),
        numpy=version("numpy"),
        refocusd=version("refocusd"),
    )


class ModelCard(_Strict):
    """``model.json``. ``weights_sha256`` is filled in by ``store.save_model``."""

    format: Literal["refocusd.model/1"] = CARD_FORMAT
    name: str
    version: str
    kind: ModelKind
    architecture: str  # "sdcnn" | "resunet"
    params: dict[str, Any] = Field(default_factory=dict)  # base_filters, parameter_count, ...
    input: InputSpec
    training: TrainingInfo = Field(default_factory=TrainingInfo)
    metrics: dict[str, Any] = Field(default_factory=dict)
    weights_sha256: str = ""
    weights_file: str = WEIGHTS_FILE
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    libraries: LibraryVersions = Field(default_factory=library_versions)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"name {value!r} may hold letters, digits, '.', '_' and '-' only")
        return value

    @field_validator("version", "architecture")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("weights_sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        if value and not _SHA256.match(value):
            raise ValueError(f"{value!r} is not a lowercase hex SHA-256")
        return value

    @field_validator("weights_file")
    @classmethod
    def _plain_file(cls, value: str) -> str:
        # A bare file name: a card must not point outside its own folder.
        if not value.endswith(".keras") or "/" in value or "\\" in value or value.startswith("."):
            raise ValueError(f"{value!r} must be a plain '<name>.keras' file name")
        return value

    @field_validator("created")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def model_id(self) -> str:
        """``name@version:<first 12 hex of the weights' SHA-256>``."""
        return f"{self.name}@{self.version}:{self.weights_sha256[:12]}"

    @property
    def base_filters(self) -> int | None:
        value = self.params.get("base_filters")
        return int(value) if value is not None else None

    def identity(self) -> dict[str, object]:
        """Which model this is, as recorded in every output's provenance."""
        return {
            "name": self.name,
            "version": self.version,
            "model_id": self.model_id,
            "weights_sha256": self.weights_sha256,
            "architecture": self.architecture,
            "base_filters": self.base_filters,
        }


def classifier_input_spec() -> InputSpec:
    return InputSpec(size=134, channels=3, preprocessing=CLASSIFIER_PREPROCESSING, output_size=None)


CROP_CLASSIFIER_PREPROCESSING = (
    "frame brought to the trained sampling (pixel_size_um) crop by crop: K squares of "
    "size*pixel_size_um/frame_pixel_um native px chosen by content and spread over the "
    "field (refocusd.models.crops.select_crops), channels averaged, cv2 INTER_AREA "
    "resize to size px, each crop standardised (zero mean, unit variance); an unknown "
    "frame pixel size uses native pixels"
)


def crop_classifier_input_spec(size: int, pixel_size_um: float, crops: int) -> InputSpec:
    return InputSpec(size=size, channels=1, preprocessing=CROP_CLASSIFIER_PREPROCESSING,
                     pixel_size_um=pixel_size_um, crops=crops)


def reconstructor_input_spec(size: int | None = 572) -> InputSpec:
    """Input spec of a ResUNet built for ``size`` (``None``: any valid size)."""
    return InputSpec(
        size=size,
        channels=3,
        preprocessing=RECONSTRUCTOR_PREPROCESSING,
        output_size=None if size is None else size - 184,
    )
