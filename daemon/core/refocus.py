"""Re-focus strategies: one move by the classifier's defocus estimate, a software z-sweep,
or the driver's own autofocus.

A strategy moves the focus drive and returns the z it settled on; the runner then asks
the driver to re-acquire, classifies the new frame and, if it is still defocused, calls
the strategy again with that frame (``RefocusRequest.attempt`` counts the calls, and
``history`` carries every plane seen so far in this recovery). Hardware errors surface as
:class:`RefocusFailed`.

Sign convention (the classifier's): ``defocus_um`` is the frame's z minus the focal plane,
so the correction is ``z_new = z_now − defocus_um``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import structlog

from refocusd.config.errors import RefocusdError
from refocusd.config.settings import RefocusSettings
from refocusd.models.focus_measures import FOCUS_MEASURES
from refocusd.drivers import DriverError, StageControl
from refocusd.models import FocusClassifier, Verdict

log = structlog.get_logger(__name__)

Scorer = Callable[[np.ndarray], float]


class RefocusFailed(RefocusdError, RuntimeError):
    """The strategy could not find or reach a focus position."""


@dataclass(frozen=True, slots=True)
class RefocusStep:
    """One plane seen during a recovery: where, how sharp, and what the classifier said.

    ``kind``: ``frame`` (the original or a re-acquisition), ``probe`` (the sign probe),
    ``refine`` (a refinement plane), ``sweep`` (a plane of the fallback sweep).
    """

    kind: str
    z_um: float
    score: float
    defocus_um: float | None = None
    sigma_um: float | None = None
    p_focused: float | None = None
    label: str | None = None

    @property
    def focused(self) -> bool:
        return self.label == "focused"

    def as_log(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "z_um": round(self.z_um, 3),
            "score": round(self.score, 6),
            "estimate_um": None if self.defocus_um is None else round(self.defocus_um, 3),
            "sigma_um": None if self.sigma_um is None else round(self.sigma_um, 3),
            "p_focused": None if self.p_focused is None else round(self.p_focused, 4),
            "label": self.label,
        }


@dataclass(frozen=True, slots=True)
class RefocusRequest:
    """The latest frame at the position being recovered, and the recovery so far."""

    pixels: np.ndarray
    verdict: Verdict
    attempt: int = 1
    history: tuple[RefocusStep, ...] = ()
    pixel_size_um: float | None = None


@dataclass(frozen=True, slots=True)
class RefocusResult:
    """``frames``: planes the strategy exposed itself (the re-acquisition not included);
    ``steps``: the recovery's planes so far, for the next attempt's request."""

    z_um: float
    strategy: str
    scores: tuple[tuple[float, float], ...] = field(default=())
    frames: int = 0
    method: str = ""
    steps: tuple[RefocusStep, ...] = field(default=())


class RefocusStrategy(Protocol):
    name: str

    def refocus(self, stage: StageControl, request: RefocusRequest | None = None) -> RefocusResult: ...


class DeviceAutofocus:
    """The microscope's own autofocus (hardware or vendor software)."""

    name = "device"

    def refocus(self, stage: StageControl, request: RefocusRequest | None = None) -> RefocusResult:
        try:
            return RefocusResult(z_um=float(stage.autofocus()), strategy=self.name, method="device")
        except DriverError as exc:
            raise RefocusFailed(f"device autofocus failed: {exc}") from exc


