"""Self-calibration: teach the classifier the sample in front of it, without a person labelling.

Input: z-series at a few positions (snapped by a driver with stage control, or a z-stack
file the user exported). Each series' focus is the sample's own focus peak: the focus
measure's maximum, refined by a parabola through it and its neighbours. A plane within
``tolerance_um`` of the peak is focused, one at least ``2 × tolerance_um`` away defocused
(the band between is neither), and ``z − peak`` is its signed defocus.

The shipped classifier is then fine-tuned on every position but one (transfer learning,
the paper's section 2.6); the held-out position is scored before and after (accuracy, AUC,
defocus error where the model estimates one) and the figures go into the new model
folder's card, which ``[models] classifier`` can name. With a single position the
held-out set is every other plane of it (the card says so).
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import tifffile

from refocusd.models.api import FocusClassifier
from refocusd.models.focus_measures import FOCUS_MEASURES

log = structlog.get_logger(__name__)

MIN_PLANES = 5


class ZStackError(ValueError):
    """A z-series that cannot calibrate anything (unreadable, one plane, no focus peak)."""


@dataclass(frozen=True, slots=True)
class ZSeries:
    """Planes of one position at increasing ``z_um`` (µm, any origin)."""

    name: str
    z_um: np.ndarray
    planes: tuple[np.ndarray, ...]
    pixel_size_um: float | None = None

    def __post_init__(self) -> None:
        if len(self.planes) != len(self.z_um):
            raise ZStackError(f"{self.name}: {len(self.planes)} planes but {len(self.z_um)} z values")
        if len(self.planes) < 2:
            raise ZStackError(f"{self.name} has {len(self.planes)} plane; a z-series needs at least {MIN_PLANES}")
        if len(self.planes) < MIN_PLANES:
            raise ZStackError(f"{self.name} has {len(self.planes)} planes; a z-series needs at least {MIN_PLANES}")


@dataclass(frozen=True, slots=True)
class LabelledPlane:
    pixels: np.ndarray
    focused: bool
    defocus_um: float  # z − the position's focus peak
    position: str


@dataclass(frozen=True, slots=True)
class HeldOutScores:
    accuracy: float
    auc: float | None
    defocus_mae_um: float | None
    planes: int

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": round(self.accuracy, 4), "auc": None if self.auc is None else round(self.auc, 4),
                "defocus_mae_um": None if self.defocus_mae_um is None else round(self.defocus_mae_um, 3),
                "planes": self.planes}


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    folder: Path
    model_id: str
    peaks_um: dict[str, float]
    before: HeldOutScores
    after: HeldOutScores
    held_out: str
    train_planes: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "model": self.model_id, "peaks_um": self.peaks_um,
                "held_out": self.held_out, "train_planes": self.train_planes,
                "before": self.before.as_dict(), "after": self.after.as_dict(), "seconds": round(self.seconds, 2),
                **self.details}


# ---------------------------------------------------------------------------- reading


def read_zstack(path: Path, z_step_um: float) -> ZSeries:
    """A multi-page TIFF (one plane per page, or a Z×Y×X array) or an ND2 z-series."""
    path = Path(path)
    if not z_step_um > 0 or not math.isfinite(z_step_um):
        raise ZStackError(f"--z-step-um must be a positive number of µm, got {z_step_um}")
    if not path.is_file():
        raise ZStackError(f"z-stack {path} does not exist")
    try:
        stack = _read_nd2(path) if path.suffix.lower() == ".nd2" else np.asarray(tifffile.imread(path))
    except ZStackError:
        raise
    except Exception as exc:  # any decoder failure means "unreadable": name the file
        raise ZStackError(f"cannot read z-stack {path}: {type(exc).__name__}: {exc}") from exc
    stack = np.squeeze(stack)
    if stack.size == 0:
        raise ZStackError(f"cannot read z-stack {path}: the file holds no image data")
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim == 4 and stack.shape[-1] in (3, 4):
        stack = stack[..., :3].mean(axis=-1)
    if stack.ndim != 3:
        raise ZStackError(f"z-stack {path}: expected planes × rows × columns, got shape {stack.shape}")
    planes = tuple(np.asarray(p) for p in stack)
    return ZSeries(name=path.name, z_um=np.arange(len(planes)) * float(z_step_um), planes=planes)


def _read_nd2(path: Path) -> np.ndarray:
    import nd2

    with nd2.ND2File(path) as f:
        sizes = dict(f.sizes)
        if "Z" not in sizes:
            raise ZStackError(f"{path} has no Z axis (axes {', '.join(sizes)})")
        data = np.asarray(f.asarray())
        axes = list(sizes)
    # Keep Z, Y, X: the first index of every other axis (one position, time point, channel).
    index = tuple(slice(None) if a in ("Z", "Y", "X") else 0 for a in axes)
    return data[index]


# --------------------------------------------------------------------------- labelling


def focus_peak(series: ZSeries, measure: str = "normalized_variance") -> float:
    """z of the sharpest plane, refined by a parabola through it and its neighbours."""
    score = FOCUS_MEASURES[measure]
    scores = np.array([score(p) for p in series.planes], float)
    best = int(np.argmax(scores))
    if best in (0, len(scores) - 1):
        edge = "first" if best == 0 else "last"
        raise ZStackError(
            f"{series.name}: no focus peak inside the z range (the sharpest plane is the {edge}, "
            f"z={series.z_um[best]:.2f} µm); take a z-series that brackets focus"
        )
    left, centre, right = scores[best - 1], scores[best], scores[best + 1]
    curvature = left - 2 * centre + right
    offset = 0.0 if curvature >= 0 else float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
    step = float(series.z_um[best + 1] - series.z_um[best - 1]) / 2
    return float(series.z_um[best] + offset * step)


def label_planes(series: ZSeries, peak_um: float, tolerance_um: float) -> list[LabelledPlane]:
    out = []
    for z, pixels in zip(series.z_um, series.planes, strict=True):
        distance = float(z - peak_um)
        if abs(distance) <= tolerance_um:
            out.append(LabelledPlane(pixels, True, distance, series.name))
        elif abs(distance) >= 2 * tolerance_um:
            out.append(LabelledPlane(pixels, False, distance, series.name))
    return out


# ---------------------------------------------------------------------------- scoring


def score_held_out(classifier: FocusClassifier, planes: Sequence[LabelledPlane], pixel_size_um: float | None,
                   threshold: float | None = None) -> HeldOutScores:
    """Accuracy (at the classifier's own threshold, or ``threshold`` on p_focused), AUC and
    mean |defocus error| on ``planes``."""
    from refocusd.models.evaluation import roc_auc

    verdicts = [classifier.classify(p.pixels, pixel_size_um=pixel_size_um) for p in planes]
    truth = np.array([p.focused for p in planes])
    p_focused = np.array([v.p_focused for v in verdicts])
    predicted = np.array([v.label == "focused" for v in verdicts]) if threshold is None else p_focused >= threshold
    auc = roc_auc(p_focused, truth) if 0 < truth.sum() < len(truth) else None
    errors = [abs(v.defocus_um - p.defocus_um) for v, p in zip(verdicts, planes, strict=True)
              if v.defocus_um is not None]
    return HeldOutScores(
        accuracy=float((predicted == truth).mean()),
        auc=None if auc is None or not math.isfinite(auc) else float(auc),
        defocus_mae_um=float(np.mean(errors)) if errors else None,
        planes=len(planes),
    )


# --------------------------------------------------------------------------- fine-tune


def self_calibrate(
    series: Sequence[ZSeries],
    *,
    out: Path,
    base: str = "default",
    tolerance_um: float = 2.0,
    epochs: int = 8,
    measure: str = "normalized_variance",
    sample: str = "",
    seed: int = 0,
    learning_rate: float | None = None,
    stop: threading.Event | None = None,
) -> CalibrationReport:
    """Label, fine-tune ``base`` on all positions but the last, score the last before and
    after, write the model folder ``out``."""
    from refocusd.models.runtime import load_classifier
    from refocusd.models.store import load_card

    if not series:
        raise ZStackError("no z-series to calibrate on")
    began = time.perf_counter()
    peaks = {s.name: focus_peak(s, measure) for s in series}
    labelled = {s.name: label_planes(s, peaks[s.name], tolerance_um) for s in series}
    for s in series:
        kinds = {p.focused for p in labelled[s.name]}
        if kinds != {True, False}:
            raise ZStackError(
                f"{s.name}: planes on only one side of the ±{tolerance_um} µm focus band; "
                "take a z-series that reaches well out of focus"
            )
    if len(series) > 1:
        held_name = series[-1].name
        held = labelled[held_name]
        train = [p for s in series[:-1] for p in labelled[s.name]]
    else:
        held_name = f"{series[0].name} (every other plane)"
        planes = labelled[series[0].name]
        held, train = planes[1::2], planes[0::2]
    pixel_size = series[0].pixel_size_um
    log.info("calibrate.labelled", peaks_um={k: round(v, 3) for k, v in peaks.items()}, train_planes=len(train),
             held_out=held_name, held_out_planes=len(held))

    before = score_held_out(load_classifier(base, device="cpu"), held, pixel_size)
    with tempfile.TemporaryDirectory(prefix="refocusd-calibrate-") as tmp:
        data = Path(tmp)
        _write_training_folder(data, train, pixel_size)
        result = _fine_tune(base, data, Path(out), epochs=epochs, seed=seed, learning_rate=learning_rate, stop=stop)
    calibrated = load_classifier(str(out), device="cpu")
    threshold = _fit_p_threshold(calibrated, train, pixel_size)
    after = score_held_out(calibrated, held, pixel_size, threshold)
    seconds = time.perf_counter() - began
    details = {
        "sample": sample,
        "base": base,
        "positions": [s.name for s in series],
        "planes": {s.name: len(s.planes) for s in series},
        "z_step_um": {s.name: float(np.median(np.diff(s.z_um))) for s in series},
        "tolerance_um": tolerance_um,
        "measure": measure,
        "epochs": epochs,
        "learning_rate": learning_rate,
    }
    _write_card_metrics(Path(out), load_card(Path(out)), {
        "self_calibration": {**details, "peaks_um": peaks, "held_out": held_name, "threshold": threshold,
                             "before": before.as_dict(), "after": after.as_dict(), "seconds": round(seconds, 2)},
    })
    report = CalibrationReport(Path(out), result.card.model_id, peaks, before, after, held_name, len(train),
                               seconds, {**details, "threshold": threshold})
    log.info("calibrate.fine_tuned", before=before.as_dict(), after=after.as_dict(), seconds=round(seconds, 1),
             folder=str(out))
    return report


def _fit_p_threshold(classifier: FocusClassifier, planes: Sequence[LabelledPlane],
                     pixel_size_um: float | None) -> float:
    """The p_focused threshold that sorts the training planes best (the sample's own
    operating point: a new kind of sample can rank planes perfectly yet sit on one side of
    0.5). Use it as ``[models] threshold``; ``on_start`` does."""
    from refocusd.models.focus_measure_classifier import fit_threshold

    p = [classifier.classify(x.pixels, pixel_size_um=pixel_size_um).p_focused for x in planes]
    focused = [v for v, x in zip(p, planes, strict=True) if x.focused]
    defocused = [v for v, x in zip(p, planes, strict=True) if not x.focused]
    threshold, _ = fit_threshold(focused, defocused)
    return float(np.clip(threshold, 1e-6, 1 - 1e-6))


def _write_training_folder(data: Path, planes: Sequence[LabelledPlane], pixel_size_um: float | None) -> None:
    """``focused/`` and ``defocused/`` TIFFs plus a manifest with each plane's signed
    defocus (what a model with a defocus head learns from)."""
    import json

    items = []
    for i, plane in enumerate(planes):
        relative = f"{'focused' if plane.focused else 'defocused'}/{i:04d}_dz{plane.defocus_um:+07.2f}.tif"
        (data / relative).parent.mkdir(exist_ok=True)
        tifffile.imwrite(data / relative, plane.pixels)
        items.append({"path": relative, "z_um": round(plane.defocus_um, 4), "pixel_size_um": pixel_size_um,
                      "domain": f"calibration/{plane.position}"})
    (data / "manifest.json").write_text(json.dumps({"kind": "classifier", "items": items}), encoding="utf-8")


def _fine_tune(base: str, data: Path, out: Path, *, epochs: int, seed: int, learning_rate: float | None,
               stop: threading.Event | None) -> Any:
    """Transfer learning from ``base``: the crop classifier and its defocus head when the
    base is one, else the whole-frame SDCNN (classification only)."""
    from refocusd.models.store import check_model
    from refocusd.models.training import ClassifierTrainConfig, train_classifier

    card = check_model(base, "classifier")
    if card.architecture != "sdcnn":
        from refocusd.models.focus_training import CropTrainConfig, train_crop_classifier

        return train_crop_classifier(
            CropTrainConfig(data=(data,), out=out, base=base, epochs=epochs, seed=seed,
                            learning_rate=learning_rate, name=f"{card.name}-calibrated",
                            command="refocusd calibrate"),
            stop=stop,
        )
    return train_classifier(
        ClassifierTrainConfig(data=data, out=out, base=base, epochs=epochs, seed=seed,
                              name="sdcnn-calibrated", command="refocusd calibrate"),
        stop=stop,
    )


# Any: a ModelCard, imported lazily with the TensorFlow side of models/
def _write_card_metrics(folder: Path, card: Any, metrics: dict[str, Any]) -> None:
    import json
    import os

    updated = card.model_copy(update={"metrics": {**card.metrics, **metrics}})
    path = folder / "model.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(updated.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# Any: a drivers.CalibrationSource and the service's Settings (models/ imports neither layer)
def calibrate_from_driver(source: Any, settings: Any, out: Path, *, sample: str = "") -> CalibrationReport:
    """``[models] calibrate = "on_start"``: z-series from a driver with stage control
    (:class:`~refocusd.drivers.base.CalibrationSource`), then :func:`self_calibrate`.

    ``settings`` is the ``[models]`` section. Positions whose series has no focus peak
    (the device autofocus missed, say) are left out; at least one must remain.
    """
    step, reach = settings.calibrate_step_um, settings.calibrate_range_um
    offsets = tuple(float(o) for o in np.arange(-reach, reach + step / 2, step))
    usable = []
    for planes in source.calibration_z_series(settings.calibrate_positions, offsets):
        try:
            series = ZSeries(planes.name, np.asarray(planes.z_um, float), tuple(planes.planes), planes.pixel_size_um)
            focus_peak(series)
        except ZStackError as exc:
            log.warning("calibrate.position_skipped", position=planes.name, reason=str(exc))
            continue
        usable.append(series)
    if not usable:
        raise ZStackError("no calibration position has a focus peak inside its z-series")
    base = settings.classifier if settings.classifier and not settings.classifier.endswith(".json") else "default"
    return self_calibrate(usable, out=out, base=base, tolerance_um=settings.calibrate_tolerance_um,
                          epochs=settings.calibrate_epochs, sample=sample)
