"""Training data sets rendered by the simulator (what ``refocusd synth`` writes).

* classifier: ``DIR/focused/*.tif`` and ``DIR/defocused/*.tif``, 1:1 (even indices focused).
  Focused frames lie within the depth of field, defocused ones from a few µm beyond it to
  tens of µm on both sides, log-uniformly (more near the boundary, where it is hard).
* reconstructor: ``DIR/input/NAME.tif`` (defocused by ±d1 or ±d2 with ±1.5 µm jitter, the
  paper's fixed stage offsets) and ``DIR/target/NAME.tif`` (the same specimen, lamp and
  exposure at focus, independent noise).

Frames are crops of a camera like the paper's (1608 px = 595 µm at 10x, i.e. a 3.70 µm
pitch behind the objective's magnification); phase contrast; objectives 10x/0.30 and
20x/0.45 1:1 when mixed, balanced over labels and defocus distances; substrates TCPS/hydrogel/PDMS and the cell types are
drawn per item. Item ``i`` is drawn from ``SeedSequence(seed, spawn_key=(i,))``, so any item
is reproducible on its own and a larger ``n`` extends a smaller one. ``manifest.json``
records every parameter and, per file, defocus, objective, substrate and cell type.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
import tifffile

from refocusd.config.errors import UsageError
from refocusd.config.files import atomic_path, atomic_write
from refocusd.models.synth.camera import Camera, illumination_field
from refocusd.models.synth.optics import OBJECTIVES, Optics, render
from refocusd.models.synth.specimen import random_specimen

log = structlog.get_logger(__name__)

Kind = Literal["classifier", "reconstructor"]
ObjectiveChoice = Literal["10x", "20x", "mixed"]
KINDS: tuple[Kind, ...] = ("classifier", "reconstructor")
MANIFEST = "manifest.json"
FORMAT = "refocusd-synth"
FORMAT_VERSION = 1
PAPER_CAMERA_PIXEL_UM = 595.0 / 1608.0 * 10.0  # sensor pitch behind the 10x objective
DEFAULT_SIZE: dict[Kind, int] = {"classifier": 512, "reconstructor": 1024}
SUBDIRS: dict[Kind, tuple[str, str]] = {"classifier": ("focused", "defocused"), "reconstructor": ("input", "target")}
PAIR_JITTER_UM = 1.5

Progress = Callable[[int, int], None]


class SynthError(UsageError, RuntimeError):
    """A data set cannot be written as asked (bad request, unusable output folder)."""

    label = "synth error"


@dataclass(frozen=True)
class DefocusPlan:
    """Defocus ranges for one objective (µm)."""

    focused_max_um: float  # |z| ≤ this is "focused" (within the depth of field)
    defocused_min_um: float  # classifier negatives start here ...
    defocused_max_um: float  # ... and end here
    pair_distances_um: tuple[float, float]  # reconstructor inputs: ±d1, ±d2 (paper)


PLANS: dict[str, DefocusPlan] = {
    "10x": DefocusPlan(focused_max_um=2.0, defocused_min_um=8.0, defocused_max_um=60.0, pair_distances_um=(10.0, 20.0)),
    "20x": DefocusPlan(focused_max_um=1.0, defocused_min_um=4.0, defocused_max_um=30.0, pair_distances_um=(5.0, 10.0)),
}


@dataclass(frozen=True)
class SynthRequest:
    """What to render. ``size`` defaults to 512 (classifier) / 1024 (reconstructor)."""

    kind: Kind
    n: int
    seed: int = 0
    size: int | None = None
    objective: ObjectiveChoice = "mixed"
    bit_depth: Literal[8, 16] = 8
    camera_pixel_um: float = PAPER_CAMERA_PIXEL_UM

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
        if self.objective not in ("10x", "20x", "mixed"):
            problems.append(f"objective={self.objective!r} (want 10x, 20x or mixed)")
        if self.bit_depth not in (8, 16):
            problems.append(f"bit_depth={self.bit_depth} (want 8 or 16)")
        if not 0.5 <= self.camera_pixel_um <= 50.0:
            problems.append(f"camera_pixel_um={self.camera_pixel_um} (want 0.5–50 µm)")
        if problems:
            raise SynthError("bad synth request: " + "; ".join(problems))

    @property
    def frame_size(self) -> int:
        return self.size if self.size is not None else DEFAULT_SIZE[self.kind]

    def objective_for(self, index: int) -> str:
        if self.objective != "mixed":
            return self.objective
        # Labels (classifier) cycle with period 2, defocus distances (reconstructor) with 4;
        # shifting the objective by one each cycle gives every combination in 4 / 8 items.
        period = 2 if self.kind == "classifier" else 4
        return ("10x", "20x")[(index // period + index) % 2]

    def pixel_size_um(self, optics: Optics) -> float:
        return self.camera_pixel_um / optics.magnification


@dataclass(frozen=True)
class RenderedItem:
    """One item's frames (relative path → pixels) and its manifest record."""

    frames: dict[str, np.ndarray]
    record: dict[str, Any]


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The independent random stream of item ``index`` (same for any ``n``)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _random_camera(rng: np.random.Generator, bit_depth: int) -> Camera:
    # Different sensors / gains between experiments: noise levels vary between items.
    return Camera(
        bit_depth=bit_depth,  # type: ignore[arg-type]
        full_well_e=float(rng.uniform(6_000.0, 30_000.0)),
        read_noise_e=float(rng.uniform(1.0, 3.0)),
        background_fill=float(rng.uniform(0.3, 0.45)),
    )


