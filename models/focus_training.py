"""Training of the crop classifiers (``focusnet``, ``sdcnn-crops``): focus + signed defocus.

Data are ordinary classifier folders (``focused/``, ``defocused/``). Where a folder has a
``manifest.json`` from ``refocusd synth``, each frame's record gives its pixel size, its
defocus ``z_um`` (the target of the defocus head, signed as ``Verdict.defocus_um``) and
its domain; frames without a z train the focus head only, frames without a pixel size
use ``frame_pixel_um`` or, failing that, native pixels (as the runtime would).

Every frame is cut exactly as the runtime cuts it (:mod:`refocusd.models.crops`: same
content-aware choice, same resampling, same standardisation), ``crops_per_frame`` crops
each. Augmentation: flips, 90-degree rotations, gamma, and polarity inversion, which also
flips the defocus sign: to first order an inverted phase-contrast or bright-field image
of a phase object at ``z`` is the image at ``-z`` (of the opposite phase-ring polarity).

Loss per crop: binary cross-entropy of the focus logit plus ``defocus_weight`` times the
Gaussian negative log-likelihood of the defocus (mean and log sigma, units of 10 µm).
Adam with a cosine schedule. Validation is per *frame* (crops aggregated as the runtime
does: mean logit, inverse-variance weighted defocus); the weights with the lowest
validation loss are kept. After every epoch a checkpoint (weights, optimizer, history)
goes to ``OUT/.checkpoint/``; ``resume=True`` continues from it (weights, best so far and
history; Adam restarts at the scheduled rate).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import structlog  # noqa: E402

from refocusd.models import crops as cropping  # noqa: E402
from refocusd.models.api import ModelError  # noqa: E402
from refocusd.models.datasets import (  # noqa: E402
    FOCUSED,
    DatasetError,
    read_image,
    scan_classifier_folders,
    split_indices,
)
from refocusd.models.evaluation import roc_auc  # noqa: E402
from refocusd.models.frame_records import FrameInfo, frame_infos  # noqa: E402
from refocusd.models.training import (  # noqa: E402
    EpochReport,
    TrainingObserver,
    TrainingResult,
    _finish,
    _load_base,
    _Loop,
    _raise_if_stopped,
    _round,
    _seed_everything,
    _training_info,
    _version,
)

log = structlog.get_logger(__name__)

DEFAULT_INPUT_SIZE = 128
DEFAULT_TRAINED_PIXEL_UM = 0.5
CHECKPOINT_DIR = ".checkpoint"
LOG_SIGMA_RANGE = (-4.0, 3.0)
BN_MOMENTUM = 0.9


@dataclass(frozen=True, slots=True)
class CropTrainConfig:
    data: tuple[Path, ...]
    out: Path
    architecture: str = "focusnet"
    base: str | None = None  # fine-tune from this crop model ("default" or a folder)
    epochs: int = 30
    seed: int = 0
    val_fraction: float = 0.2
    batch_size: int = 64
    steps_per_epoch: int | None = None
    crops_per_frame: int = 4
    crops: int = 8  # crops per frame at inference (recorded in the card)
    input_size: int = DEFAULT_INPUT_SIZE
    trained_pixel_um: float = DEFAULT_TRAINED_PIXEL_UM
    frame_pixel_um: float | None = None  # frames whose folder does not say
    width: int = 16
    learning_rate: float | None = None  # None: 2e-3 from scratch, 4e-4 fine-tuning
    defocus_weight: float = 0.3
    augment: bool = True
    resume: bool = False
    exclude_domains: tuple[str, ...] = ()  # leave out frames of these modes or specimens
    exclude_pixel_um: tuple[float, float] | None = None  # ... or pixel sizes in this range
    name: str = "focusnet"
    version: str | None = None
    command: str = ""


# ------------------------------------------------------------------------------- data


def frame_crops(pixels: np.ndarray, *, k: int, input_size: int, trained_pixel_um: float,
                pixel_size_um: float | None) -> np.ndarray:
    """``(<=k, input_size, input_size, 1)`` crops of one frame, as the runtime cuts them."""
    image = pixels if pixels.ndim == 2 else pixels[..., :3]
    geometry = cropping.crop_geometry(image.shape, input_size=input_size,
                                      trained_pixel_um=trained_pixel_um,
                                      pixel_size_um=pixel_size_um)
    corners = cropping.select_crops(image, geometry.native, k)
    batch = cropping.extract_crops(image, corners, geometry)
    if geometry.net != input_size:  # a frame smaller than one crop: stretched to fit
        batch = np.stack([cv2.resize(c[..., 0], (input_size, input_size))[..., None] for c in batch])
    return batch


@dataclass(slots=True)
class CropSet:
    x: np.ndarray  # (N, S, S, 1) float16
    label: np.ndarray  # (N,) int, FOCUSED = 0
    z: np.ndarray  # (N,) float32 in DEFOCUS_SCALE_UM units, NaN when unknown
    frame: np.ndarray  # (N,) index into frames


def build_crop_set(frames: Sequence[FrameInfo], cfg: CropTrainConfig) -> CropSet:
    xs, labels, zs, owners = [], [], [], []
    for i, info in enumerate(frames):
        try:
            batch = frame_crops(read_image(info.path), k=cfg.crops_per_frame,
                                input_size=cfg.input_size, trained_pixel_um=cfg.trained_pixel_um,
                                pixel_size_um=info.pixel_size_um)
        except ValueError as exc:
            raise DatasetError(f"unusable image {info.path}: {exc}") from exc
        xs.append(batch.astype(np.float16))
        n = len(batch)
        labels.append(np.full(n, info.label))
        z = math.nan if info.z_um is None else info.z_um / cropping.DEFOCUS_SCALE_UM
        zs.append(np.full(n, z, np.float32))
        owners.append(np.full(n, i))
    return CropSet(np.concatenate(xs), np.concatenate(labels), np.concatenate(zs),
                   np.concatenate(owners))


# ------------------------------------------------------------------------ loss, tf data


def focus_loss(defocus_weight: float) -> Any:
    """BCE(focus logit) + w * Gaussian NLL(defocus); ``y_true`` = [focused, z, has_z]."""
    import tensorflow as tf

    lo, hi = LOG_SIGMA_RANGE

    # Any: TensorFlow tensors (TensorFlow ships no usable type hints)
    def loss(y_true: Any, y_pred: Any) -> Any:
        focused, z, has_z = y_true[:, 0], y_true[:, 1], y_true[:, 2]
        logit, mu = y_pred[:, 0], y_pred[:, 1]
        log_sigma = tf.clip_by_value(y_pred[:, 2], lo, hi)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=focused, logits=logit)
        nll = 0.5 * tf.square((z - mu) * tf.exp(-log_sigma)) + log_sigma
        return bce + defocus_weight * has_z * nll

    return loss


def _targets(label: np.ndarray, z: np.ndarray) -> np.ndarray:
    has_z = np.isfinite(z)
    return np.stack([(label == FOCUSED).astype(np.float32), np.where(has_z, z, 0.0),
                     has_z.astype(np.float32)], axis=1).astype(np.float32)


def _dataset(crops: CropSet, idx: np.ndarray, *, batch_size: int, seed: int, augment: bool) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((crops.x[idx], _targets(crops.label[idx], crops.z[idx])))
    ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True).repeat().enumerate()

    # Any: TensorFlow tensors (TensorFlow ships no usable type hints)
    def prepare(index: Any, sample: Any) -> Any:
        image, target = sample
        image = tf.cast(image, tf.float32)
        if augment:
            s = tf.stack([tf.cast(index, tf.int32), tf.constant(seed, tf.int32)])
            image = tf.image.stateless_random_flip_left_right(image, s)
            image = tf.image.stateless_random_flip_up_down(image, s + 1)
            image = tf.image.rot90(image, tf.random.stateless_uniform((), s + 2, 0, 4, tf.int32))
            # Gamma on the crop's own range, then standardised again.
            gamma = tf.exp(tf.random.stateless_uniform((), s + 3, -0.5, 0.5))
            lo, hi = tf.reduce_min(image), tf.reduce_max(image)
            image = tf.pow((image - lo) / tf.maximum(hi - lo, 1e-6), gamma)
            mean, var = tf.nn.moments(image, axes=[0, 1, 2])
            image = (image - mean) / tf.maximum(tf.sqrt(var), 1e-3)
            invert = tf.random.stateless_uniform((), s + 4) < 0.5
            sign = tf.where(invert, -1.0, 1.0)
            image = image * sign
            target = tf.stack([target[0], target[1] * sign, target[2]])
        return image, target

    return ds.map(prepare, num_parallel_calls=1).batch(batch_size).prefetch(2)


# ---------------------------------------------------------------------- validation


def frame_metrics(out: np.ndarray, crops: CropSet, idx: np.ndarray,
                  frames: Sequence[FrameInfo], defocus_weight: float) -> dict[str, float]:
    """Per-frame loss, accuracy, AUC and defocus error (crops aggregated as the runtime)."""
    owners = crops.frame[idx]
    p, labels, err, nll = [], [], [], []
    for f in np.unique(owners):
        rows = out[owners == f]
        agg = cropping.aggregate(rows[:, 0], rows[:, 1], rows[:, 2])
        p.append(agg.p_focused)
        labels.append(frames[f].label)
        z = frames[f].z_um
        if z is not None and agg.defocus_um is not None:
            err.append(abs(agg.defocus_um - z))
            sigma = max(agg.defocus_sigma_um or 1.0, 1e-3) / cropping.DEFOCUS_SCALE_UM
            d = (agg.defocus_um - z) / cropping.DEFOCUS_SCALE_UM
            nll.append(0.5 * (d / sigma) ** 2 + math.log(sigma))
    pa, la = np.clip(np.asarray(p), 1e-7, 1 - 1e-7), np.asarray(labels)
    focused = la == FOCUSED
    bce = float(-np.mean(np.where(focused, np.log(pa), np.log(1 - pa))))
    loss = bce + (defocus_weight * float(np.mean(nll)) if nll else 0.0)
    return {
        "loss": loss,
        "accuracy": float(np.mean((pa >= 0.5) == focused)),
        "auc": roc_auc(pa, focused),
        "defocus_mae_um": float(np.median(err)) if err else math.nan,
    }


# --------------------------------------------------------------------- checkpoints


def _checkpoint_paths(out: Path) -> tuple[Path, Path, Path]:
    folder = out / CHECKPOINT_DIR
    return folder / "last.keras", folder / "best.weights.npz", folder / "state.json"


# Any: a Keras model (Keras ships no type hints)
def _save_checkpoint(model: Any, loop: _Loop, out: Path, epoch: int) -> None:
    last, best, state = _checkpoint_paths(out)
    last.parent.mkdir(parents=True, exist_ok=True)
    tmp = last.with_name(".last.tmp.keras")
    model.save(tmp, include_optimizer=False)  # a resumed run restarts Adam at its scheduled rate
    os.replace(tmp, last)
    if loop.best_weights is not None:
        tmpb = best.with_name(".best.tmp.npz")
        np.savez(tmpb, *loop.best_weights)
        os.replace(tmpb, best)
    data = {
        "epochs_done": epoch, "best_epoch": loop.best_epoch, "best_val": loop.best_val,
        "history": [{"epoch": r.epoch, "epochs": r.epochs, "learning_rate": r.learning_rate,
                     "train_loss": r.train_loss, "val": r.val, "improved": r.improved,
                     "seconds": r.seconds} for r in loop.history],
    }
    tmps = state.with_name(".state.tmp.json")
    tmps.write_text(json.dumps(data, allow_nan=True), encoding="utf-8")
    os.replace(tmps, state)


def _restore(out: Path, loop: _Loop) -> tuple[Any, int]:
    import keras

    last, best, state = _checkpoint_paths(out)
    if not (last.is_file() and state.is_file()):
        raise ModelError(f"nothing to resume in {out / CHECKPOINT_DIR}")
    model = keras.saving.load_model(last, compile=False, safe_mode=True)
    data = json.loads(state.read_text("utf-8"))
    loop.best_epoch, loop.best_val = data["best_epoch"], data["best_val"]
    loop.history = [EpochReport(**r) for r in data["history"]]
    loop.epochs_run = int(data["epochs_done"])
    if best.is_file():
        with np.load(best) as arrays:
            loop.best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    return model, int(data["epochs_done"])


# -------------------------------------------------------------------------- train


def cosine_rate(epoch: int, epochs: int, peak: float) -> float:
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs))))


def train_crop_classifier(
    cfg: CropTrainConfig,
    *,
    observer: TrainingObserver | None = None,
    stop: threading.Event | None = None,
) -> TrainingResult:
    """Train (or fine-tune) a crop classifier with the defocus head; write ``cfg.out``."""
    from refocusd.models.card import ModelCard, crop_classifier_input_spec
    from refocusd.models.focusnet import CROP_ARCHITECTURES, build_crop_network

    if cfg.epochs < 1:
        raise ModelError(f"--epochs must be at least 1, got {cfg.epochs}")
    started = time.perf_counter()
    data = scan_classifier_folders(list(cfg.data))
    frames = frame_infos(data, cfg.frame_pixel_um)
    groups = np.concatenate([i * 2 + f.labels for i, f in enumerate(data.folders)])
    keep = np.array([not _excluded(f, cfg) for f in frames])
    if not keep.all():
        log.info("train.excluded", frames=int((~keep).sum()), domains=list(cfg.exclude_domains),
                 pixel_um=cfg.exclude_pixel_um)
        frames = [f for f, k in zip(frames, keep, strict=True) if k]
        groups = groups[keep]
    train_frames, val_frames = split_indices(groups, cfg.val_fraction, cfg.seed)
    if len(train_frames) == 0:
        raise DatasetError(f"data folders {[str(p) for p in cfg.data]}: no images left for training")
    if len(val_frames) == 0:
        val_frames = train_frames

    import keras
    import tensorflow as tf

    _seed_everything(cfg.seed)
    fine_tune = cfg.base is not None
    base_card = None
    architecture = cfg.architecture
    if fine_tune:
        model, base_card = _load_base(str(cfg.base), "classifier")
        if base_card.architecture not in CROP_ARCHITECTURES:
            raise ModelError(f"base model {base_card.model_id} is a {base_card.architecture}, "
                             "not a crop classifier")
        architecture = base_card.architecture
        # The base's sampling and crop size, whatever the options say.
        cfg = CropTrainConfig(**{**_as_dict(cfg),
                                 "trained_pixel_um": float(base_card.input.pixel_size_um or 0.5),
                                 "input_size": int(base_card.input.size or cfg.input_size)})
    elif architecture not in CROP_ARCHITECTURES:
        raise ModelError(f"unknown crop architecture {architecture!r} "
                         f"(known: {', '.join(CROP_ARCHITECTURES)})")
    else:
        model = build_crop_network(architecture, width=cfg.width)
    trained_um, size = cfg.trained_pixel_um, cfg.input_size
    crops = build_crop_set(frames, cfg)
    train_idx = np.flatnonzero(np.isin(crops.frame, train_frames))
    val_idx = np.flatnonzero(np.isin(crops.frame, val_frames))
    log.info("train.crops", frames=len(frames), crops=len(crops.x),
             seconds=round(time.perf_counter() - started, 1))
    peak = cfg.learning_rate or (4e-4 if fine_tune else 2e-3)
    loop = _Loop(
        kind="classifier", epochs=cfg.epochs, steps=0,
        schedule=lambda e: cosine_rate(e, cfg.epochs, peak),
        validate=lambda net: validate(net), better=lambda new, old: new["loss"] < old["loss"],
        observer=observer, stop=stop,
    )
    initial_epoch = 0
    if cfg.resume:
        model, initial_epoch = _restore(Path(cfg.out), loop)
    # Batch-norm statistics follow the weights 10x faster than Keras' default (0.99): with
    # 0.99, runs of a few hundred steps validated on stale statistics (accuracy 0.5 while
    # the training loss fell). Only training reads the momentum; saved weights are alike.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=peak),
                  loss=focus_loss(cfg.defocus_weight), jit_compile=False)
    steps = cfg.steps_per_epoch or max(1, math.ceil(len(train_idx) / cfg.batch_size))
    loop.steps = steps
    train_ds = _dataset(crops, train_idx, batch_size=cfg.batch_size, seed=cfg.seed + initial_epoch,
                        augment=cfg.augment)
    forward = tf.function(lambda b: model(b, training=False),
                          input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)])
    x_val = crops.x[val_idx]

    # Any: a Keras model (Keras ships no type hints)
    def validate(net: Any) -> dict[str, float]:
        out = np.concatenate([forward(tf.constant(x_val[s : s + 256].astype(np.float32))).numpy()
                              for s in range(0, len(x_val), 256)])
        return frame_metrics(out, crops, val_idx, frames, cfg.defocus_weight)

    class _Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            _save_checkpoint(self.model, loop, Path(cfg.out), epoch + 1)

    summary = {
        "architecture": architecture, "train_frames": int(len(train_frames)),
        "validation_frames": int(len(val_frames)), "crops": int(len(crops.x)),
        "fine_tune_from": base_card.model_id if base_card else None,
        "resumed_at_epoch": initial_epoch or None,
    }
    log.info("train.start", kind="classifier", epochs=cfg.epochs, steps=steps, **summary)
    if observer is not None:
        observer.on_start("classifier", cfg.epochs, steps, summary)
    _raise_if_stopped(stop)
    if initial_epoch < cfg.epochs:
        model.fit(train_ds, epochs=cfg.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                  callbacks=[loop.callback(), _Checkpoint()], shuffle=False, verbose=0)

    domains = sorted({f.domain for f in frames})
    card = ModelCard(
        name=cfg.name,
        version=_version(cfg.version),
        kind="classifier",
        architecture=architecture,
        params={"parameter_count": int(model.count_params()),
                **({"width": cfg.width} if architecture == "focusnet" else {})},
        input=crop_classifier_input_spec(size, trained_um, cfg.crops),
        training=_training_info(
            data=data.describe(), command=cfg.command, seed=cfg.seed, loop=loop,
            extra={
                "mode": "fine-tune" if fine_tune else "scratch",
                "base_model": base_card.model_id if base_card else None,
                "optimizer": "Adam", "schedule": f"cosine from {peak:g} to {0.05 * peak:g}",
                "loss": f"BCE(focus) + {cfg.defocus_weight} x Gaussian NLL(defocus / 10 um)",
                "batch_size": cfg.batch_size, "steps_per_epoch": steps,
                "crops_per_frame": cfg.crops_per_frame, "val_fraction": cfg.val_fraction,
                "augmentation": "flips+rot90+gamma+polarity (z sign flipped)" if cfg.augment else None,
                "train_frames": int(len(train_frames)), "validation_frames": int(len(val_frames)),
                "domains": domains, "excluded_domains": list(cfg.exclude_domains),
                "excluded_pixel_um": cfg.exclude_pixel_um,
                "seconds": round(time.perf_counter() - started, 1),
            },
        ),
        metrics={"validation": {k: _round(v) for k, v in (loop.best_val or {}).items()}},
    )
    return _finish(model=model, loop=loop, out=Path(cfg.out), card=card)


def _excluded(frame: FrameInfo, cfg: CropTrainConfig) -> bool:
    if cfg.exclude_domains and set(frame.domain.split("/")) & set(cfg.exclude_domains):
        return True
    lo_hi = cfg.exclude_pixel_um
    return bool(lo_hi and frame.pixel_size_um is not None and lo_hi[0] <= frame.pixel_size_um <= lo_hi[1])


def _as_dict(cfg: CropTrainConfig) -> dict[str, Any]:
    # getattr: every dataclass field by name (asdict would deep-copy the paths' tuples)
    return {name: getattr(cfg, name) for name in cfg.__dataclass_fields__}
