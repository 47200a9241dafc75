"""Training and fine-tuning of the SDCNN classifier and the ResUNet reconstructor.

The paper's recipes (Xue et al. 2021, section 4.4):

- SDCNN: categorical cross-entropy, SGD momentum 0.9, lr 1e-3 halved every 5 epochs, batch 4,
  50 epochs, the weights with the lowest validation loss kept. Fine-tuning (transfer
  learning) starts from trained weights with lr 2e-4, 1e-4 from epoch 25 on.
- ResUNet: loss 1 - SSIM(max_val=255), Nadam with TensorFlow's defaults, batch 2, 388 px
  tiles padded to 572 px by mirroring, the weights with the highest validation SSIM kept.

Both loops are seeded (``keras.utils.set_random_seed`` plus a deterministic stratified
split), report progress through a :class:`TrainingObserver`, and stop cleanly when the
caller's ``stop`` event is set (the CLI sets it on Ctrl-C): the best weights so far are
then written like a finished run, with ``training.extra.interrupted = true`` in the card.

Inputs go through exactly the runtime's conventions (:mod:`refocusd.models.preprocessing`,
:mod:`refocusd.models.tiling`): the classifier sees the standardised 134x134 whole frame;
the reconstructor sees windows of the frame mapped by ``to_network_range`` and mirrored by
92 px at its borders, and learns the target mapped with the *input's* intensity map, which
is how the runtime maps its output back.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import structlog  # noqa: E402

from refocusd.config.errors import ExitCode
from refocusd.models.tf_import import tensorflow  # noqa: E402
from refocusd.models.api import ModelError  # noqa: E402
from refocusd.models.card import CARD_FILE  # noqa: E402
from refocusd.models.datasets import (  # noqa: E402
    FOCUSED,
    ClassifierData,
    DatasetError,
    PairedFolder,
    read_image,
    scan_classifier_folders,
    scan_paired_folder,
    split_indices,
)
from refocusd.models.evaluation import roc_auc  # noqa: E402

log = structlog.get_logger(__name__)

Kind = Literal["classifier", "reconstructor"]

# The paper's schedules.
CLASSIFIER_LR = 1e-3
CLASSIFIER_LR_HALVING_EPOCHS = 5
FINE_TUNE_LR = 2e-4
FINE_TUNE_LR_LATE = 1e-4
FINE_TUNE_LR_SWITCH_EPOCH = 25
RECONSTRUCTOR_LR = 1e-3  # Nadam's TensorFlow default
MOMENTUM = 0.9
PAPER_TILE = 388


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True, slots=True)
class ClassifierTrainConfig:
    data: Path | tuple[Path, ...]  # several folders are trained on together
    out: Path
    base: str | None = None  # None: from scratch; "default" or a model folder: fine-tune
    epochs: int = 50
    seed: int = 0
    val_fraction: float = 0.2
    batch_size: int = 4
    steps_per_epoch: int | None = None  # None: one pass over the training split
    augment: bool = True  # random flips and 90-degree rotations
    name: str = "sdcnn"
    version: str | None = None  # None: UTC date-time
    command: str = ""
    overwrite: bool = False  # replace a model already in ``out``


@dataclass(frozen=True, slots=True)
class ReconstructorTrainConfig:
    data: Path
    out: Path
    base: str | None = None
    epochs: int = 60
    seed: int = 0
    val_fraction: float = 0.2
    batch_size: int = 2
    steps_per_epoch: int | None = None  # None: as many tiles as cover the training frames once
    base_filters: int | None = None  # None: the base model's, else REDUCED_BASE_FILTERS
    tile: int = PAPER_TILE  # output tile side; the network input is tile + 184
    val_tiles_per_pair: int = 1
    augment: bool = True
    name: str = "resunet"
    version: str | None = None
    command: str = ""
    resume: bool = False  # continue OUT's checkpoint up to ``epochs`` epochs in all
    learning_rate: float | None = None  # None: the paper's schedule; else constant (per segment)
    overwrite: bool = False


def check_output_folder(out: Path, *, overwrite: bool) -> None:
    """Refuse, before any work, an ``out`` whose model training would replace or mix with.

    ``out`` may be new or an empty folder; a model folder only with ``overwrite``; anything
    else (a file, a folder of other files) never.
    """
    if out.exists() and not out.is_dir():
        raise ModelError(f"--out {out} exists and is not a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not held:
        return
    if CARD_FILE in held or any(name.endswith(".keras") for name in held):
        if not overwrite:
            raise ModelError(f"--out {out} already holds a model (pass --overwrite to replace it)")
        return
    raise ModelError(f"--out {out} is not empty and is not a model folder (it holds: {', '.join(held[:5])}); "
                     "choose a new or empty folder")


# ------------------------------------------------------------------------ observation


@dataclass(frozen=True, slots=True)
class EpochReport:
    epoch: int  # 1-based
    epochs: int
    learning_rate: float
    train_loss: float
    val: dict[str, float]
    improved: bool
    seconds: float


class TrainingObserver(Protocol):
    """Progress sink (the CLI draws it on stderr; library code only logs)."""

    def on_start(self, kind: Kind, epochs: int, steps_per_epoch: int, summary: dict[str, Any]) -> None: ...

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None: ...

    def on_epoch(self, report: EpochReport) -> None: ...


@dataclass(slots=True)
class TrainingResult:
    folder: Path
    card: Any  # refocusd.models.card.ModelCard
    epochs_run: int
    best_epoch: int | None
    interrupted: bool
    history: list[EpochReport] = field(default_factory=list)


# ----------------------------------------------------------------------- schedules


def classifier_learning_rate(epoch: int, *, fine_tune: bool) -> float:
    """The paper's schedule for 0-based ``epoch``."""
    if fine_tune:
        return FINE_TUNE_LR if epoch < FINE_TUNE_LR_SWITCH_EPOCH else FINE_TUNE_LR_LATE
    return CLASSIFIER_LR * 0.5 ** (epoch // CLASSIFIER_LR_HALVING_EPOCHS)


def reconstructor_learning_rate(epoch: int, *, fine_tune: bool) -> float:
    """Nadam's default rate from scratch; the classifier's fine-tuning schedule otherwise."""
    if fine_tune:
        return classifier_learning_rate(epoch, fine_tune=True)
    return RECONSTRUCTOR_LR


# ------------------------------------------------------------------------ shared loop


class _Loop:
    """Best-weights bookkeeping, progress, stop requests and the learning-rate schedule,
    as one Keras callback (built lazily so this module imports without TensorFlow)."""

    def __init__(
        self,
        *,
        kind: Kind,
        epochs: int,
        steps: int,
        schedule: Any,  # Any: a Keras/TensorFlow object (they ship no type hints)
        validate: Any,  # Any: a Keras/TensorFlow object (they ship no type hints)
        better: Any,  # Any: a Keras/TensorFlow object (they ship no type hints)
        observer: TrainingObserver | None,
        stop: threading.Event | None,
        # Any: a callable taking a Keras model (Keras ships no type hints)
        checkpoint: Any = None,
    ) -> None:
        self.kind, self.epochs, self.steps = kind, epochs, steps
        self.schedule, self.validate, self.better = schedule, validate, better
        self.observer, self.stop = observer, stop
        # checkpoint(model): called after every full epoch and on a stop (a resumable state).
        self.checkpoint = checkpoint
        self.best_weights: list[np.ndarray] | None = None
        self.best_val: dict[str, float] | None = None
        self.best_epoch: int | None = None
        self.history: list[EpochReport] = []
        self.interrupted = False
        self.epochs_run = 0
        self.steps_run = 0  # optimizer steps over all segments of a (resumed) run
        self._epoch_started = 0.0
        self._epoch_steps = 0
        self._lr = math.nan

    def restore(self, *, epochs_done: int, steps_done: int, history: list[EpochReport],
                best_val: dict[str, float] | None, best_epoch: int | None,
                best_weights: list[np.ndarray] | None) -> None:
        """Continue the bookkeeping of a checkpointed run."""
        self.epochs_run, self.steps_run, self.history = epochs_done, steps_done, list(history)
        self.best_val, self.best_epoch, self.best_weights = best_val, best_epoch, best_weights

    def callback(self) -> Any:  # Any: a Keras/TensorFlow object (they ship no type hints)
        import keras

        loop = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                lr = loop.schedule(epoch)
                self.model.optimizer.learning_rate.assign(lr)
                loop._epoch_started = time.perf_counter()
                loop._epoch_steps = 0
                loop._lr = lr

            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                loop.steps_run += 1
                loop._epoch_steps += 1
                loss = float((logs or {}).get("loss", math.nan))
                if loop.observer is not None:
                    loop.observer.on_step(self._epoch_index(), batch + 1, loop.steps, loss)
                if loop.stop is not None and loop.stop.is_set():
                    loop.interrupted = True
                    self.model.stop_training = True

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                loop.epochs_run = epoch + 1
                val = loop.validate(self.model)
                improved = loop.best_val is None or loop.better(val, loop.best_val)
                if improved:
                    loop.best_val, loop.best_epoch = val, epoch + 1
                    loop.best_weights = [w.copy() for w in self.model.get_weights()]
                # Keras reports the running mean of the epoch's losses as the last "loss".
                train_loss = float((logs or {}).get("loss", math.nan))
                report = EpochReport(
                    epoch=epoch + 1, epochs=loop.epochs, learning_rate=loop._lr,
                    train_loss=train_loss, val=val, improved=improved,
                    seconds=time.perf_counter() - loop._epoch_started,
                )
                loop.history.append(report)
                log.info(
                    "train.epoch", kind=loop.kind, epoch=epoch + 1, epochs=loop.epochs,
                    lr=loop._lr, loss=train_loss, improved=improved, interrupted=loop.interrupted,
                    **{f"val_{k}": v for k, v in val.items()},
                )
                if loop.observer is not None:
                    loop.observer.on_epoch(report)
                # After every full epoch, and on a stop (the cut-short epoch then counts as
                # run: its steps are in steps_total, so nothing trained is lost on resume).
                stopping = loop.stop is not None and loop.stop.is_set()
                if loop.checkpoint is not None and (loop._epoch_steps == loop.steps or stopping):
                    loop.checkpoint(self.model)
                if loop.stop is not None and loop.stop.is_set():
                    loop.interrupted = True
                    self.model.stop_training = True

            def _epoch_index(self) -> int:
                return len(loop.history) + 1

        return _Callback()


class TrainingInterrupted(ModelError):
    """Stopped before the first training step: there is nothing worth writing."""

    exit_code = ExitCode.INTERRUPTED
    label = ""  # the message says it all


def _raise_if_stopped(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise TrainingInterrupted("interrupted before training started; no model was written")


def _seed_everything(seed: int) -> None:
    tensorflow()  # imported with its C++ start-up chatter kept off stderr
    import keras

    keras.utils.set_random_seed(seed)


def _version(cfg_version: str | None) -> str:
    if cfg_version:
        return cfg_version
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y.%m.%d-%H%M%S")


def _load_base(base: str, kind: Kind) -> tuple[Any, Any]:
    """(Keras model, card) of the model to fine-tune, verified by the store."""
    from refocusd.models import store

    folder = store.resolve(base, kind)
    card = store.load_card(folder)
    if card.kind != kind:
        raise ModelError(f"base model {folder} is a {card.kind}, not a {kind}")
    return store.load_keras(folder, card), card


def _finish(
    *,
    model: Any,  # Any: a Keras/TensorFlow object (they ship no type hints)
    loop: _Loop,
    out: Path,
    card: Any,  # Any: a Keras/TensorFlow object (they ship no type hints)
) -> TrainingResult:
    from refocusd.models import store

    import keras

    # Save an uncompiled view: the optimizer's slots (2x the weights for Nadam) are of no
    # use for inference or fine-tuning (which starts a fresh optimizer) and would push the
    # reconstructor over 20 MB.
    if loop.best_weights is not None:
        model.set_weights(loop.best_weights)
    export = keras.Model(model.inputs, model.outputs, name=model.name)  # same layers, no optimizer
    saved = store.save_model(export, out, card)
    log.info(
        "train.saved", kind=loop.kind, folder=str(out), model=saved.model_id,
        epochs_run=loop.epochs_run, best_epoch=loop.best_epoch, interrupted=loop.interrupted,
    )
    return TrainingResult(out, saved, loop.epochs_run, loop.best_epoch, loop.interrupted, loop.history)


def _training_info(
    *, data: dict[str, Any], command: str, seed: int, loop: _Loop, extra: dict[str, Any]
) -> Any:  # Any: a Keras/TensorFlow object (they ship no type hints)
    from refocusd.models.card import TrainingInfo

    return TrainingInfo(
        data=data,
        command=command,
        seed=seed,
        epochs=loop.epochs_run,
        extra={
            **extra,
            "epochs_requested": loop.epochs,
            "steps_total": loop.steps_run,
            "best_epoch": loop.best_epoch,
            "interrupted": loop.interrupted,
            "history": [
                {"epoch": r.epoch, "lr": r.learning_rate, "loss": _round(r.train_loss),
                 **{f"val_{k}": _round(v) for k, v in r.val.items()}}
                for r in loop.history
            ],
        },
    )


def _round(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


# ------------------------------------------------------------------------- classifier


def _classifier_inputs(folder: ClassifierData) -> np.ndarray:
    """All frames preprocessed once: ``(N, 134, 134, 1|3)`` float32 (mono kept single)."""
    from refocusd.models.preprocessing import PixelFormatError, classifier_input

    arrays = []
    for path in folder.paths:
        pixels = read_image(path)
        try:
            x = classifier_input(pixels)
        except PixelFormatError as exc:
            raise DatasetError(f"unusable image {path}: {exc}") from exc
        # Mono frames are three identical channels: keep one, replicate in the pipeline.
        arrays.append(x[..., :1] if pixels.ndim == 2 else x)
    channels = {a.shape[-1] for a in arrays}
    if len(channels) > 1:
        arrays = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in arrays]
    return np.stack(arrays)


def _augment(image: Any, seed: Any) -> Any:  # Any: a Keras/TensorFlow object (they ship no type hints)
    """Random flips and a random 90-degree rotation (a frame's focus does not depend on
    its orientation), stateless so a seed fixes them."""
    import tensorflow as tf

    image = tf.image.stateless_random_flip_left_right(image, seed)
    image = tf.image.stateless_random_flip_up_down(image, seed + 1)
    k = tf.random.stateless_uniform((), seed + 2, 0, 4, dtype=tf.int32)
    return tf.image.rot90(image, k)


def _classifier_dataset(
    x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int, augment: bool
) -> Any:  # Any: a Keras/TensorFlow object (they ship no type hints)
    import tensorflow as tf

    onehot = np.eye(2, dtype=np.float32)[y]
    ds = tf.data.Dataset.from_tensor_slices((x, onehot))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).repeat().enumerate()

    def prepare(index: Any, sample: Any) -> Any:  # Any: a Keras/TensorFlow object (they ship no type hints)
        image, label = sample
        if augment:
            image = _augment(image, tf.stack([tf.cast(index, tf.int32), tf.constant(seed, tf.int32)]))
        return tf.broadcast_to(image, (*image.shape[:2], 3)), label

    return ds.map(prepare, num_parallel_calls=1).batch(batch_size).prefetch(2)


def _categorical_crossentropy(p: np.ndarray, y: np.ndarray) -> float:
    eps = 1e-7
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))))