def render_item(request: SynthRequest, index: int) -> RenderedItem:
    """Render item ``index`` of ``request`` (pure: no files)."""
    rng = item_rng(request.seed, index)
    objective = request.objective_for(index)
    optics = OBJECTIVES[objective]
    plan = PLANS[objective]
    size = request.frame_size
    pixel = request.pixel_size_um(optics)
    name = f"{index:06d}.tif"

    if request.kind == "classifier":
        focused = index % 2 == 0
        if focused:
            z = float(rng.uniform(-plan.focused_max_um, plan.focused_max_um))
        else:
            magnitude = math.exp(rng.uniform(math.log(plan.defocused_min_um), math.log(plan.defocused_max_um)))
            z = float(magnitude * (1.0 if rng.random() < 0.5 else -1.0))
    else:
        k = index % 4
        z = float((1.0 if k % 2 == 0 else -1.0) * plan.pair_distances_um[k // 2])
        z += float(rng.uniform(-PAIR_JITTER_UM, PAIR_JITTER_UM))

    # Sparse to near-confluent; every frame shows cells (an empty field has no focus label).
    specimen = random_specimen((size, size), rng, pixel_size_um=pixel, density=float(rng.uniform(0.12, 0.75)))
    camera = _random_camera(rng, request.bit_depth)
    lamp = illumination_field((size, size), rng, strength=float(rng.uniform(0.3, 1.5)))
    exposure = float(rng.uniform(0.8, 1.2))

    def shoot(z_um: float) -> np.ndarray:
        return camera.expose(render(specimen, z_um, optics) * lamp, rng, exposure_scale=exposure)

    record: dict[str, Any] = {
        "name": name,
        "objective": objective,
        "z_um": round(z, 4),
        "substrate": specimen.substrate,
        "cell_type": specimen.cell_type,
        "density": round(specimen.density, 4),
        "n_cells": specimen.n_cells,
        "pixel_size_um": pixel,
        "full_well_e": round(camera.full_well_e, 1),
        "exposure_scale": round(exposure, 4),
    }
    if request.kind == "classifier":
        label = "focused" if index % 2 == 0 else "defocused"
        record = {"path": f"{label}/{name}", "label": label, **record}
        return RenderedItem({f"{label}/{name}": shoot(z)}, record)
    record = {"input": f"input/{name}", "target": f"target/{name}", **record, "target_z_um": 0.0}
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
    objectives = ["10x", "20x"] if request.objective == "mixed" else [request.objective]
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": request.kind,
        "seed": request.seed,
        "n": request.n,
        "complete": complete,
        "parameters": {
            "size": request.frame_size,
            "objective": request.objective,
            "bit_depth": request.bit_depth,
            "camera_pixel_um": request.camera_pixel_um,
            "file_format": "tiff (zlib), single-channel",
            "defocus_plans": {o: asdict(PLANS[o]) for o in objectives},
            "pair_jitter_um": PAIR_JITTER_UM if request.kind == "reconstructor" else None,
            "optics": {o: asdict(OBJECTIVES[o]) for o in objectives},
        },
        "software": _versions(),
        "items": items,
    }


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(obj, indent=1) + "\n")