class SweepAutofocus:
    """Step through ±range around the current z, score each plane, fit the peak.

    Coarse to fine: a first pass at ``step_um`` over the whole range, then (with
    ``fine_step_um``) a few planes at the fine step on either side of the best coarse
    plane. The peak is refined with a parabola through the best plane and its neighbours,
    so the result is usually better than the step; a coarse peak on the edge of the range
    means focus lies outside it and the sweep fails rather than guessing.
    """

    name = "sweep"

    def __init__(
        self,
        scorer: Scorer,
        *,
        range_um: float,
        step_um: float,
        fine_step_um: float | None = None,
        scorer_name: str = "",
    ) -> None:
        self._scorer = scorer
        self._range = range_um
        self._step = step_um
        self._fine = fine_step_um if fine_step_um is not None and fine_step_um < step_um else None
        self.scorer_name = scorer_name

    @property
    def planes_per_sweep(self) -> int:
        coarse = len(np.arange(-self._range, self._range + self._step / 2, self._step))
        return coarse + 2 * len(self._fine_offsets())

    def _fine_offsets(self) -> np.ndarray:
        if self._fine is None:
            return np.empty(0)
        count = int(math.floor(self._step / 2 / self._fine + 1e-9))
        return self._fine * np.arange(1, count + 1)

    def refocus(self, stage: StageControl, request: RefocusRequest | None = None) -> RefocusResult:
        try:
            start = stage.current_z()
            coarse = start + np.arange(-self._range, self._range + self._step / 2, self._step)
            seen: dict[float, float] = {}
            for z in coarse:
                seen[float(z)] = self._score_at(stage, float(z))
            best_z = max(seen, key=seen.__getitem__)
            if best_z in (float(coarse[0]), float(coarse[-1])) and len(coarse) > 2:
                stage.move_z(start)
                raise RefocusFailed(
                    f"sharpest plane at the edge of the sweep (z={best_z:.1f} µm); "
                    f"focus is probably outside ±{self._range} µm of {start:.1f} µm"
                )
            step = self._step
            if self._fine is not None:
                for offset in self._fine_offsets():
                    for z in (best_z - offset, best_z + offset):
                        seen[float(z)] = self._score_at(stage, float(z))
                step = self._fine
            planes = sorted(seen)
            scores = [seen[z] for z in planes]
            best = int(np.argmax(scores))
            z_best = float(planes[best]) + _parabola_offset(scores, best) * _local_step(planes, best, step)
            stage.move_z(z_best)
        except DriverError as exc:
            raise RefocusFailed(f"stage or camera failed during the sweep: {exc}") from exc
        return RefocusResult(
            z_um=z_best,
            strategy=self.name,
            scores=tuple((float(z), float(s)) for z, s in zip(planes, scores, strict=True)),
            frames=len(planes),
            method="sweep",
            steps=tuple(RefocusStep("sweep", float(z), float(s)) for z, s in zip(planes, scores, strict=True)),
        )

    def _score_at(self, stage: StageControl, z: float) -> float:
        stage.move_z(z)
        return float(self._scorer(stage.snap()))


def _local_step(planes: list[float], best: int, default: float) -> float:
    """Spacing of the planes around ``best`` (the fine step once the fine pass ran)."""
    if 0 < best < len(planes) - 1:
        return float(min(planes[best] - planes[best - 1], planes[best + 1] - planes[best]))
    return default


def _parabola_offset(scores: list[float], best: int) -> float:
    """Vertex of the parabola through (best-1, best, best+1), in steps from ``best``."""
    if best == 0 or best == len(scores) - 1:
        return 0.0
    left, centre, right = scores[best - 1], scores[best], scores[best + 1]
    curvature = left - 2 * centre + right
    if curvature >= 0:  # flat top (e.g. a saturated p_focused): keep the plane itself
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def read_estimate(verdict: Verdict) -> tuple[float | None, float | None]:
    """The verdict's signed defocus estimate and its uncertainty (µm), when it has one.

    Classifiers without a defocus head (a focus-measure calibration, an older model)
    give ``(None, None)``.
    """
    defocus, sigma = verdict.defocus_um, verdict.defocus_sigma_um
    if defocus is not None and not math.isfinite(defocus):
        defocus = None
    if sigma is not None and not math.isfinite(sigma):
        sigma = None
    return defocus, sigma


def parabola_vertex(steps: tuple[RefocusStep, ...] | list[RefocusStep]) -> float | None:
    """z of the vertex of the parabola through the three best-scoring distinct planes,
    when it is a maximum lying within their span; None otherwise."""
    by_z: dict[float, float] = {}
    for s in steps:
        by_z[round(s.z_um, 6)] = max(s.score, by_z.get(round(s.z_um, 6), -math.inf))
    if len(by_z) < 3:
        return None
    best = sorted(by_z.items(), key=lambda item: item[1], reverse=True)[:3]
    z = np.array([b[0] for b in best])
    s = np.array([b[1] for b in best])
    a, b, _ = np.polyfit(z - z.mean(), s, 2)
    if a >= 0:
        return None
    vertex = float(z.mean() - b / (2 * a))
    if not z.min() <= vertex <= z.max():
        return None
    return vertex


