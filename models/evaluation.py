"""Held-out evaluation of the classifier and the reconstructor.

Metrics are plain numpy/scikit-image (scikit-learn is not a dependency): ROC AUC is the
Mann–Whitney U statistic with tie-averaged ranks, SSIM/PSNR come from ``skimage.metrics``
with ``data_range`` taken from the pixel type. The reconstruction report compares four
things against the focused targets — the defocused inputs, the network's reconstructions,
a Richardson–Lucy baseline and a physics-aware Wiener deconvolution that knows the
simulator's optics and the true z (:mod:`refocusd.models.physics`) — overall and per
domain, and repeats the paper's realism check for each (can the classifier tell focused
targets from them?).

TensorFlow is only touched through ``refocusd.models.runtime`` (imported lazily).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict

from refocusd.config.files import atomic_write
from refocusd.models.api import FocusClassifier
from refocusd.models.datasets import (
    DEFOCUSED,
    FOCUSED,
    ClassifierFolder,
    PairedFolder,
    read_image,
    scan_classifier_folder,
    scan_paired_folder,
)

log = structlog.get_logger(__name__)

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; JSON cannot carry inf
_EVAL_BATCH = 16


# ----------------------------------------------------------------------------- metrics


def roc_auc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative).

    Ties count one half (average ranks), exactly like ``sklearn.metrics.roc_auc_score``.
    NaN when one class is absent.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    if scores.shape != positive.shape:
        raise ValueError(f"{scores.shape[0]} scores but {positive.shape[0]} labels")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)  # 1-based, ties averaged
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


class ConfusionMatrix(BaseModel):
    """Rows: true class, columns: predicted class, in the order (focused, defocused)."""

    model_config = ConfigDict(frozen=True)

    focused_as_focused: int
    focused_as_defocused: int
    defocused_as_focused: int
    defocused_as_defocused: int

    @classmethod
    def from_labels(cls, true: np.ndarray, predicted: np.ndarray) -> ConfusionMatrix:
        true, predicted = np.asarray(true), np.asarray(predicted)

        def count(t: int, p: int) -> int:
            return int(np.sum((true == t) & (predicted == p)))

        return cls(
            focused_as_focused=count(FOCUSED, FOCUSED),
            focused_as_defocused=count(FOCUSED, DEFOCUSED),
            defocused_as_focused=count(DEFOCUSED, FOCUSED),
            defocused_as_defocused=count(DEFOCUSED, DEFOCUSED),
        )

    def as_rows(self) -> list[list[int]]:
        return [
            [self.focused_as_focused, self.focused_as_defocused],
            [self.defocused_as_focused, self.defocused_as_defocused],
        ]


def data_range(image: np.ndarray) -> float:
    """The dynamic range SSIM/PSNR are measured against: the full range of the pixel type
    for integers (255 for 8-bit, 65535 for 16-bit), else the image's own span (1 if flat)."""
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return float(info.max) - float(info.min)
    span = float(np.max(image)) - float(np.min(image))
    return span if span > 0 else 1.0


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Structural similarity of ``test`` to ``reference`` (mono or RGB, any dtype)."""
    from skimage.metrics import structural_similarity

    _check_same(reference, test)
    channel_axis = -1 if reference.ndim == 3 else None
    return float(
        structural_similarity(
            reference.astype(np.float64),
            test.astype(np.float64),
            data_range=data_range(reference),
            channel_axis=channel_axis,
        )
    )


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, capped at :data:`PSNR_CAP_DB`."""
    _check_same(reference, test)
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(data_range(reference) ** 2 / mse))


def _check_same(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


# ------------------------------------------------------------- Richardson–Lucy baseline


def gaussian_psf(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma**2))
    psf = np.outer(g, g)
    return psf / psf.sum()


def disc_psf(radius: float) -> np.ndarray:
    """Geometric-optics defocus PSF: a uniform disc (pillbox), anti-aliased by 4× supersampling."""
    r = int(math.ceil(radius))
    fine = (np.arange(-(r + 0.5) * 4 + 0.5, (r + 0.5) * 4, 1.0)) / 4.0
    yy, xx = np.meshgrid(fine, fine, indexing="ij")
    inside = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    size = 2 * r + 1
    psf = inside.reshape(size, 4, size, 4).mean(axis=(1, 3))
    return psf / psf.sum()