def train_classifier(
    cfg: ClassifierTrainConfig,
    *,
    observer: TrainingObserver | None = None,
    stop: threading.Event | None = None,
) -> TrainingResult:
    """Train (or fine-tune, with ``cfg.base``) the SDCNN on ``cfg.data``; write ``cfg.out``."""
    check_output_folder(Path(cfg.out), overwrite=cfg.overwrite)
    folder = scan_classifier_folders(cfg.data if isinstance(cfg.data, tuple) else [cfg.data])
    if cfg.epochs < 1:
        raise ModelError(f"--epochs must be at least 1, got {cfg.epochs}")
    started = time.perf_counter()
    x_all = _classifier_inputs(folder)
    y_all = folder.labels
    # Stratify by folder and label, so every folder (e.g. frame size) is validated on.
    groups = np.concatenate([i * 2 + f.labels for i, f in enumerate(folder.folders)])
    train_idx, val_idx = split_indices(groups, cfg.val_fraction, cfg.seed)
    if len(train_idx) == 0:
        raise DatasetError(f"data folder {cfg.data}: no images left for training")

    tensorflow()  # imported with its C++ start-up chatter kept off stderr
    import keras
    import tensorflow as tf

    from refocusd.models.card import ModelCard, classifier_input_spec
    from refocusd.models.sdcnn import build_sdcnn

    _seed_everything(cfg.seed)
    fine_tune = cfg.base is not None
    base_card = None
    if fine_tune:
        model, base_card = _load_base(str(cfg.base), "classifier")
    else:
        model = build_sdcnn(name=cfg.name)
    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate=classifier_learning_rate(0, fine_tune=fine_tune), momentum=MOMENTUM
        ),
        loss="categorical_crossentropy",
        jit_compile=False,
    )
    model.optimizer.build(model.trainable_variables)

    steps = cfg.steps_per_epoch or max(1, math.ceil(len(train_idx) / cfg.batch_size))
    train_ds = _classifier_dataset(
        x_all[train_idx], y_all[train_idx], batch_size=cfg.batch_size, seed=cfg.seed,
        augment=cfg.augment,
    )
    x_val = x_all[val_idx] if len(val_idx) else x_all[train_idx]
    y_val = y_all[val_idx] if len(val_idx) else y_all[train_idx]
    forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)

    def validate(net: Any) -> dict[str, float]:  # Any: a Keras/TensorFlow object (they ship no type hints)
        probs = []
        for start in range(0, len(x_val), 64):
            batch = x_val[start : start + 64]
            batch = np.broadcast_to(batch, (*batch.shape[:3], 3))
            probs.append(np.asarray(forward(tf.constant(batch))))
        p = np.concatenate(probs)
        predicted = np.argmax(p, axis=1)
        return {
            "loss": _categorical_crossentropy(p, y_val),
            "accuracy": float(np.mean(predicted == y_val)),
            "auc": roc_auc(p[:, FOCUSED], y_val == FOCUSED),
        }

    loop = _Loop(
        kind="classifier", epochs=cfg.epochs, steps=steps,
        schedule=lambda e: classifier_learning_rate(e, fine_tune=fine_tune),
        validate=validate, better=lambda new, old: new["loss"] < old["loss"],
        observer=observer, stop=stop,
    )
    summary = {
        "train": int(len(train_idx)), "validation": int(len(val_idx)),
        "focused": folder.n_focused, "defocused": folder.n_defocused,
        "fine_tune_from": base_card.model_id if base_card else None,
    }
    log.info("train.start", kind="classifier", epochs=cfg.epochs, steps=steps, **summary)
    if observer is not None:
        observer.on_start("classifier", cfg.epochs, steps, summary)
    _raise_if_stopped(stop)
    model.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=[loop.callback()], shuffle=False,
              verbose=0)

    val_metrics = {k: _round(v) for k, v in (loop.best_val or {}).items()}
    card = ModelCard(
        name=cfg.name,
        version=_version(cfg.version),
        kind="classifier",
        architecture="sdcnn",
        params={"parameter_count": int(model.count_params())},
        input=classifier_input_spec(),
        training=_training_info(
            data=folder.describe(), command=cfg.command, seed=cfg.seed, loop=loop,
            extra={
                "mode": "fine-tune" if fine_tune else "scratch",
                "base_model": base_card.model_id if base_card else None,
                "optimizer": "SGD(momentum=0.9)",
                "schedule": "lr 2e-4, 1e-4 from epoch 25" if fine_tune
                else "lr 1e-3 halved every 5 epochs",
                "batch_size": cfg.batch_size, "steps_per_epoch": steps,
                "val_fraction": cfg.val_fraction, "augmentation": "flips+rot90" if cfg.augment else None,
                "train_images": int(len(train_idx)), "validation_images": int(len(val_idx)),
                "seconds": round(time.perf_counter() - started, 1),
            },
        ),
        metrics={"validation": val_metrics},
    )
    return _finish(model=model, loop=loop, out=Path(cfg.out), card=card)


