"""Leave-one-domain-out: does the crop classifier hold on a kind of image it never saw?

For each held-out domain, a focusnet is trained from scratch on the training folders with
that domain left out (``CropTrainConfig.exclude_domains`` / ``exclude_pixel_um``), then
evaluated on the test folders' frames of that domain only (``refocusd evaluate classifier``
rows). Every row is printed and written as JSON, good or bad (target: accuracy >= 0.95).

    python bench/bench_lodo.py --train D1 --train D2 --test E512 --test E2048 \\
        --work /tmp/lodo --epochs 8 [--rows negative_phase fluorescence ...] [--json out.json]

Rows: negative_phase, fluorescence, brightfield (imaging modes), round_cells (specimen),
new_pixel_size (training leaves out pixel sizes 0.55-0.85 µm; tested on test frames of
that range, e.g. a 2048-px set rendered with ``refocusd synth --pixel-size-um 0.7``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROWS: dict[str, dict[str, object]] = {
    "negative_phase": {"exclude_domains": ("negative_phase",), "group": "mode"},
    "fluorescence": {"exclude_domains": ("fluorescence",), "group": "mode"},
    "brightfield": {"exclude_domains": ("brightfield",), "group": "mode"},
    "round_cells": {"exclude_domains": ("round_cells",), "group": "specimen"},
    "new_pixel_size": {"exclude_pixel_um": (0.55, 0.85), "group": "pixel"},
}


def held_out_report(model: Path, tests: list[Path], row: str) -> dict[str, object]:
    """Accuracy/AUC of ``model`` on the test frames of the held-out domain, pooled over
    the test folders."""
    import numpy as np

    from refocusd.models.datasets import ClassifierData, read_image, scan_classifier_folder
    from refocusd.models.evaluation import roc_auc
    from refocusd.models.frame_records import frame_infos
    from refocusd.models.runtime import load_classifier

    spec = ROWS[row]
    classifier = load_classifier(str(model), device="cpu")
    p, y, sizes = [], [], set()
    for folder in tests:
        for info in frame_infos(ClassifierData((scan_classifier_folder(folder),))):
            parts = set(info.domain.split("/"))
            if spec["group"] == "pixel":
                lo, hi = spec["exclude_pixel_um"]  # type: ignore[misc]
                chosen = info.pixel_size_um is not None and lo <= info.pixel_size_um <= hi
            else:
                chosen = bool(parts & set(spec["exclude_domains"]))  # type: ignore[arg-type]
            if not chosen:
                continue
            pixels = read_image(info.path)
            sizes.add(f"{pixels.shape[0]}x{pixels.shape[1]}")
            p.append(classifier.classify(pixels, pixel_size_um=info.pixel_size_um).p_focused)
            y.append(info.label == 0)
    if not p:
        return {"row": row, "n": 0, "accuracy": None, "auc": None, "sizes": []}
    pa, ya = np.asarray(p), np.asarray(y)
    return {"row": row, "n": len(pa), "accuracy": float(np.mean((pa >= 0.5) == ya)),
            "auc": roc_auc(pa, ya) if 0 < ya.sum() < len(ya) else None,
            "missed_defocused": int(np.sum(~ya & (pa >= 0.5))), "false_alarms": int(np.sum(ya & (pa < 0.5))),
            "sizes": sorted(sizes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, action="append", required=True)
    parser.add_argument("--test", type=Path, action="append", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from refocusd.models.focus_training import CropTrainConfig, train_crop_classifier

    results = []
    for row in args.rows:
        spec = ROWS[row]
        began = time.perf_counter()
        out = args.work / f"lodo-{row}"
        cfg = CropTrainConfig(
            data=tuple(args.train), out=out, epochs=args.epochs, seed=args.seed,
            exclude_domains=tuple(spec.get("exclude_domains", ())),  # type: ignore[arg-type]
            exclude_pixel_um=spec.get("exclude_pixel_um"),  # type: ignore[arg-type]
            name=f"lodo-{row.replace('_', '-')}", version="bench",
            command=" ".join(["python", "bench/bench_lodo.py", *(argv or sys.argv[1:])]),
        )
        trained = train_crop_classifier(cfg)
        result = held_out_report(out, args.test, row)
        result.update(train_frames=trained.card.training.extra.get("train_frames"),
                      validation=trained.card.metrics.get("validation"),
                      seconds=round(time.perf_counter() - began, 1))
        results.append(result)
        acc = result["accuracy"]
        print(f"LODO {row}: held-out n={result['n']} accuracy "
              f"{'n/a' if acc is None else f'{acc:.3f}'} AUC {result['auc']} "
              f"(missed {result.get('missed_defocused')}, false alarms {result.get('false_alarms')}; "
              f"trained on {result['train_frames']} frames, {result['seconds']} s)", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