@dataclass(frozen=True, slots=True)
class RLSetting:
    """One point of the Richardson–Lucy search grid."""

    psf: str  # "gaussian" | "disc"
    size: float  # sigma (gaussian) or radius (disc), in pixels
    iterations: int

    def kernel(self) -> np.ndarray:
        return gaussian_psf(self.size) if self.psf == "gaussian" else disc_psf(self.size)

    def label(self) -> str:
        return f"{self.psf}({self.size:g}px)x{self.iterations}"


# The grid is deliberately generous: the setting is chosen per pair, on the pair's own
# target (an oracle choice, as the paper's per-image grid search), so the baseline is an
# upper bound of what Richardson–Lucy with a Gaussian or disc PSF can do on these images.
RL_GRID: tuple[RLSetting, ...] = tuple(
    RLSetting(kind, size, iterations)
    for kind, sizes in (("gaussian", (1.0, 2.0, 3.5, 5.5, 8.0)), ("disc", (2.0, 4.0, 7.0, 11.0)))
    for size in sizes
    for iterations in (5, 15, 40)
)
_RL_SEARCH_CROP = 192  # the grid is searched on a central crop, the winner run on the frame


def richardson_lucy(image: np.ndarray, setting: RLSetting) -> np.ndarray:
    """``skimage.restoration.richardson_lucy`` per channel, in the image's own dtype/range."""
    from skimage.restoration import richardson_lucy as rl

    low = float(np.iinfo(image.dtype).min) if np.issubdtype(image.dtype, np.integer) else 0.0
    scale = data_range(image)
    work = (image.astype(np.float64) - low) / scale
    kernel = setting.kernel()
    # skimage convolves with zero padding, which darkens a PSF-wide rim; mirror the frame
    # out first (as a careful user would) so the baseline is not penalised at its edges.
    pad = 2 * kernel.shape[0]
    channels = [work] if work.ndim == 2 else [work[..., c] for c in range(work.shape[-1])]
    restored = [
        rl(np.pad(np.clip(ch, 0.0, 1.0), pad, mode="symmetric"), kernel,
           num_iter=setting.iterations)[pad:-pad, pad:-pad]
        for ch in channels
    ]
    out = restored[0] if work.ndim == 2 else np.stack(restored, axis=-1)
    out = out * scale + low
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(image.dtype)


def _central_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top : top + size, left : left + size]


def best_richardson_lucy(
    defocused: np.ndarray, target: np.ndarray, grid: Sequence[RLSetting] = RL_GRID
) -> tuple[np.ndarray, RLSetting]:
    """The Richardson–Lucy restoration with the best SSIM to ``target`` over ``grid``.

    Searched on a central crop (fast), then the winning setting is applied to the whole
    frame; the unrestored input is a candidate too, so the baseline never does worse than
    doing nothing on the crop.
    """
    crop_in = _central_crop(defocused, _RL_SEARCH_CROP)
    crop_target = _central_crop(target, _RL_SEARCH_CROP)
    best: RLSetting | None = None
    best_score = ssim(crop_target, crop_in)
    for setting in grid:
        score = ssim(crop_target, richardson_lucy(crop_in, setting))
        if score > best_score:
            best, best_score = setting, score
    if best is None:
        return defocused.copy(), RLSetting("none", 0.0, 0)
    return richardson_lucy(defocused, best), best


# ------------------------------------------------------------------------------ reports


class ClassifierReport(BaseModel):
    """``refocusd evaluate classifier`` output (also stored in model cards)."""

    kind: str = "classifier"
    model: str
    data: dict[str, Any]
    n: int
    threshold: float
    accuracy: float
    auc: float | None  # None when the folder holds one class only
    confusion: ConfusionMatrix
    seconds: float
    rows: list[dict[str, Any]] = []  # per domain, mode, objective, frame size and |z|/DoF band
    defocus: dict[str, Any] | None = None  # signed-defocus error (frames with a known z)