# ---------------------------------------------------------------------- reconstructor


@dataclass(frozen=True, slots=True)
class _PairArrays:
    """One pair in network range, ``(H, W, C)`` float16 (C = 1 for mono), input mirrored
    by ``margin`` px per side as the runtime pads frames."""

    padded_input: np.ndarray
    target: np.ndarray


def _prepare_pair(folder: PairedFolder, name: str, margin: int) -> _PairArrays:
    from refocusd.models.preprocessing import PixelFormatError, to_network_range

    source, target = folder.read_pair(name)
    try:
        net_in, imap = to_network_range(source)
    except PixelFormatError as exc:
        raise DatasetError(f"unusable image {folder.input_path(name)}: {exc}") from exc
    # The runtime maps the output back with the input's map, so the target is learnt in
    # the input's coordinates; beyond 0..255 the clamped network head cannot follow anyway.
    t = np.asarray(target, dtype=np.float32)
    t = t[..., None] if t.ndim == 2 else t
    t = (t - np.float32(imap.offset)) * np.float32(imap.scale)
    t = np.clip(t, 0.0, 255.0)
    if source.ndim == 2:
        net_in = net_in[..., :1]
    padded = np.pad(net_in, ((margin, margin), (margin, margin), (0, 0)), mode="symmetric")
    return _PairArrays(padded.astype(np.float16), t.astype(np.float16))


