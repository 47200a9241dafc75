"""Model folders: find, verify, load and save (``MODEL/model.keras`` + ``MODEL/model.json``).

Every failure a user can cause — a missing folder or card, an unparsable card, a weights
file that is missing, truncated or altered, a model of the wrong kind — is a
:class:`ModelError` whose message names the file. Keras is imported only to save or load.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from refocusd.config.files import atomic_path, atomic_write
from refocusd.models.api import ModelError
from refocusd.models.card import CARD_FILE, ModelCard, ModelKind, library_versions
from refocusd.models.tf_import import tensorflow

if TYPE_CHECKING:
    import keras

log = structlog.get_logger(__name__)

DEFAULT_SPEC = "default"
_CHUNK = 1 << 20


def default_folder(kind: ModelKind) -> Path:
    """Where the packaged default model of ``kind`` lives (it may not be installed)."""
    return Path(str(resources.files("refocusd.models").joinpath("weights", kind)))


def resolve(spec: str | Path, kind: ModelKind) -> Path:
    """The model folder for ``spec``: ``"default"``, a model folder, its ``model.keras``
    (with ``model.json`` beside it) or its ``model.json``. Checks the card's kind."""
    if isinstance(spec, str) and spec == DEFAULT_SPEC:
        folder = default_folder(kind)
        if not (folder / CARD_FILE).is_file():
            raise ModelError(
                f"no default {kind} model is installed (expected {folder / CARD_FILE}); "
                f"train one with `refocusd train {kind}` and pass it with --model"
            )
        card = load_card(folder)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise ModelError(f"model {path} does not exist")
        if path.is_dir():
            folder = path
        elif path.suffix == ".keras" or path.name == CARD_FILE:
            folder = path.parent
        else:
            raise ModelError(
                f"model {path} is neither a model folder, a .keras file nor a {CARD_FILE}"
            )
        if not (folder / CARD_FILE).is_file():
            raise ModelError(
                f"{folder / CARD_FILE} is missing: a model folder holds model.keras and "
                f"{CARD_FILE} (as written by `refocusd train`)"
            )
        card = load_card(folder)
        if path.suffix == ".keras" and path.name != card.weights_file:
            raise ModelError(
                f"{path} is not the weights file named by {folder / CARD_FILE} "
                f"({card.weights_file})"
            )
    if card.kind != kind:
        raise ModelError(f"{folder / CARD_FILE} describes a {card.kind} model, not a {kind}")
    return folder


def load_card(folder: Path) -> ModelCard:
    """Parse and validate ``folder/model.json``."""
    path = Path(folder) / CARD_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    try:
        return ModelCard.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelError(f"{path} is not a valid model card: {problems}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(folder: Path, card: ModelCard) -> Path:
    """The weights file, after checking it exists and matches the card's SHA-256."""
    folder = Path(folder)
    path = folder / card.weights_file
    if not path.is_file():
        raise ModelError(f"{path} is missing (named by {folder / CARD_FILE})")
    if not card.weights_sha256:
        raise ModelError(f"{folder / CARD_FILE} has no weights_sha256; cannot verify {path}")
    actual = sha256_file(path)
    if actual != card.weights_sha256:
        raise ModelError(
            f"{path} does not match its card: SHA-256 {actual[:16]}... but {CARD_FILE} says "
            f"{card.weights_sha256[:16]}... (the file was modified, truncated or replaced)"
        )
    return path


def check_model(spec: str | Path, kind: ModelKind) -> ModelCard:
    """Resolve ``spec`` and verify its weights without importing TensorFlow (fail fast)."""
    folder = resolve(spec, kind)
    card = load_card(folder)
    verify_weights(folder, card)
    return card


def load_keras(folder: Path, card: ModelCard) -> keras.Model:
    """Verify the weights file against the card's SHA-256, then load it in safe mode."""
    path = verify_weights(folder, card)
    tensorflow()  # imported with its C++ start-up chatter kept off stderr
    import keras

    import refocusd.models.layers  # noqa: F401  (registers the custom layers)

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad archive; name the file
        raise ModelError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
    expected = card.params.get("parameter_count")
    if expected is not None and model.count_params() != int(expected):
        raise ModelError(
            f"{path} has {model.count_params()} parameters but its card says {expected}"
        )
    log.info("models.loaded", path=str(path), model=card.model_id, kind=card.kind)
    return model


def save_model(model: keras.Model, folder: Path, card: ModelCard) -> ModelCard:
    """Write ``folder/<card.weights_file>`` and ``folder/model.json`` (each atomically).

    Returns the card as written: SHA-256, parameter count and library versions filled in.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / card.weights_file
    with atomic_path(weights, suffix=".keras") as tmp:  # Keras wants the .keras extension
        # Weights only: optimizer slots would triple a shipped file (Nadam) and nothing
        # resumes from them (fine-tuning starts a fresh schedule).
        model.save(tmp, include_optimizer=False)
        digest = sha256_file(tmp)
    data: dict[str, Any] = card.model_dump(mode="json")
    data.update(
        weights_sha256=digest,
        params={**card.params, "parameter_count": int(model.count_params())},
        libraries=library_versions().model_dump(),
    )
    written = ModelCard.model_validate(data)
    atomic_write(folder / CARD_FILE, json.dumps(written.model_dump(mode="json"), indent=2) + "\n")
    log.info("models.saved", folder=str(folder), model=written.model_id, kind=written.kind)
    return written