class QualityStats(BaseModel):
    mean_ssim: float
    mean_psnr: float


class DomainReport(BaseModel):
    """The same rows for the pairs of one domain (``mode=...`` or ``specimen=...``; a pair
    is in one of each)."""

    n: int
    input: QualityStats
    reconstruction: QualityStats
    richardson_lucy: QualityStats | None
    physics: QualityStats | None
    realism_auc_focused_vs_reconstructed: float | None
    realism_auc_focused_vs_richardson_lucy: float | None
    realism_auc_focused_vs_physics: float | None


class ReconstructorReport(BaseModel):
    """``refocusd evaluate reconstructor`` output (also stored in model cards)."""

    kind: str = "reconstructor"
    model: str
    data: dict[str, Any]
    n: int
    input: QualityStats
    reconstruction: QualityStats
    richardson_lucy: QualityStats | None  # None with the baseline switched off
    richardson_lucy_settings: dict[str, int]
    # Wiener inversion of the simulator's weak-object transfer functions at the true z
    # (models/physics.py); None when switched off or the data carry no optics and z.
    physics: QualityStats | None = None
    physics_settings: dict[str, int] = {}
    physics_pairs: int = 0  # pairs whose manifest gave the optics and the true z
    classifier: str | None
    realism_auc_focused_vs_defocused: float | None
    realism_auc_focused_vs_reconstructed: float | None
    realism_auc_focused_vs_richardson_lucy: float | None = None
    realism_auc_focused_vs_physics: float | None = None
    domains: dict[str, DomainReport] = {}
    seconds: float


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _p_focused(classifier: FocusClassifier, frames: Sequence[np.ndarray]) -> list[float]:
    return [v.p_focused for v in classifier.classify_batch(list(frames))]


def _group_row(group: str, value: str, p: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    predicted = np.where(p >= threshold, FOCUSED, DEFOCUSED)
    return {
        "group": group, "value": value, "n": int(len(p)),
        "accuracy": float(np.mean(predicted == labels)),
        "auc": _finite_or_none(roc_auc(p, labels == FOCUSED)),
        "missed_defocused": int(np.sum((labels == DEFOCUSED) & (predicted == FOCUSED))),
        "false_alarms": int(np.sum((labels == FOCUSED) & (predicted == DEFOCUSED))),
    }


SIGN_MODES = ("positive_phase", "negative_phase", "brightfield", "phase_contrast")

# |z| in depths of field: the label boundary is at 0.5, so the two bands beside it hold
# frames that differ by a fraction of a depth of field yet carry opposite labels.
DEFOCUS_BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, math.inf))


def defocus_band(z_um: float | None, dof_um: float | None) -> str:
    """The frame's ``|z| / DoF`` band, e.g. ``"0.5-1 DoF"``; ``"?"`` without a known z."""
    if z_um is None or not dof_um:
        return "?"
    r = abs(z_um) / dof_um
    for lo, hi in DEFOCUS_BANDS:
        if r <= hi:
            return f"{lo:g}-{hi:g} DoF" if math.isfinite(hi) else f">{lo:g} DoF"
    raise AssertionError("unreachable: the last band is open")


def defocus_summary(z: np.ndarray, estimate: np.ndarray, sigma: np.ndarray, dof: np.ndarray,
                    modes: Sequence[str], objectives: Sequence[str]) -> dict[str, Any] | None:
    """Signed-defocus errors: all frames, within ±30 µm at 10x (in µm and depths of field),
    and the sign beyond 2 depths of field in phase contrast and bright field."""
    known = np.isfinite(z) & np.isfinite(estimate)
    if not known.any():
        return None
    err = np.abs(estimate - z)
    out: dict[str, Any] = {"n": int(known.sum()),
                           "median_abs_error_um": float(np.median(err[known])),
                           "median_sigma_um": float(np.median(sigma[known]))}
    ten = known & np.array([o == "10x" for o in objectives]) & (np.abs(z) <= 30.0)
    if ten.any():
        out["10x_within_30um"] = {
            "n": int(ten.sum()), "median_abs_error_um": float(np.median(err[ten])),
            "median_abs_error_dof": float(np.median(err[ten] / dof[ten])) if np.isfinite(dof[ten]).all() else None,
            "median_dof_um": float(np.median(dof[ten])) if np.isfinite(dof[ten]).all() else None,
        }
    far = known & np.isfinite(dof) & (np.abs(z) > 2 * dof) & np.array([m.split("/")[0] in SIGN_MODES for m in modes])
    if far.any():
        out["sign_beyond_2dof_pc_bf"] = {
            "n": int(far.sum()), "correct": float(np.mean(np.sign(estimate[far]) == np.sign(z[far]))),
        }
    return out