def _sample_tile(
    pair: _PairArrays, tile: int, margin: int, rng: np.random.Generator, augment: bool
) -> tuple[np.ndarray, np.ndarray]:
    h, w = pair.target.shape[:2]
    if h < tile or w < tile:
        # Frames smaller than a tile: mirror them out, as the runtime's tiler does.
        reps_y, reps_x = max(0, tile - h), max(0, tile - w)
        target = np.pad(pair.target, ((0, reps_y), (0, reps_x), (0, 0)), mode="symmetric")
        padded = np.pad(pair.padded_input, ((0, reps_y), (0, reps_x), (0, 0)), mode="symmetric")
        h, w = target.shape[:2]
    else:
        target, padded = pair.target, pair.padded_input
    y = int(rng.integers(0, h - tile + 1))
    x = int(rng.integers(0, w - tile + 1))
    win = padded[y : y + tile + 2 * margin, x : x + tile + 2 * margin]
    out = target[y : y + tile, x : x + tile]
    if augment:
        k = int(rng.integers(0, 4))
        flip = bool(rng.integers(0, 2))
        win, out = np.rot90(win, k), np.rot90(out, k)
        if flip:
            win, out = win[:, ::-1], out[:, ::-1]
    return win, out


def _to_rgb(batch: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch, dtype=np.float32)
    return np.repeat(batch, 3, axis=-1) if batch.shape[-1] == 1 else batch


