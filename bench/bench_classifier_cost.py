"""What one focus verdict costs, against a classical focus measure, side by side.

For a 2048x2048 uint16 frame (a simulated phase-contrast field), interleaved in one run on
the same machine: the whole verdict of the classifier (crop choice, resampling, network,
aggregation: ``classifier.classify``) and a full-frame numpy Brenner measure
(``mean((f[:, 2:] - f[:, :-2])**2)`` in float32, no subsampling). Prints both medians and
their ratio (target: ratio <= 1.0 and verdict median <= 10 ms on the 2-core CPU).

    python bench/bench_classifier_cost.py [--model default] [--repeats 200] [--json]
    python bench/bench_classifier_cost.py --smoke      # a few repeats (tests run this)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def brenner_full_frame(frame: np.ndarray) -> float:
    x = frame.astype(np.float32)
    d = x[:, 2:] - x[:, :-2]
    return float(np.mean(d * d))


def test_frame(side: int = 2048, seed: int = 0) -> tuple[np.ndarray, float]:
    """A phase-contrast field rendered at 512 px and enlarged (cells, halos, noise)."""
    from refocusd.models.synth import OBJECTIVES, random_specimen, render

    rng = np.random.default_rng(seed)
    optics = OBJECTIVES["10x"]
    field_um = side * 0.37
    specimen = random_specimen((512, 512), rng, pixel_size_um=field_um / 512, density=0.4)
    intensity = render(specimen, 0.0, optics)
    big = cv2.resize(intensity.astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    noisy = big * 20000.0 + rng.normal(0.0, 150.0, big.shape).astype(np.float32)
    return np.clip(noisy, 0, 65535).astype(np.uint16), field_um / side


def run(model: str, repeats: int, warmup: int) -> dict[str, float | int | str]:
    from refocusd.models.runtime import load_classifier

    classifier = load_classifier(model, device="cpu")
    frame, pixel_um = test_frame()
    for _ in range(warmup):
        classifier.classify(frame, pixel_size_um=pixel_um)
        brenner_full_frame(frame)
    verdict_s, brenner_s = [], []
    for _ in range(repeats):  # interleaved: both see the same machine load
        began = time.perf_counter()
        brenner_full_frame(frame)
        brenner_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        classifier.classify(frame, pixel_size_um=pixel_um)
        verdict_s.append(time.perf_counter() - began)
    verdict_ms = statistics.median(verdict_s) * 1e3
    brenner_ms = statistics.median(brenner_s) * 1e3
    return {
        "model": classifier.model_id,
        "frame": "2048x2048 uint16",
        "pixel_size_um": round(pixel_um, 4),
        "crops": int(getattr(classifier, "crops", 0)),
        "repeats": repeats,
        "verdict_median_ms": round(verdict_ms, 3),
        "brenner_median_ms": round(brenner_ms, 3),
        "ratio": round(verdict_ms / brenner_ms, 3),
        "cpu_count": os.cpu_count() or 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="5 repeats, 1 warm-up")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    repeats, warmup = (5, 1) if args.smoke else (args.repeats, 10)
    result = run(args.model, repeats, warmup)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} on a {result['frame']} frame ({result['crops']} crops, "
              f"{result['repeats']} interleaved repeats, {result['cpu_count']} CPUs):")
        print(f"  verdict median {result['verdict_median_ms']:.2f} ms (target <= 10 ms)")
        print(f"  full-frame numpy Brenner median {result['brenner_median_ms']:.2f} ms")
        print(f"  ratio verdict / Brenner {result['ratio']:.3f} (target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