def evaluate_classifier(
    model: str,
    data: Path | str | ClassifierFolder,
    *,
    device: str = "auto",
    threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
    pixel_size_um: float | None = None,
) -> ClassifierReport:
    """Accuracy, ROC AUC and confusion matrix of a classifier on a labelled folder, with
    one row per domain (synth manifests), per objective and per frame size, and the error
    of the signed defocus where the manifest records each frame's z. Each frame is
    classified at the pixel size its manifest (or, failing that, ``pixel_size_um``) says."""
    from refocusd.models.datasets import ClassifierData
    from refocusd.models.frame_records import frame_infos
    from refocusd.models.runtime import load_classifier

    folder = data if isinstance(data, ClassifierFolder) else scan_classifier_folder(data)
    started = time.perf_counter()
    classifier = load_classifier(model, device=device, threshold=threshold)
    infos = frame_infos(ClassifierData((folder,)), pixel_size_um)
    paths, labels = folder.paths, folder.labels
    scores: list[float] = []
    defocus: list[float] = []
    sigma: list[float] = []
    sizes: list[str] = []
    for start in range(0, len(paths), _EVAL_BATCH):
        chunk = infos[start : start + _EVAL_BATCH]
        frames = [read_image(i.path) for i in chunk]
        sizes.extend(f"{f.shape[0]}x{f.shape[1]}" for f in frames)
        verdicts = classifier.classify_batch(frames, pixel_sizes=[i.pixel_size_um for i in chunk])
        for v in verdicts:
            scores.append(v.p_focused)
            defocus.append(math.nan if v.defocus_um is None else v.defocus_um)
            sigma.append(math.nan if v.defocus_sigma_um is None else v.defocus_sigma_um)
        if progress:
            progress(len(scores), len(paths))
    p = np.asarray(scores)
    predicted = np.where(p >= threshold, FOCUSED, DEFOCUSED)
    rows = []
    for group, values in (("domain", [i.domain for i in infos]),
                          ("mode", [i.domain.split("/")[0] for i in infos]),
                          ("specimen", [i.domain.split("/")[-1] for i in infos]),
                          ("objective", [i.objective or "?" for i in infos]), ("size", sizes),
                          ("defocus_band", [defocus_band(i.z_um, i.depth_of_field_um) for i in infos])):
        keys = np.asarray(values)
        if len(set(values)) > 1 or group == "size":
            rows.extend(_group_row(group, str(k), p[keys == k], labels[keys == k], threshold)
                        for k in sorted(set(values)))
    z = np.array([math.nan if i.z_um is None else i.z_um for i in infos])
    dof = np.array([math.nan if i.depth_of_field_um is None else i.depth_of_field_um for i in infos])
    report = ClassifierReport(
        model=classifier.model_id,
        data=folder.describe(),
        n=len(paths),
        threshold=threshold,
        accuracy=float(np.mean(predicted == labels)),
        auc=_finite_or_none(roc_auc(p, labels == FOCUSED)),
        confusion=ConfusionMatrix.from_labels(labels, predicted),
        seconds=time.perf_counter() - started,
        rows=rows,
        defocus=defocus_summary(z, np.asarray(defocus), np.asarray(sigma), dof,
                                [i.domain for i in infos], [i.objective for i in infos]),
    )
    log.info(
        "evaluate.classifier", model=report.model, n=report.n, accuracy=report.accuracy,
        auc=report.auc,
    )
    return report