def _tile_sequence(
    pairs: Sequence[_PairArrays], *, tile: int, margin: int, batch_size: int, steps: int,
    seed: int, augment: bool, first_epoch: int = 0,
) -> Any:  # Any: a Keras/TensorFlow object (they ship no type hints)
    import keras

    class TileSequence(keras.utils.PyDataset):
        """Random tiles; batch ``i`` of epoch ``e`` depends only on (seed, e, i)."""

        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = first_epoch

        def __len__(self) -> int:
            return steps

        def on_epoch_end(self) -> None:
            self.epoch += 1

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            rng = np.random.default_rng([seed, self.epoch, index])
            xs, ys = [], []
            for _ in range(batch_size):
                pair = pairs[int(rng.integers(0, len(pairs)))]
                x, y = _sample_tile(pair, tile, margin, rng, augment)
                xs.append(x)
                ys.append(y)
            return _to_rgb(np.stack(xs)), _to_rgb(np.stack(ys))

    return TileSequence()


def _validation_tiles(
    pairs: Sequence[_PairArrays], *, tile: int, margin: int, per_pair: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed validation windows: the centre tile, then seeded random ones."""
    xs, ys = [], []
    rng = np.random.default_rng([seed, 7919])
    for pair in pairs:
        h, w = pair.target.shape[:2]
        for k in range(per_pair):
            if k == 0 and h >= tile and w >= tile:
                y, x = (h - tile) // 2, (w - tile) // 2
                xs.append(pair.padded_input[y : y + tile + 2 * margin, x : x + tile + 2 * margin])
                ys.append(pair.target[y : y + tile, x : x + tile])
            else:
                win, out = _sample_tile(pair, tile, margin, rng, augment=False)
                xs.append(win)
                ys.append(out)
    return _to_rgb(np.stack(xs)), _to_rgb(np.stack(ys))


def ssim_loss(y_true: Any, y_pred: Any) -> Any:  # Any: a Keras/TensorFlow object (they ship no type hints)
    """The paper's loss: ``1 - SSIM(y_true, y_pred, max_val=255)``."""
    import tensorflow as tf

    return 1.0 - tf.image.ssim(tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32), max_val=255.0)


