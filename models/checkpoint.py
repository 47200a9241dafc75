"""Resumable training state: one ``.npz`` file written atomically after every full epoch
(and when a run is stopped: the cut-short epoch then counts as run).

``OUT/checkpoint/state.npz`` holds the network's current weights, the optimizer's variables
(Nadam's moments and step counter), the best weights so far and a JSON record (epochs and
steps done, seed, the settings that must not change on resume, the history and the data of
every training segment). ``refocusd train reconstructor --resume`` continues from it; the
file is replaced by a rename, so a crash leaves the previous epoch's state intact.
Pure numpy: no TensorFlow here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refocusd.models.api import ModelError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.npz"
STATE_FORMAT = "refocusd.train-state/1"


class CheckpointError(ModelError):
    """No usable training state to resume from, or one made with incompatible settings."""


@dataclass(slots=True)
class TrainingState:
    """Everything needed to continue a run where it stopped."""

    epochs_done: int
    steps_done: int
    seed: int
    fixed: dict[str, Any]  # settings a resumed run must share (width, tile, batch, steps)
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    best_weights: list[np.ndarray] | None
    best_val: dict[str, float] | None
    best_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)  # one per train/resume call


def state_path(out: Path) -> Path:
    return Path(out) / CHECKPOINT_DIR / STATE_FILE


def save_state(out: Path, state: TrainingState) -> Path:
    """Write ``state`` to ``OUT/checkpoint/state.npz`` (temp file + fsync + rename)."""
    path = state_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format": STATE_FORMAT,
        "epochs_done": state.epochs_done,
        "steps_done": state.steps_done,
        "seed": state.seed,
        "fixed": state.fixed,
        "best_val": state.best_val,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "segments": state.segments,
        "counts": {
            "weights": len(state.weights),
            "optimizer": len(state.optimizer),
            "best": len(state.best_weights) if state.best_weights is not None else 0,
        },
    }
    arrays: dict[str, np.ndarray] = {"record": np.frombuffer(json.dumps(record).encode(), np.uint8)}
    for prefix, values in (("w", state.weights), ("o", state.optimizer),
                           ("b", state.best_weights or [])):
        for i, value in enumerate(values):
            arrays[f"{prefix}{i}"] = np.asarray(value)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_state(out: Path) -> TrainingState:
    """The state a previous run of ``OUT`` left, or :class:`CheckpointError`."""
    path = state_path(out)
    if not path.is_file():
        raise CheckpointError(
            f"nothing to resume: {path} does not exist (train into --out without --resume first)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            record = json.loads(bytes(data["record"]).decode())
            counts = record["counts"]
            weights = [data[f"w{i}"] for i in range(counts["weights"])]
            optimizer = [data[f"o{i}"] for i in range(counts["optimizer"])]
            best = [data[f"b{i}"] for i in range(counts["best"])] or None
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"unreadable training state {path}: {exc}") from exc
    if record.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a {STATE_FORMAT} file")
    return TrainingState(
        epochs_done=int(record["epochs_done"]),
        steps_done=int(record["steps_done"]),
        seed=int(record["seed"]),
        fixed=dict(record["fixed"]),
        weights=weights,
        optimizer=optimizer,
        best_weights=best,
        best_val=record["best_val"],
        best_epoch=record["best_epoch"],
        history=list(record["history"]),
        segments=list(record["segments"]),
    )


def check_compatible(state: TrainingState, fixed: dict[str, Any], seed: int, out: Path) -> None:
    """A resumed run must keep the network, tiles, batches, steps and seed of the first."""
    changed = {k: (state.fixed.get(k), v) for k, v in fixed.items() if state.fixed.get(k) != v}
    if seed != state.seed:
        changed["seed"] = (state.seed, seed)
    if changed:
        detail = ", ".join(f"{k} was {old}, now {new}" for k, (old, new) in changed.items())
        raise CheckpointError(f"cannot resume {out} with different settings: {detail}")