def pair_records(folder: PairedFolder) -> dict[str, dict[str, Any]]:
    """Per-pair records of the folder's ``manifest.json`` (``refocusd synth`` writes one),
    by file name; empty for folders without one."""
    import json

    path = folder.root / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    items = manifest.get("items") if isinstance(manifest, dict) else None
    records: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if isinstance(item, dict) and "name" in item:
            records[str(item["name"])] = {**item, "_optics": _manifest_optics(manifest, item)}
    return records


def _manifest_optics(manifest: dict[str, Any], item: dict[str, Any]) -> Any:
    """The simulator's optics for one pair: its record's exact ``optics`` (the broadened
    simulator writes one per item), else the data set's table by objective."""
    from refocusd.models.synth.domains import optics_from_record
    from refocusd.models.synth.optics import OBJECTIVES

    spec = item.get("optics")
    if not isinstance(spec, dict):
        table = (manifest.get("parameters") or {}).get("optics") or {}
        spec = table.get(item.get("objective")) if isinstance(table, dict) else None
    if isinstance(spec, dict):
        try:
            return optics_from_record(spec)
        except (TypeError, ValueError):
            return None
    return OBJECTIVES.get(str(item.get("objective")))


def domains_of(record: dict[str, Any] | None) -> list[str]:
    """The domains a pair belongs to, from its manifest record: its imaging mode and its
    specimen where the simulator names them (``mode=dic``, ``specimen=clusters``), else its
    objective and modality."""
    if not record:
        return ["unknown"]
    named = [f"{axis}={record[axis]}" for axis in ("mode", "specimen") if record.get(axis)]
    if named:
        return named
    optics = record.get("_optics")
    # getattr: records of the older simulator carry no rebuilt Optics, only a 'modality' key
    modality = getattr(optics, "modality", None) or record.get("modality")
    return ["/".join(str(p) for p in (record.get("objective"), modality) if p) or "unknown"]