def train_reconstructor(
    cfg: ReconstructorTrainConfig,
    *,
    observer: TrainingObserver | None = None,
    stop: threading.Event | None = None,
) -> TrainingResult:
    """Train (or fine-tune) the ResUNet on ``cfg.data`` pairs; write ``cfg.out``."""
    if not cfg.resume:  # --resume continues the model already in OUT by design
        check_output_folder(Path(cfg.out), overwrite=cfg.overwrite)
    from refocusd.models.tiling import MARGIN, is_valid_input_size

    folder = scan_paired_folder(cfg.data)
    if cfg.epochs < 1:
        raise ModelError(f"--epochs must be at least 1, got {cfg.epochs}")
    window = cfg.tile + 2 * MARGIN
    if not is_valid_input_size(window):
        valid = [s - 2 * MARGIN for s in range(188, 189 + 16 * 30, 16)]
        raise ModelError(
            f"--tile {cfg.tile} is not a ResUNet output size; use one of "
            f"{', '.join(map(str, valid[:10]))}, ... ({PAPER_TILE} is the paper's)"
        )
    started = time.perf_counter()
    pairs = [_prepare_pair(folder, name, MARGIN) for name in folder.names]
    train_idx, val_idx = split_indices(np.zeros(len(pairs), dtype=int), cfg.val_fraction, cfg.seed)
    if len(train_idx) == 0:
        raise DatasetError(f"data folder {cfg.data}: no pairs left for training")
    train_pairs = [pairs[i] for i in train_idx]
    val_pairs = [pairs[i] for i in val_idx] or train_pairs

    tensorflow()  # imported with its C++ start-up chatter kept off stderr
    import keras
    import tensorflow as tf

    from refocusd.models.card import ModelCard, reconstructor_input_spec
    from refocusd.models.resunet import REDUCED_BASE_FILTERS, build_resunet

    from refocusd.models import checkpoint

    state = checkpoint.load_state(Path(cfg.out)) if cfg.resume else None
    if state is not None and cfg.epochs <= state.epochs_done:
        raise ModelError(
            f"{cfg.out} has already run {state.epochs_done} epoch(s); --epochs is the total, "
            f"so ask for more than {state.epochs_done} to continue"
        )
    _seed_everything(cfg.seed + (state.epochs_done if state else 0))
    fine_tune = cfg.base is not None
    base_card = None
    if state is not None:
        # The run's own checkpoint: its width, its weights and (below) its optimizer.
        filters = int(state.fixed["base_filters"])
        if state.fixed.get("fine_tune_from"):
            fine_tune = True
        model = build_resunet(filters, input_size=None, name=cfg.name)
        model.set_weights(state.weights)
    elif fine_tune:
        base_model, base_card = _load_base(str(cfg.base), "reconstructor")
        filters = base_card.base_filters or _infer_base_filters(base_model)
        if cfg.base_filters is not None and cfg.base_filters != filters:
            raise ModelError(
                f"--base-filters {cfg.base_filters} differs from the base model's {filters}"
            )
        # Rebuilt fully convolutional, so any tile trains and the runtime may pick its own.
        model = build_resunet(filters, input_size=None, name=cfg.name)
        model.set_weights(base_model.get_weights())
        del base_model
    else:
        filters = cfg.base_filters or REDUCED_BASE_FILTERS
        model = build_resunet(filters, input_size=None, name=cfg.name)
        _start_head_at(model, float(np.mean([p.target.mean(dtype=np.float64) for p in train_pairs])))
    model.compile(
        optimizer=keras.optimizers.Nadam(
            learning_rate=reconstructor_learning_rate(0, fine_tune=fine_tune)
        ),
        loss=ssim_loss,
        jit_compile=False,  # XLA compiles for ~20 s on CPU and the window size varies
    )
    # Create the optimizer's slots now: else Keras traces the train step twice (~5 s each).
    model.optimizer.build(model.trainable_variables)

    pixels = sum(p.target.shape[0] * p.target.shape[1] for p in train_pairs)
    steps = cfg.steps_per_epoch or max(1, math.ceil(pixels / cfg.tile**2 / cfg.batch_size))
    fixed = {"base_filters": filters, "tile": cfg.tile, "batch_size": cfg.batch_size,
             "steps_per_epoch": steps, "augment": cfg.augment,
             "fine_tune_from": base_card.model_id if base_card else None}
    initial_epoch = 0
    if state is not None:
        fixed["fine_tune_from"] = state.fixed.get("fine_tune_from")
        checkpoint.check_compatible(state, fixed, cfg.seed, Path(cfg.out))
        _restore_optimizer(model, state.optimizer, Path(cfg.out))
        initial_epoch = state.epochs_done
    sequence = _tile_sequence(
        train_pairs, tile=cfg.tile, margin=MARGIN, batch_size=cfg.batch_size, steps=steps,
        seed=cfg.seed, augment=cfg.augment, first_epoch=initial_epoch,
    )
    x_val, y_val = _validation_tiles(
        val_pairs, tile=cfg.tile, margin=MARGIN, per_pair=cfg.val_tiles_per_pair, seed=cfg.seed
    )
    forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)

    def validate(net: Any) -> dict[str, float]:  # Any: a Keras/TensorFlow object (they ship no type hints)
        scores = []
        for start in range(0, len(x_val), cfg.batch_size):
            pred = forward(tf.constant(x_val[start : start + cfg.batch_size]))
            scores.append(np.asarray(tf.image.ssim(tf.constant(y_val[start : start + cfg.batch_size]),
                                                   pred, max_val=255.0)))
        ssim_value = float(np.mean(np.concatenate(scores)))
        return {"ssim": ssim_value, "loss": 1.0 - ssim_value}

    # Before any training: what the inputs themselves score (for the log and the card).
    input_ssim = float(np.mean(tf.image.ssim(
        tf.constant(y_val), tf.constant(x_val[:, MARGIN:-MARGIN, MARGIN:-MARGIN]), max_val=255.0
    )))
    data = folder.describe()
    # Validation scores on other data are not comparable: a resume on a new data set starts
    # the choice of the best weights afresh (the run's weights and optimizer go on).
    new_data = state is not None and bool(state.segments) and \
        _data_identity(state.segments[-1].get("data")) != _data_identity(data)
    segments = [*(state.segments if state else []), {
        "command": cfg.command, "data": data, "from_epoch": initial_epoch,
        "started": _utc_now(), "best_reset": new_data, "learning_rate": cfg.learning_rate,
    }]

    # Any: a Keras model (Keras ships no type hints)
    def save_checkpoint(net: Any) -> None:
        segments[-1]["to_epoch"] = loop.epochs_run
        path = checkpoint.save_state(Path(cfg.out), checkpoint.TrainingState(
            epochs_done=loop.epochs_run, steps_done=loop.steps_run, seed=cfg.seed, fixed=fixed,
            weights=net.get_weights(),
            optimizer=[np.asarray(v) for v in net.optimizer.variables],
            best_weights=loop.best_weights, best_val=loop.best_val, best_epoch=loop.best_epoch,
            history=[_report_dict(r) for r in loop.history], segments=segments,
        ))
        log.info("train.checkpoint", path=str(path), epoch=loop.epochs_run, steps=loop.steps_run)

    loop = _Loop(
        kind="reconstructor", epochs=cfg.epochs, steps=steps,
        schedule=lambda e: cfg.learning_rate or reconstructor_learning_rate(e, fine_tune=fine_tune),
        validate=validate, better=lambda new, old: new["ssim"] > old["ssim"],
        observer=observer, stop=stop, checkpoint=save_checkpoint,
    )
    if state is not None:
        keep_best = not new_data
        loop.restore(
            epochs_done=state.epochs_done, steps_done=state.steps_done,
            history=[EpochReport(**r) for r in state.history],
            best_val=state.best_val if keep_best else None,
            best_epoch=state.best_epoch if keep_best else None,
            best_weights=state.best_weights if keep_best else None,
        )
    summary = {
        "train": len(train_pairs), "validation": int(len(val_idx)), "tile": cfg.tile,
        "window": window, "base_filters": filters, "validation_input_ssim": round(input_ssim, 4),
        "fine_tune_from": fixed["fine_tune_from"],
        "resumed_at_epoch": initial_epoch if state is not None else None,
    }
    log.info("train.start", kind="reconstructor", epochs=cfg.epochs, steps=steps, **summary)
    if observer is not None:
        observer.on_start("reconstructor", cfg.epochs, steps, summary)
    _raise_if_stopped(stop)
    model.fit(sequence, epochs=cfg.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
              callbacks=[loop.callback()], shuffle=False, verbose=0)

    val_metrics = {k: _round(v) for k, v in (loop.best_val or {}).items()}
    val_metrics["input_ssim"] = _round(input_ssim)
    card = ModelCard(
        name=cfg.name,
        version=_version(cfg.version),
        kind="reconstructor",
        architecture="resunet",
        params={"base_filters": filters, "parameter_count": int(model.count_params())},
        input=reconstructor_input_spec(None),
        training=_training_info(
            data=folder.describe(), command=cfg.command, seed=cfg.seed, loop=loop,
            extra={
                "mode": "fine-tune" if fine_tune else "scratch",
                "base_model": fixed["fine_tune_from"],
                "segments": segments,
                "checkpoint": f"{checkpoint.CHECKPOINT_DIR}/{checkpoint.STATE_FILE} "
                              "(--resume continues it)",
                "optimizer": "Nadam",
                "loss": "1 - SSIM(max_val=255)",
                "schedule": "lr 2e-4, 1e-4 from epoch 25" if fine_tune else "lr 1e-3 (Nadam default)",
                "schedule_override": "see segments[].learning_rate (constant where set)",
                "batch_size": cfg.batch_size, "steps_per_epoch": steps,
                "tile": cfg.tile, "window": window,
                "tiles": "random tiles of the frame mirrored by 92 px (real context inside "
                         "the frame, mirrored at its borders, as the runtime's tiler)",
                "val_fraction": cfg.val_fraction, "val_tiles_per_pair": cfg.val_tiles_per_pair,
                "augmentation": "flips+rot90" if cfg.augment else None,
                "train_pairs": len(train_pairs), "validation_pairs": int(len(val_idx)),
                "seconds": round(time.perf_counter() - started, 1),
            },
        ),
        metrics={"validation": val_metrics},
    )
    return _finish(model=model, loop=loop, out=Path(cfg.out), card=card)