class PredictRefocus:
    """Move by the classifier's defocus estimate; refine with at most two more planes;
    fall back to the (coarse-to-fine) sweep only when that fails.

    First attempt at a frame:

    * signed, confident estimate (σ ≤ ``confident_sigma_um``): one move, no extra plane;
      the runner's re-acquisition is the check;
    * signed but unsure: the move, then refinement planes (its own new estimate, or a
      parabola through the best planes) until one is classified focused;
    * sign unknown (σ at least half of |estimate|, as for a symmetric blur): one probe
      plane on one side at |estimate|; the estimated |defocus| there (or the focus score)
      chooses the side;
    * no estimate at all (a classifier without a defocus head): the sweep.

    A later attempt (the re-acquisition was still defocused) refines with the planes left
    of the budget, then sweeps around the sharpest plane seen. No single move goes farther
    than ``max_move_um`` from the z the recovery started at.
    """

    name = "predict"

    def __init__(
        self,
        classifier: FocusClassifier,
        scorer: Scorer,
        fallback: SweepAutofocus,
        *,
        confident_sigma_um: float = 2.0,
        probe_um: float = 10.0,
        max_refine_planes: int = 2,
        max_move_um: float = 50.0,
    ) -> None:
        self._classifier = classifier
        self._scorer = scorer
        self._fallback = fallback
        self._confident = confident_sigma_um
        self._probe = probe_um
        self._max_refine = max_refine_planes
        self._max_move = max_move_um
        self._pixel_size_um: float | None = None

    def refocus(self, stage: StageControl, request: RefocusRequest | None = None) -> RefocusResult:
        if request is None:  # nothing to predict from: the sweep
            return self._sweep(stage, [], frames=0)
        try:
            return self._refocus(stage, request)
        except DriverError as exc:
            raise RefocusFailed(f"stage or camera failed during the predicted re-focus: {exc}") from exc

    # -- the moves ----------------------------------------------------------------------

    def _refocus(self, stage: StageControl, request: RefocusRequest) -> RefocusResult:
        self._pixel_size_um = request.pixel_size_um
        z_now = stage.current_z()
        here = self._step("frame", z_now, request.pixels, request.verdict)
        steps = [*request.history, here]
        origin = steps[0].z_um
        if request.attempt > 1:
            return self._refine_or_sweep(stage, steps, origin, frames=0)
        if here.defocus_um is None:
            # No magnitude either (a classifier without a defocus head): a probe could pick
            # a side but not place the move, and the sweep covers both sides anyway.
            log.info("refocus.no_estimate", z_um=round(z_now, 3))
            return self._sweep(stage, steps, frames=0)
        if not _signed(here.defocus_um, here.sigma_um):
            target, probe = self._probe_side(stage, here, origin)
            steps.append(probe)
            stage.move_z(target)
            return self._result(target, "probe", steps, frames=1)
        target = self._clamp(z_now - here.defocus_um, origin)
        stage.move_z(target)
        if here.sigma_um is not None and here.sigma_um <= self._confident:
            return self._result(target, "estimate", steps, frames=0)
        # Unsure: look before handing back, and refine from what is seen.
        steps.append(self._snap("refine", stage, target))
        if steps[-1].focused:
            return self._result(target, "estimate", steps, frames=1)
        return self._refine_or_sweep(stage, steps, origin, frames=1)

    def _probe_side(self, stage: StageControl, here: RefocusStep, origin: float) -> tuple[float, RefocusStep]:
        """Probe below by the estimated |defocus| (or ``probe_um``); keep it if it is
        focused or nearer focus, else go above. Returns the z to settle on and the probe."""
        distance = _magnitude(here) or self._probe
        below = self._clamp(here.z_um - distance, origin)
        probe = self._snap("probe", stage, below)
        if probe.focused:
            return below, probe
        if _signed(probe.defocus_um, probe.sigma_um):  # the probe's own estimate is usable
            return self._clamp(below - probe.defocus_um, origin), probe
        # Two unsigned magnitudes cannot tell which side of the probe focus lies (and a
        # network's σ is a rough magnitude): keep the nearer plane; a later attempt
        # triangulates from three.
        if _closer(probe, here):
            return below, probe
        return self._clamp(here.z_um + distance, origin), probe

    def _refine_or_sweep(
        self, stage: StageControl, steps: list[RefocusStep], origin: float, *, frames: int
    ) -> RefocusResult:
        used = sum(1 for s in steps if s.kind == "refine")
        while used < self._max_refine:
            target = self._next_plane(steps, origin)
            if target is None:
                break
            steps.append(self._snap("refine", stage, target))
            frames += 1
            used += 1
            if steps[-1].focused:
                return self._result(target, "refine", steps, frames=frames)
        # Centre the sweep on the plane nearest focus when every plane has an estimated
        # |defocus|; a focus measure alone is too flat far from focus to say, so then
        # the sweep covers its range around the z the recovery started at.
        best = _nearest_to_focus(steps) if all(s.defocus_um is not None for s in steps) else steps[0]
        stage.move_z(best.z_um)
        log.info("refocus.fallback", z_um=round(best.z_um, 3), planes_seen=len(steps))
        return self._sweep(stage, steps, frames=frames)

    def _next_plane(self, steps: list[RefocusStep], origin: float) -> float | None:
        latest = steps[-1]
        if _signed(latest.defocus_um, latest.sigma_um):
            target = self._clamp(latest.z_um - latest.defocus_um, origin)
            if all(abs(target - s.z_um) > 0.25 for s in steps):
                return target
        focus = triangulate(steps)
        if focus is not None and all(abs(focus - s.z_um) > 0.25 for s in steps):
            return self._clamp(focus, origin)
        vertex = parabola_vertex(steps)
        if vertex is not None and all(abs(vertex - s.z_um) > 0.25 for s in steps):
            return self._clamp(vertex, origin)
        return None

    def _sweep(self, stage: StageControl, steps: list[RefocusStep], *, frames: int) -> RefocusResult:
        result = self._fallback.refocus(stage)
        return RefocusResult(
            z_um=result.z_um,
            strategy=self.name,
            scores=result.scores,
            frames=frames + result.frames,
            method="sweep",
            steps=(*steps, *result.steps),
        )

    # -- helpers ------------------------------------------------------------------------

    def _snap(self, kind: str, stage: StageControl, z: float) -> RefocusStep:
        stage.move_z(z)
        pixels = stage.snap()
        return self._step(kind, z, pixels, self._classifier.classify(pixels, pixel_size_um=self._pixel_size_um))

    def _step(self, kind: str, z: float, pixels: np.ndarray, verdict: Verdict) -> RefocusStep:
        defocus, sigma = read_estimate(verdict)
        return RefocusStep(
            kind=kind, z_um=float(z), score=float(self._scorer(pixels)), defocus_um=defocus, sigma_um=sigma,
            p_focused=float(verdict.p_focused), label=verdict.label,
        )

    def _clamp(self, z: float, origin: float) -> float:
        return float(np.clip(z, origin - self._max_move, origin + self._max_move))

    def _result(self, z: float, method: str, steps: list[RefocusStep], *, frames: int) -> RefocusResult:
        return RefocusResult(z_um=float(z), strategy=self.name, frames=frames, method=method, steps=tuple(steps))