def evaluate_reconstructor(
    model: str,
    data: Path | str | PairedFolder,
    *,
    classifier: str | None = "default",
    device: str = "auto",
    richardson_lucy_baseline: bool = True,
    physics_baseline: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> ReconstructorReport:
    """SSIM/PSNR of inputs, reconstructions, Richardson–Lucy and the physics-aware Wiener
    baseline against the targets, overall and per domain, and the classifier's AUC on
    targets vs each of them (realism: lower = more like real focused frames)."""
    from refocusd.models.physics import best_physics_deconvolution
    from refocusd.models.runtime import load_classifier, load_reconstructor

    folder = data if isinstance(data, PairedFolder) else scan_paired_folder(data)
    started = time.perf_counter()
    reconstructor = load_reconstructor(model, device=device)
    judge = load_classifier(classifier, device=device) if classifier else None
    records = pair_records(folder)

    rows: list[dict[str, Any]] = []
    rl_used: dict[str, int] = {}
    physics_used: dict[str, int] = {}
    for index, name in enumerate(folder.names):
        source, target = folder.read_pair(name)
        record = records.get(name)
        restored = reconstructor.reconstruct(source)
        row: dict[str, Any] = {
            "domains": domains_of(record),
            "input": (ssim(target, source), psnr(target, source)),
            "reconstruction": (ssim(target, restored), psnr(target, restored)),
        }
        candidates = {"target": target, "input": source, "reconstruction": restored}
        if richardson_lucy_baseline:
            rl_image, setting = best_richardson_lucy(source, target)
            row["rl"] = (ssim(target, rl_image), psnr(target, rl_image))
            rl_used[setting.label()] = rl_used.get(setting.label(), 0) + 1
            candidates["rl"] = rl_image
        optics = record.get("_optics") if record else None
        if physics_baseline and optics is not None and record is not None and "z_um" in record:
            pixel = float(record.get("pixel_size_um") or 0) or None
            if pixel is not None:
                z = float(record["z_um"]) - float(record.get("target_z_um") or 0.0)
                phys, epsilon = best_physics_deconvolution(source, target, optics, pixel, z)
                row["physics"] = (ssim(target, phys), psnr(target, phys))
                physics_used[f"wiener(eps={epsilon:g})"] = physics_used.get(f"wiener(eps={epsilon:g})", 0) + 1
                candidates["physics"] = phys
        if judge is not None:
            keys = list(candidates)
            for key, p in zip(keys, _p_focused(judge, [candidates[k] for k in keys]), strict=True):
                row[f"p_{key}"] = p
        rows.append(row)
        if progress:
            progress(index + 1, len(folder.names))

    def stats(subset: list[dict[str, Any]], key: str) -> QualityStats | None:
        values = [r[key] for r in subset if key in r]
        if not values:
            return None
        arr = np.asarray(values)
        return QualityStats(mean_ssim=float(arr[:, 0].mean()), mean_psnr=float(arr[:, 1].mean()))

    def realism(subset: list[dict[str, Any]], key: str) -> float | None:
        pairs = [(r["p_target"], r[f"p_{key}"]) for r in subset if f"p_{key}" in r]
        if judge is None or not pairs:
            return None
        arr = np.asarray(pairs)
        scores = np.concatenate([arr[:, 0], arr[:, 1]])
        return _finite_or_none(roc_auc(scores, np.arange(scores.size) < len(arr)))

    empty = QualityStats(mean_ssim=math.nan, mean_psnr=math.nan)
    domains = {
        domain: DomainReport(
            n=len(subset),
            input=stats(subset, "input") or empty,
            reconstruction=stats(subset, "reconstruction") or empty,
            richardson_lucy=stats(subset, "rl"),
            physics=stats(subset, "physics"),
            realism_auc_focused_vs_reconstructed=realism(subset, "reconstruction"),
            realism_auc_focused_vs_richardson_lucy=realism(subset, "rl"),
            realism_auc_focused_vs_physics=realism(subset, "physics"),
        )
        for domain in sorted({d for r in rows for d in r["domains"]})
        for subset in [[r for r in rows if domain in r["domains"]]]
    }
    report = ReconstructorReport(
        model=reconstructor.model_id,
        data=folder.describe(),
        n=len(folder.names),
        input=stats(rows, "input") or empty,
        reconstruction=stats(rows, "reconstruction") or empty,
        richardson_lucy=(stats(rows, "rl") or empty) if richardson_lucy_baseline else None,
        richardson_lucy_settings=rl_used,
        physics=stats(rows, "physics"),
        physics_settings=physics_used,
        physics_pairs=sum("physics" in r for r in rows),
        classifier=judge.model_id if judge is not None else None,
        realism_auc_focused_vs_defocused=realism(rows, "input"),
        realism_auc_focused_vs_reconstructed=realism(rows, "reconstruction"),
        realism_auc_focused_vs_richardson_lucy=realism(rows, "rl"),
        realism_auc_focused_vs_physics=realism(rows, "physics"),
        domains=domains,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "evaluate.reconstructor",
        model=report.model,
        n=report.n,
        ssim_input=report.input.mean_ssim,
        ssim_reconstruction=report.reconstruction.mean_ssim,
        ssim_rl=report.richardson_lucy.mean_ssim if report.richardson_lucy else None,
        ssim_physics=report.physics.mean_ssim if report.physics else None,
        realism_auc=report.realism_auc_focused_vs_reconstructed,
    )
    return report


def record_report(folder: Path | str, key: str, report: BaseModel) -> Path:
    """Store ``report`` in ``folder``'s card under ``metrics[key]`` (weights untouched, so
    their SHA-256 still matches). Written to a temporary file and renamed."""
    import json

    from refocusd.models import store
    from refocusd.models.card import CARD_FILE

    folder = Path(folder)
    card = store.load_card(folder)
    metrics = {**card.metrics, key: report.model_dump(mode="json")}
    updated = card.model_copy(update={"metrics": metrics})
    path = folder / CARD_FILE
    atomic_write(path, json.dumps(updated.model_dump(mode="json"), indent=2) + "\n")
    log.info("evaluate.recorded", folder=str(folder), key=key, model=card.model_id)
    return path