def _write_tiff(path: Path, frame: np.ndarray, pixel_um: float) -> None:
    per_cm = 1e4 / pixel_um
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, frame, compression="zlib", photometric="minisblack",
            resolution=(per_cm, per_cm), resolutionunit="CENTIMETER",
        )


def planned_paths(request: SynthRequest) -> list[str]:
    """The relative paths ``request`` writes, in order (item ``i`` is ``NNNNNN.tif``)."""
    if request.kind == "classifier":
        return [f"{'focused' if i % 2 == 0 else 'defocused'}/{i:06d}.tif" for i in range(request.n)]
    return [f"{sub}/{i:06d}.tif" for i in range(request.n) for sub in SUBDIRS["reconstructor"]]


def _written_by_synth(manifest: dict[str, Any]) -> set[str]:
    # What a manifest says synth wrote: its items, and what an interrupted run had planned.
    owned = {str(p) for p in manifest.get("planned", []) if isinstance(p, str)}
    for item in manifest.get("items", []):
        if isinstance(item, dict):
            owned.update(str(item[k]) for k in ("path", "input", "target") if isinstance(item.get(k), str))
    return owned


def check_output_folder(out: Path, request: SynthRequest) -> set[str]:
    """Raise :class:`SynthError` unless ``out`` is new, empty, or a data set of the same kind.

    Returns the relative paths a previous data set there says synth wrote (they will be
    replaced); any other file is the user's and is never deleted or overwritten. No side
    effects: the CLI calls it before showing progress.
    """
    out = Path(out)
    kind = request.kind
    if out.exists() and not out.is_dir():
        raise SynthError(f"--out {out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return set()
    old: object = None
    with contextlib.suppress(OSError, ValueError):  # unreadable: not a synth data set (below)
        old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        held = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise SynthError(f"--out {out} is not empty and is not a synth data set (it holds: {held}); "
                         "choose a new or empty folder")
    if old.get("kind") != kind:
        raise SynthError(f"--out {out} holds a {old.get('kind')!r} data set, not {kind!r}; "
                         "choose a new or empty folder")
    owned = _written_by_synth(old)
    clashes = [rel for rel in planned_paths(request) if rel not in owned and (out / rel).exists()]
    if clashes:
        raise SynthError(f"--out {out} holds files synth did not write where it would write its own "
                         f"({', '.join(clashes[:5])}); move them or choose another folder")
    return owned


def generate_dataset(out: Path, request: SynthRequest, *, progress: Progress | None = None) -> dict[str, Any]:
    """Render ``request`` into ``out``; returns the manifest (also in ``out/manifest.json``)."""
    out = Path(out)
    for rel in sorted(check_output_folder(out, request)):  # regenerate in place: only synth's own frames
        target = (out / rel).resolve()
        if target.is_relative_to(out.resolve()) and target.is_file():
            target.unlink()
    for sub in SUBDIRS[request.kind]:
        (out / sub).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log.info("synth.started", kind=request.kind, n=request.n, seed=request.seed, out=str(out),
             size=request.frame_size, objective=request.objective)
    records: list[dict[str, Any]] = []
    # Written first, so that a run interrupted half-way still says which files are synth's.
    _write_json(out / MANIFEST, {**_manifest(request, records, complete=False), "planned": planned_paths(request)})
    if progress is not None:
        progress(0, request.n)
    for index in range(request.n):
        item = render_item(request, index)
        for rel, frame in item.frames.items():
            _write_tiff(out / rel, frame, item.record["pixel_size_um"])
        records.append(item.record)
        if progress is not None:
            progress(index + 1, request.n)
    manifest = _manifest(request, records, complete=True)
    _write_json(out / MANIFEST, manifest)
    seconds = time.perf_counter() - started
    log.info("synth.finished", kind=request.kind, n=request.n, out=str(out), seconds=round(seconds, 2),
             seconds_per_item=round(seconds / request.n, 3))
    return manifest
