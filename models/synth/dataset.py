"""Training data sets rendered by the simulator (what ``refocusd synth`` writes).

* classifier: ``DIR/focused/*.tif`` and ``DIR/defocused/*.tif``, 1:1 (even indices focused).
  The label follows the depth of field of the frame's optics (:meth:`Optics.depth_of_field_total_um`):
  focused frames lie within ±DoF/2, defocused ones from DoF/2 out to 8 DoF on both sides,
  log-uniformly: a continuum of signed z (recorded) for a defocus regressor, densest near
  the boundary, where it is hard.
* reconstructor: ``DIR/input/NAME.tif`` (defocused by ±d1 or ±d2 with jitter, the paper's
  fixed stage offsets: ±10/±20 µm at 10x, ±5/±10 µm at 20x, scaled as 1/magnification for
  4x and 40x) and ``DIR/target/NAME.tif`` (the same specimen, lamp, dust and exposure at
  focus, independent noise).

Each item is drawn from the named domains (:mod:`refocusd.models.synth.domains`): an
imaging mode, a specimen layout, an objective (4x–40x, NA 0.10–0.75), a pixel size at the
specimen (0.1–2 µm), illumination gradients and vignetting, camera dust, and a photon budget
from photon-starved to bright. Frames are rendered at the requested size only (the
specimen is built at the coarsest sampling the optics can resolve, on at least
:data:`MIN_FIELD_UM`, so small crops at a fine pixel size still show whole cells). Item
``i`` is drawn from ``SeedSequence(seed, spawn_key=(i,))``, so any item is reproducible on
its own and a larger ``n`` extends a smaller one. ``manifest.json`` records every parameter
and, per item, its domains, optics, pixel size, depth of field, signed z, noise and the
SHA-256 of every file written (regeneration in place deletes only those files).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.fft as sfft
import structlog
import tifffile

from refocusd.config.errors import UsageError
from refocusd.config.files import atomic_path, atomic_write
from refocusd.models.synth.camera import Camera, dust_field, illumination_field
from refocusd.models.synth.domains import (
    OBJECTIVE_BANDS,
    PIXEL_SIZE_RANGE_UM,
    SENSOR_PITCH_RANGE_UM,
    DomainError,
    DomainSelection,
    LAYOUT_OF,
    draw_optics,
    optics_record,
    select_domains,
    specimen_sampling_um,
)
from refocusd.models.synth.optics import render, set_fft_workers
from refocusd.models.synth.specimen import random_specimen

log = structlog.get_logger(__name__)

Kind = Literal["classifier", "reconstructor"]
ObjectiveChoice = Literal["4x", "10x", "20x", "40x", "mixed", "any"]
OBJECTIVE_CHOICES: tuple[str, ...] = ("4x", "10x", "20x", "40x", "mixed", "any")
KINDS: tuple[Kind, ...] = ("classifier", "reconstructor")
MANIFEST = "manifest.json"
FORMAT = "refocusd-synth"
FORMAT_VERSION = 2
PAPER_CAMERA_PIXEL_UM = 595.0 / 1608.0 * 10.0  # sensor pitch behind the 10x objective
DEFAULT_SIZE: dict[Kind, int] = {"classifier": 512, "reconstructor": 1024}
DEFAULT_OBJECTIVE: dict[Kind, str] = {"classifier": "any", "reconstructor": "mixed"}
SUBDIRS: dict[Kind, tuple[str, str]] = {"classifier": ("focused", "defocused"), "reconstructor": ("input", "target")}
PAIR_JITTER_UM = 1.5  # at 10x and below; 20x/40x scale it as 1/magnification
MIN_FIELD_UM = 64.0  # the specimen is at least this wide (whole cells in a small crop)
DEFOCUSED_MAX_DOF = 8.0  # classifier negatives reach 8 depths of field
SIGNAL_E_RANGE = (30.0, 30_000.0)  # electrons at the background (transmitted light)
FLUO_PEAK_E_RANGE = (20.0, 5_000.0)  # electrons at a typical stained nucleus (fluorescence)

Progress = Callable[[int, int], None]


class SynthError(UsageError, RuntimeError):
    """A data set cannot be written as asked (bad request, unusable output folder)."""

    label = "synth error"


@dataclass(frozen=True)
class DefocusPlan:
    """The reconstructor's pair distances for one magnification (µm, the paper's ±d1, ±d2)."""

    pair_distances_um: tuple[float, float]
    pair_jitter_um: float


PLANS: dict[str, DefocusPlan] = {
    mag: DefocusPlan(pair_distances_um=(100.0 / m, 200.0 / m), pair_jitter_um=PAIR_JITTER_UM * min(1.0, 10.0 / m))
    for mag, (m, _) in OBJECTIVE_BANDS.items()
}


@dataclass(frozen=True)
class SynthRequest:
    """What to render. ``size`` defaults to 512 (classifier) / 1024 (reconstructor);
    ``objective`` to ``any`` (classifier) / ``mixed``, i.e. 10x and 20x (reconstructor).

    ``pixel_size_um`` (a (min, max) range, log-uniform; equal ends fix it) overrides the
    camera's; ``camera_pixel_um`` fixes the sensor pitch instead (pixel = pitch /
    magnification). With neither, each objective draws its camera's band.
    """

    kind: Kind
    n: int
    seed: int = 0
    size: int | None = None
    objective: ObjectiveChoice | None = None
    bit_depth: Literal[8, 16] = 8
    camera_pixel_um: float | None = None
    pixel_size_um: tuple[float, float] | None = None
    domains: tuple[str, ...] = ()
    exclude_domains: tuple[str, ...] = ()
    selection: DomainSelection = field(init=False, repr=False)

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind={self.kind!r} (want classifier or reconstructor)")
        if self.n < 1:
            problems.append(f"n={self.n} (want ≥ 1)")
        if self.seed < 0:
            problems.append(f"seed={self.seed} (want ≥ 0)")
        if self.size is not None and not 32 <= self.size <= 8192:
            problems.append(f"size={self.size} (want 32–8192 px)")
        if self.objective is not None and self.objective not in OBJECTIVE_CHOICES:
            problems.append(f"objective={self.objective!r} (want one of {', '.join(OBJECTIVE_CHOICES)})")
        if self.bit_depth not in (8, 16):
            problems.append(f"bit_depth={self.bit_depth} (want 8 or 16)")
        if self.camera_pixel_um is not None and not 0.5 <= self.camera_pixel_um <= 50.0:
            problems.append(f"camera_pixel_um={self.camera_pixel_um} (want 0.5–50 µm)")
        if self.pixel_size_um is not None:
            lo, hi = self.pixel_size_um
            if not 0.05 <= lo <= hi <= 5.0:
                problems.append(f"pixel_size_um={lo}–{hi} (want 0.05 ≤ min ≤ max ≤ 5 µm)")
            if self.camera_pixel_um is not None:
                problems.append("give pixel_size_um or camera_pixel_um, not both")
        try:
            object.__setattr__(self, "selection", select_domains(self.domains, self.exclude_domains))
        except DomainError as exc:
            problems.append(str(exc))
        if problems:
            raise SynthError("bad synth request: " + "; ".join(problems))

    @property
    def frame_size(self) -> int:
        return self.size if self.size is not None else DEFAULT_SIZE[self.kind]

    @property
    def objective_choice(self) -> str:
        return self.objective if self.objective is not None else DEFAULT_OBJECTIVE[self.kind]

    @property
    def magnifications(self) -> tuple[str, ...]:
        choice = self.objective_choice
        if choice == "mixed":
            return ("10x", "20x")
        if choice == "any":
            return tuple(OBJECTIVE_BANDS)
        return (choice,)

    def objective_for(self, index: int) -> str:
        mags = self.magnifications
        # Labels (classifier) cycle with period 2, defocus distances (reconstructor) with 4;
        # shifting the objective by one each cycle gives every combination.
        period = 2 if self.kind == "classifier" else 4
        return mags[(index // period + index) % len(mags)]

    def draw_pixel_size_um(self, magnification: float, rng: np.random.Generator) -> float:
        if self.camera_pixel_um is not None:
            return self.camera_pixel_um / magnification
        if self.pixel_size_um is not None:
            lo, hi = self.pixel_size_um
        else:
            lo = max(PIXEL_SIZE_RANGE_UM[0], SENSOR_PITCH_RANGE_UM[0] / magnification)
            hi = min(PIXEL_SIZE_RANGE_UM[1], SENSOR_PITCH_RANGE_UM[1] / magnification)
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)


@dataclass(frozen=True)
class RenderedItem:
    """One item's frames (relative path → pixels) and its manifest record."""

    frames: dict[str, np.ndarray]
    record: dict[str, Any]


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The independent random stream of item ``index`` (same for any ``n``)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _draw_z(request: SynthRequest, index: int, objective: str, dof: float,
            rng: np.random.Generator) -> tuple[float, float | None]:
    """Signed defocus (µm) and, for a pair, its nominal stage offset."""
    if request.kind == "classifier":
        if index % 2 == 0:  # focused: within the depth of field
            return float(rng.uniform(-dof / 2.0, dof / 2.0)), None
        magnitude = _log_uniform(rng, dof / 2.0, DEFOCUSED_MAX_DOF * dof)
        return magnitude * (1.0 if rng.random() < 0.5 else -1.0), None
    plan = PLANS[objective]
    k = index % 4
    nominal = (1.0 if k % 2 == 0 else -1.0) * plan.pair_distances_um[k // 2]
    return float(nominal + rng.uniform(-plan.pair_jitter_um, plan.pair_jitter_um)), nominal


def _draw_camera(rng: np.random.Generator, fluorescence: bool, bit_depth: int) -> tuple[Camera, float, float]:
    """A sensor at a photon budget from starved to bright: (camera, electrons at the
    reference level, autofluorescent background). The reference level (background in
    transmitted light, a stained nucleus in fluorescence) fills ``fill`` of the ADC range:
    the gain follows the light, as a user sets exposure and gain."""
    read_noise = float(rng.uniform(0.8, 3.0))
    if fluorescence:
        signal_e = _log_uniform(rng, *FLUO_PEAK_E_RANGE)
        fill = float(rng.uniform(0.3, 0.6))
        autofluorescence = float(rng.uniform(0.005, 0.05))
    else:
        signal_e = _log_uniform(rng, *SIGNAL_E_RANGE)
        fill = float(rng.uniform(0.25, 0.5))
        autofluorescence = 0.0
    camera = Camera(bit_depth=bit_depth, full_well_e=signal_e / fill, read_noise_e=read_noise,  # type: ignore[arg-type]
                    background_fill=fill)
    return camera, signal_e, autofluorescence


def render_item(request: SynthRequest, index: int) -> RenderedItem:
    """Render item ``index`` of ``request`` (pure: no files)."""
    rng = item_rng(request.seed, index)
    sel = request.selection
    mode = sel.modes[int(rng.integers(len(sel.modes)))]
    specimen_domain = sel.specimens[int(rng.integers(len(sel.specimens)))]
    objective = request.objective_for(index)
    magnification, (na_lo, na_hi) = OBJECTIVE_BANDS[objective]
    na = float(rng.uniform(na_lo, na_hi))
    pixel = request.draw_pixel_size_um(magnification, rng)
    size = request.frame_size
    name = f"{index:06d}.tif"

    # The rendered field: the frame, or MIN_FIELD_UM when the frame is smaller (a centred
    # crop of it is the frame); the specimen at the coarsest sampling the optics resolve.
    # Grid sides are FFT-friendly lengths (a prime side costs several times more).
    min_px = int(math.ceil(MIN_FIELD_UM / pixel))
    out_px = size if size >= min_px else sfft.next_fast_len(min_px, real=True)
    field_um = out_px * pixel
    optics = draw_optics(mode, magnification, na, rng, field_um)
    grid_px = sfft.next_fast_len(max(16, int(math.ceil(field_um / specimen_sampling_um(optics)))), real=True)
    dof = optics.depth_of_field_total_um(pixel)

    z, pair_distance = _draw_z(request, index, objective, dof, rng)
    z, dof = round(z, 4), round(dof, 4)  # the manifest's values are the ones rendered
    if request.kind == "classifier" and index % 2 == 0:  # rounding must not cross the label boundary
        z = float(np.clip(z, -dof / 2.0, dof / 2.0))
    elif request.kind == "classifier":
        z = math.copysign(max(abs(z), dof / 2.0 + 1e-4), z)

    specimen = random_specimen((grid_px, grid_px), rng, pixel_size_um=field_um / grid_px,
                               wavelength_um=optics.wavelength_um, layout=LAYOUT_OF[specimen_domain])
    fluorescence = mode == "fluorescence"
    lamp_strength = float(rng.uniform(0.3, 3.0))
    lamp = illumination_field((size, size), rng, strength=lamp_strength)
    dust = dust_field((size, size), rng, mean_count=float(rng.uniform(0.0, 3.0)))
    camera, signal_e, autofluorescence = _draw_camera(rng, fluorescence, request.bit_depth)
    read_noise = camera.read_noise_e
    exposure = float(rng.uniform(0.8, 1.2))
    crop = (out_px - size) // 2

    def shoot(z_um: float) -> np.ndarray:
        intensity = render(specimen, z_um, optics, out_shape=(out_px, out_px), pixel_integration=True)
        intensity = intensity[crop : crop + size, crop : crop + size]
        if fluorescence:  # emission 1 (a typical stained nucleus) collects signal_e electrons
            intensity = intensity + autofluorescence
        return camera.expose(intensity * lamp * dust, rng, exposure_scale=exposure)

    record: dict[str, Any] = {
        "name": name,
        "domains": [mode, specimen_domain],
        "mode": mode,
        "specimen": specimen_domain,
        "objective": objective,
        "magnification": magnification,
        "na": round(na, 4),
        "pixel_size_um": round(pixel, 5),
        "depth_of_field_um": dof,
        "z_um": z,
        "z_over_dof": round(z / dof, 4),
        "optics": optics_record(optics),  # optics_from_record() gives the exact Optics back
        "substrate": specimen.substrate,
        "cell_type": specimen.cell_type,
        "density": round(specimen.density, 4),
        "n_cells": specimen.n_cells,
        "noise": {
            "signal_e": round(signal_e, 1),  # background (transmitted) or a stained nucleus (fluorescence)
            "read_noise_e": round(read_noise, 3),
            "relative_noise": round(math.sqrt(signal_e * exposure + read_noise**2) / (signal_e * exposure), 5),
            "full_well_e": round(camera.full_well_e, 1),
        },
        "illumination_strength": round(lamp_strength, 4),
        "dust_min_transmission": round(float(dust.min()), 4),
        "exposure_scale": round(exposure, 4),
        "full_well_e": round(camera.full_well_e, 1),
    }
    if fluorescence:
        record["noise"]["autofluorescence"] = round(autofluorescence, 5)
    if request.kind == "classifier":
        label = "focused" if abs(z) <= dof / 2.0 else "defocused"  # the depth-of-field rule
        record = {"path": f"{label}/{name}", "label": label, **record}
        return RenderedItem({f"{label}/{name}": shoot(z)}, record)
    record = {"input": f"input/{name}", "target": f"target/{name}", **record, "target_z_um": 0.0,
              "pair_distance_um": pair_distance}
    return RenderedItem({f"input/{name}": shoot(z), f"target/{name}": shoot(0.0)}, record)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("refocusd", "numpy", "scipy", "tifffile"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _manifest(request: SynthRequest, items: list[dict[str, Any]], *, complete: bool) -> dict[str, Any]:
    mags = request.magnifications
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": request.kind,
        "seed": request.seed,
        "n": request.n,
        "complete": complete,
        "parameters": {
            "size": request.frame_size,
            "objective": request.objective_choice,
            "objective_bands": {m: {"magnification": OBJECTIVE_BANDS[m][0], "na": list(OBJECTIVE_BANDS[m][1])}
                                for m in mags},
            "bit_depth": request.bit_depth,
            "camera_pixel_um": request.camera_pixel_um,
            "pixel_size_um": list(request.pixel_size_um) if request.pixel_size_um else None,
            "domains": request.selection.as_dict(),
            "domain_filter": {"include": list(request.domains), "exclude": list(request.exclude_domains)},
            "label_rule": "focused iff |z_um| <= depth_of_field_um / 2" if request.kind == "classifier" else None,
            "depth_of_field": "lambda/NA^2 + pixel_size_um/NA (n = 1, dry objective)",
            "z_convention": "z_um = focal plane minus specimen plane along the light path (µm); "
                            "z_um > 0: focused past the specimen; moving focus by -z_um refocuses",
            "defocused_max_dof": DEFOCUSED_MAX_DOF if request.kind == "classifier" else None,
            "defocus_plans": {m: asdict(PLANS[m]) for m in mags} if request.kind == "reconstructor" else None,
            "min_field_um": MIN_FIELD_UM,
            "file_format": "tiff (zlib), single-channel",
        },
        "software": _versions(),
        "items": items,
    }


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(obj, indent=1) + "\n")