# Any: a Keras model (Keras ships no type hints)
def _restore_optimizer(model: Any, values: list[np.ndarray], out: Path) -> None:
    from refocusd.models.checkpoint import CheckpointError

    variables = model.optimizer.variables
    if len(variables) != len(values):
        raise CheckpointError(
            f"the optimizer state in {out} has {len(values)} variables, the network needs "
            f"{len(variables)}"
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


# Any: a card's free-form JSON 'data' entry (a dict, a list or a string)
def _data_identity(data: Any) -> Any:
    """What makes two training data sets the same: the manifest's SHA-256, else the folder."""
    if not isinstance(data, dict):
        return data
    manifest = data.get("manifest")
    if isinstance(manifest, dict) and manifest.get("sha256"):
        return manifest["sha256"]
    return data.get("folder")


def _report_dict(report: EpochReport) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(report)


def _utc_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _start_head_at(model: Any, level: float) -> None:  # Any: a Keras/TensorFlow object (they ship no type hints)
    """Start the 1x1 head's bias at the targets' mean intensity.

    The head is clamped to 0..255 by a ReLU; from the default zero bias half its outputs
    start clamped (no gradient) and Nadam moves the bias ~lr per step, so climbing to the
    mid-grey of the targets would take most of a CPU-sized budget. Starting at the mean
    only changes the starting point, not the network.
    """
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, np.full_like(bias, level)])


def _infer_base_filters(model: Any) -> int:  # Any: a Keras/TensorFlow object (they ship no type hints)
    """Width of the first encoder convolution (for base models whose card lacks it)."""
    return int(model.get_layer("enc1_conv1").filters)