def _magnitude(step: RefocusStep) -> float | None:
    """Estimated |defocus| of a plane. Where the sign is unknown a model trained with a
    Gaussian likelihood puts the mean near 0 and the spread in σ: √(d² + σ²) then."""
    if step.defocus_um is None:
        return None
    if _signed(step.defocus_um, step.sigma_um) or step.sigma_um is None:
        return abs(step.defocus_um)
    return math.hypot(step.defocus_um, step.sigma_um)


def _closer(a: RefocusStep, b: RefocusStep) -> bool:
    """Is plane ``a`` nearer focus than ``b``? By the estimated |defocus| where both have
    one (a focus measure flattens out far from focus; the estimate does not), else by score."""
    ma, mb = _magnitude(a), _magnitude(b)
    if ma is not None and mb is not None:
        return ma < mb
    return a.score > b.score


def triangulate(steps: list[RefocusStep] | tuple[RefocusStep, ...]) -> float | None:
    """Focus z most consistent with the planes' estimated |defocus| (≥ 2 planes at
    different z): each plane says focus is at z ± m; the candidate with the least weighted
    squared disagreement with all planes wins. Works without any sign."""
    known = [(s.z_um, m) for s in steps if (m := _magnitude(s)) is not None]
    if len({round(z, 3) for z, _ in known}) < 2:
        return None
    candidates = [z + sign * m for z, m in known for sign in (-1.0, 1.0)]

    def disagreement(c: float) -> float:
        return sum((abs(z - c) - m) ** 2 / (1.0 + m) ** 2 for z, m in known)

    return min(candidates, key=disagreement)


def _nearest_to_focus(steps: list[RefocusStep]) -> RefocusStep:
    best = steps[0]
    for step in steps[1:]:
        if _closer(step, best):
            best = step
    return best


def _signed(defocus: float | None, sigma: float | None) -> bool:
    """An estimate whose sign can be trusted: two sigmas do not reach the other side."""
    if defocus is None:
        return False
    return sigma is None or 2 * sigma < abs(defocus)


def build_strategy(settings: RefocusSettings, classifier: FocusClassifier) -> RefocusStrategy:
    if settings.strategy == "device":
        return DeviceAutofocus()
    if settings.scorer == "classifier":
        scorer: Scorer = lambda pixels: classifier.classify(pixels).p_focused  # noqa: E731
    else:
        scorer = FOCUS_MEASURES[settings.scorer]
    sweep = SweepAutofocus(
        scorer,
        range_um=settings.sweep_range_um,
        step_um=settings.sweep_step_um,
        fine_step_um=settings.sweep_fine_step_um,
        scorer_name=settings.scorer,
    )
    if settings.strategy == "sweep":
        return sweep
    # The sign probe and the parabola compare planes: they need a continuous score, so a
    # saturating p_focused is replaced by the default focus measure there.
    probe_scorer = FOCUS_MEASURES["normalized_variance"] if settings.scorer == "classifier" else scorer
    return PredictRefocus(
        classifier,
        probe_scorer,
        sweep,
        confident_sigma_um=settings.predict_confident_sigma_um,
        probe_um=settings.predict_probe_um,
        max_refine_planes=settings.predict_refine_planes,
        max_move_um=settings.sweep_range_um,
    )