def _write_tiff(path: Path, frame: np.ndarray, pixel_um: float) -> str:
    """Write atomically; returns the file's SHA-256 (kept in the manifest)."""
    per_cm = 1e4 / pixel_um
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, frame, compression="zlib", photometric="minisblack",
            resolution=(per_cm, per_cm), resolutionunit="CENTIMETER",
        )
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return digest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_manifest(out: Path) -> object:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    return None


def check_output_folder(out: Path, kind: Kind) -> bool:
    """Raise :class:`SynthError` unless ``out`` is new, empty, or a data set of ``kind``.

    Returns True when ``out`` holds a previous data set of that kind (its frames will be
    replaced). No side effects: the CLI calls it before showing progress.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthError(f"--out {out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return False
    old = _read_manifest(out)
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        held = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise SynthError(f"--out {out} is not empty and is not a synth data set (it holds: {held}); "
                         "choose a new or empty folder")
    if old.get("kind") != kind:
        raise SynthError(f"--out {out} holds a {old.get('kind')!r} data set, not {kind!r}; "
                         "choose a new or empty folder")
    return True


def _planned_files(kind: str, n: int) -> Iterable[str]:
    """Every file a run of ``n`` items writes (labels alternate: even indices focused)."""
    for index in range(n):
        name = f"{index:06d}.tif"
        if kind == "classifier":
            yield f"{'focused' if index % 2 == 0 else 'defocused'}/{name}"
        else:
            yield f"input/{name}"
            yield f"target/{name}"


@dataclass(frozen=True)
class Cleanup:
    """Regenerating in place: the frames synth wrote before (to delete), and the files it
    keeps because synth did not write them (a user's own, or a synth frame changed since)."""

    remove: tuple[Path, ...]
    kept: tuple[str, ...]


def plan_cleanup(out: Path) -> Cleanup:
    """What regenerating ``out`` in place deletes: the files the previous run's manifest says
    synth wrote, and nothing else (no side effects).

    A recorded file is ours only while its SHA-256 still matches the record; a file the
    previous run planned but had not recorded (it was interrupted) is ours, and so are the
    temporary twins of both. Every other file under the data folders is kept.
    """
    out = Path(out)
    old = _read_manifest(out)
    if not isinstance(old, dict) or old.get("kind") not in KINDS:
        return Cleanup((), ())
    kind: Kind = old["kind"]
    recorded: dict[str, str | None] = {}
    for item in old.get("items") or []:
        if not isinstance(item, dict):
            continue
        digests = item.get("sha256") if isinstance(item.get("sha256"), dict) else {}
        for key in ("path", "input", "target"):
            if isinstance(item.get(key), str):
                recorded[item[key]] = digests.get(item[key])
    n_old = old.get("n") if isinstance(old.get("n"), int) else 0
    remove: list[Path] = []
    for rel in sorted(set(_planned_files(kind, n_old)) | set(recorded)):
        parts = Path(rel).parts
        if len(parts) != 2 or parts[0] not in SUBDIRS[kind] or parts[1] in ("..", "."):
            continue  # only ever a file directly in a data folder, whatever the manifest says
        path = out / rel
        tmp = path.with_name(path.name + ".tmp")
        if tmp.is_file():
            remove.append(tmp)
        if not path.is_file():
            continue
        digest = recorded.get(rel)
        if digest is not None and _sha256(path) != digest:
            continue  # changed since synth wrote it: not ours any more
        remove.append(path)
    doomed = set(remove)
    kept = tuple(sorted(str(p.relative_to(out)) for sub in SUBDIRS[kind]
                        if (out / sub).is_dir() for p in (out / sub).iterdir() if p.is_file() and p not in doomed))
    return Cleanup(tuple(remove), kept)


def check_no_collision(cleanup: Cleanup, request: SynthRequest) -> None:
    """Refuse to write over a file that synth keeps (one it did not write)."""
    clash = sorted(set(cleanup.kept) & set(_planned_files(request.kind, request.n)))
    if clash:
        shown = ", ".join(clash[:5]) + (" …" if len(clash) > 5 else "")
        raise SynthError(f"the new data set would overwrite {len(clash)} file(s) that synth did not write "
                         f"(or that changed since): {shown}; move them away or choose another --out")


def _worker_init() -> None:
    set_fft_workers(1)  # one thread per process: the processes are the parallelism


def _rendered(request: SynthRequest, workers: int) -> Iterator[RenderedItem]:
    """Items 0..n-1 in order, rendered by ``workers`` processes (the same pixels as one)."""
    if workers <= 1 or request.n == 1:
        for index in range(request.n):
            yield render_item(request, index)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
        yield from pool.map(render_item, itertools.repeat(request, request.n), range(request.n), chunksize=1)


def generate_dataset(out: Path, request: SynthRequest, *, progress: Progress | None = None,
                     workers: int = 1) -> dict[str, Any]:
    """Render ``request`` into ``out``; returns the manifest (also in ``out/manifest.json``).

    ``workers`` > 1 renders items in that many processes; files and manifest are the same.

    Regenerating a data set in place removes only the frames synth wrote before; the
    files it kept are listed in the manifest under ``kept_files``.
    """
    out = Path(out)
    cleanup = plan_cleanup(out) if check_output_folder(out, request.kind) else Cleanup((), ())
    check_no_collision(cleanup, request)
    for path in cleanup.remove:
        path.unlink(missing_ok=True)
    if cleanup.kept:
        log.warning("synth.kept_files", out=str(out), count=len(cleanup.kept), files=list(cleanup.kept[:10]))
    for sub in SUBDIRS[request.kind]:
        (out / sub).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log.info("synth.started", kind=request.kind, n=request.n, seed=request.seed, out=str(out),
             size=request.frame_size, objective=request.objective_choice, domains=request.selection.as_dict())
    records: list[dict[str, Any]] = []
    _write_json(out / MANIFEST, _manifest(request, records, complete=False))
    if progress is not None:
        progress(0, request.n)
    for item in _rendered(request, workers):
        index = len(records)
        pixel_um = item.record["pixel_size_um"]
        digests = {rel: _write_tiff(out / rel, frame, pixel_um) for rel, frame in item.frames.items()}
        records.append({**item.record, "sha256": digests})
        if progress is not None:
            progress(index + 1, request.n)
    manifest = _manifest(request, records, complete=True)
    manifest["kept_files"] = list(cleanup.kept)
    _write_json(out / MANIFEST, manifest)
    seconds = time.perf_counter() - started
    log.info("synth.finished", kind=request.kind, n=request.n, out=str(out), seconds=round(seconds, 2),
             seconds_per_item=round(seconds / request.n, 3))
    return manifest
