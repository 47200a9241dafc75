"""The "never silently harm" gate (issue 13): how often the quality score says not_improved.

Renders with the repository's simulator (seeds apart from training):

- in range: the broadened simulator's pairs (every imaging mode and specimen but empty,
  the paper's distances ±10/±20 µm at 10x, ±5/±10 µm at 20x, with jitter) — target: at
  most 5 % marked not_improved;
- cannot help: phase-contrast cells far beyond the training range (3.5-6x the largest
  pair distance) and the simulator's empty fields (substrate, bubbles, debris; no cells)
  at the paper's distances — target: at least 90 % marked not_improved;

reconstructs each with the reconstructor, scores it with ``models.quality`` exactly as the
daemon does (default ``QualityRule``, or the thresholds given), and prints the rates and
the distribution of each witness so the thresholds can be chosen.

    python bench/bench_reconstruction_gate.py [--reconstructor default] [--classifier default]
        [--n-in 32] [--n-far 16] [--n-empty 8] [--size 384] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

SEED = 4242
PAPER_PIXEL_UM = 595.0 / 1608.0 * 10.0


def say(text: str) -> None:
    print(text, flush=True)


def render_case(kind: str, index: int, size: int) -> tuple[np.ndarray, float, str, float]:
    """(defocused frame, z in µm, domain, pixel size in µm) of case ``index`` of ``kind``.

    ``in`` and ``empty`` come from the broadened simulator (``render_item``: every imaging
    mode, 10x/20x, the paper's pair distances; specimens without / only ``empty``); ``far``
    renders phase-contrast cells at the paper's 10x/20x optics 3.5-6x farther out of focus.
    """
    from refocusd.models.synth.camera import Camera, illumination_field
    from refocusd.models.synth.dataset import PLANS, SynthRequest, render_item
    from refocusd.models.synth.optics import OBJECTIVES, render
    from refocusd.models.synth.specimen import random_specimen

    if kind in ("in", "empty"):
        selection = {"domains": ("empty",)} if kind == "empty" else {"exclude_domains": ("empty",)}
        request = SynthRequest(kind="reconstructor", n=index + 1, seed=SEED + (kind == "empty"),
                               size=size, **selection)
        item = render_item(request, index)
        frame = next(v for k, v in item.frames.items() if k.startswith("input/"))
        record = item.record
        return frame, float(record["z_um"]), f"{record.get('mode')}/{record.get('specimen')}", \
            float(record["pixel_size_um"])
    rng = np.random.default_rng([SEED, index])
    objective = ("10x", "20x")[index % 2]
    optics, plan = OBJECTIVES[objective], PLANS[objective]
    pixel = PAPER_PIXEL_UM / optics.magnification
    z = (1.0 if rng.random() < 0.5 else -1.0) * plan.pair_distances_um[1] * float(rng.uniform(3.5, 6.0))
    specimen = random_specimen((size, size), rng, pixel_size_um=pixel, density=float(rng.uniform(0.12, 0.75)))
    camera = Camera(bit_depth=8, full_well_e=float(rng.uniform(6_000, 30_000)),
                    read_noise_e=float(rng.uniform(1.0, 3.0)),
                    background_fill=float(rng.uniform(0.3, 0.45)))
    lamp = illumination_field((size, size), rng, strength=float(rng.uniform(0.3, 1.5)))
    return camera.expose(render(specimen, z, optics) * lamp, rng), z, f"phase_contrast_{objective}", pixel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reconstructor", default="default")
    parser.add_argument("--classifier", default="default")
    parser.add_argument("--n-in", type=int, default=32)
    parser.add_argument("--n-far", type=int, default=16)
    parser.add_argument("--n-empty", type=int, default=8)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from refocusd.models.quality import QualityRule, score_reconstruction
    from refocusd.models.runtime import load_classifier, load_reconstructor

    reconstructor = load_reconstructor(args.reconstructor, device="cpu")
    classifier = load_classifier(args.classifier, device="cpu")
    rule = QualityRule()
    say(f"gate: reconstructor {reconstructor.model_id}, classifier {classifier.model_id}, rule {rule}")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for kind, n in (("in", args.n_in), ("far", args.n_far), ("empty", args.n_empty)):
        for i in range(n):
            frame, z, domain, pixel = render_case(kind, i, args.size)
            score = score_reconstruction(classifier, frame, reconstructor.reconstruct(frame), rule,
                                         pixel_size_um=pixel)
            rows.append({"kind": kind, "z_um": round(z, 2), "domain": domain, **score.as_dict()})
    summary: dict[str, Any] = {}
    # The daemon only reconstructs frames its classifier calls defocused: rates are given
    # over those ("queued"), and over all rendered cases.
    for r in rows:
        r["queued"] = r["p_focused_before"] < 0.5
    for kind in ("in", "far", "empty"):
        sub = [r for r in rows if r["kind"] == kind]
        if not sub:
            continue
        queued = [r for r in sub if r["queued"]]
        marked = sum(r["quality"] == "not_improved" for r in queued)
        marked_all = sum(r["quality"] == "not_improved" for r in sub)
        summary[kind] = {"n": len(sub), "queued": len(queued), "not_improved": marked,
                         "rate": round(marked / len(queued), 3) if queued else None,
                         "rate_all": round(marked_all / len(sub), 3)}
        gains = np.array([r["sharpness_gain"] for r in sub])
        logit = np.array([_logit(r["p_focused_after"]) - _logit(r["p_focused_before"]) for r in sub])
        say(f"  {kind:>5}: {len(queued)}/{len(sub)} called defocused (queued); of those {marked} "
            f"not_improved ({marked / max(len(queued), 1):.0%}); of all {marked_all}/{len(sub)}; "
            f"sharpness gain min {gains.min():.2f} median {np.median(gains):.2f}; log-odds gain "
            f"median {np.median(logit):+.2f}")
    cannot = [r for r in rows if r["kind"] in ("far", "empty") and r["queued"]]
    in_range = summary.get("in", {})
    if cannot:
        rate = sum(r["quality"] == "not_improved" for r in cannot) / len(cannot)
        summary["cannot_help_rate"] = round(rate, 3)
        say(f"queued cannot-help cases (far + empty): {rate:.0%} not_improved (target >= 90 %); "
            f"queued in-range: {in_range.get('rate')} (target <= 0.05); "
            f"{time.perf_counter() - started:.0f} s")
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows}))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


if __name__ == "__main__":
    main()
