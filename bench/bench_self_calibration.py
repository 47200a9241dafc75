"""Self-calibration on a foreign simulated specimen (issue 12 target).

A domain the shipped classifier was not trained on (``--mode``, default ``dic``; the v1
default is trained on positive phase contrast) is rendered by the synth optics as z-series
at ``--positions`` fields (one specimen each, planes ``--step`` µm apart over ±``--reach``),
written as multi-page TIFFs, and calibrated on with the library ``refocusd calibrate
--zstack`` runs: labels from each series' own focus peak, a fine-tune of the shipped model,
the last position held out. Prints the held-out accuracy / AUC / defocus error before and
after, and the wall time of the calibration (labelling + fine-tune + scoring).

    python bench/bench_self_calibration.py [--mode dic] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tifffile  # noqa: E402


def render_stack(mode: str, seed: int, *, size: int, pixel_um: float, offsets: np.ndarray) -> np.ndarray:
    from refocusd.models.synth.camera import illumination_field
    from refocusd.models.synth.dataset import _draw_camera
    from refocusd.models.synth.domains import draw_optics, specimen_sampling_um
    from refocusd.models.synth.optics import render
    from refocusd.models.synth.specimen import random_specimen

    rng = np.random.default_rng([seed, 12])
    field_um = size * pixel_um
    optics = draw_optics(mode, 10.0, 0.3, rng, field_um)
    grid_px = max(16, int(math.ceil(field_um / specimen_sampling_um(optics))))
    specimen = random_specimen((grid_px, grid_px), rng, pixel_size_um=field_um / grid_px,
                               wavelength_um=optics.wavelength_um)
    camera, _, autofluorescence = _draw_camera(rng, mode == "fluorescence", 16)
    lamp = illumination_field((size, size), rng, strength=1.0)
    planes = []
    for z in offsets:
        intensity = render(specimen, float(z), optics, out_shape=(size, size), pixel_integration=True)
        planes.append(camera.expose((intensity + autofluorescence) * lamp, rng))
    return np.stack(planes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="dic")
    parser.add_argument("--positions", type=int, default=4)
    parser.add_argument("--reach", type=float, default=15.0)
    parser.add_argument("--step", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--pixel-um", type=float, default=0.5)
    parser.add_argument("--tolerance", type=float, default=1.5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the trainer's)")
    args = parser.parse_args()

    from refocusd.models.self_calibration import read_zstack, self_calibrate

    work = Path(tempfile.mkdtemp(prefix="refocusd-bench-selfcal-"))
    offsets = np.arange(-args.reach, args.reach + args.step / 2, args.step)
    began = time.perf_counter()
    paths = []
    for i in range(args.positions):
        stack = render_stack(args.mode, args.seed * 100 + i, size=args.size, pixel_um=args.pixel_um, offsets=offsets)
        path = work / f"{args.mode}-pos{i}.tif"
        tifffile.imwrite(path, stack)
        paths.append(path)
    render_s = time.perf_counter() - began
    series = [read_zstack(p, args.step) for p in paths]
    series = [type(s)(s.name, s.z_um, s.planes, args.pixel_um) for s in series]
    began = time.perf_counter()
    report = self_calibrate(series, out=work / "model", tolerance_um=args.tolerance, epochs=args.epochs,
                            sample=f"simulated {args.mode}", learning_rate=args.lr)
    print(json.dumps({"bench": "self_calibration", "mode": args.mode, "positions": args.positions,
                      "planes_per_position": len(offsets), "render_s": round(render_s, 1),
                      "calibrate_wall_s": round(time.perf_counter() - began, 1), **report.as_dict()}))


if __name__ == "__main__":
    main()
