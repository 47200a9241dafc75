"""Model benchmark (issue 2 targets): quality on held-out simulated data and CPU speed.

Prints, for the shipped default models (or --classifier/--reconstructor):

1. held-out classifier accuracy / AUC (targets >= 0.99 / >= 0.998);
2. held-out reconstruction mean SSIM/PSNR of inputs, reconstructions and Richardson-Lucy,
   and the realism check (classifier AUC focused vs reconstructed, target <= 0.75);
3. classify latency of one 2048x2048 uint16 frame, preprocessing included (median);
4. batched classification throughput (frames/s);
5. reconstruct one 1604x1604 frame (median of a few);
6. the paper's workload: read + sort 120 frames of 1608x1608, reconstruct the defocused ones;
7. fine-tuning on 200 labelled frames of a new kind of image: accuracy before/after.

Data sets are rendered with the repository's simulator into --work (kept, so a re-run only
measures). Seeds differ from the ones the shipped weights were trained on.

    python bench/bench_models.py [--work DIR] [--only SECTION ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# Held-out seeds (the shipped weights were trained on seeds 1 and 11; see models/weights/README.md).
HELDOUT_CLASSIFIER = {"kind": "classifier", "n": 400, "seed": 2}
HELDOUT_RECONSTRUCTOR = {"kind": "reconstructor", "n": 40, "seed": 12, "size": 1024}
WORKLOAD = {"kind": "classifier", "n": 24, "seed": 21, "size": 1608}
# "A new kind of image": a 16-bit sCMOS camera with a 6.5 um pitch (different sampling,
# bit depth and noise) at 1024 px, 20x only; fine-tune on 200, test on 200 others.
NEW_KIND = {"kind": "classifier", "objective": "20x", "bit_depth": 16, "camera_pixel_um": 6.5,
            "size": 1024}


SECTIONS = ("quality", "speed", "workload", "finetune")


def say(text: str) -> None:
    print(text, flush=True)


def synth(folder: Path, **request: Any) -> Path:
    """Render a data set once (kept between runs; redone if the request changed)."""
    from refocusd.models.synth.dataset import SynthRequest, generate_dataset

    stamp = folder / ".bench-request.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == request:
        return folder
    started = time.perf_counter()
    generate_dataset(folder, SynthRequest(**request))
    stamp.write_text(json.dumps(request))
    say(f"  (rendered {folder.name}: {request['n']} items in {time.perf_counter() - started:.0f} s)")
    return folder


def median_seconds(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "refocusd-bench-models")
    parser.add_argument("--classifier", default="default")
    parser.add_argument("--reconstructor", default="default")
    parser.add_argument("--classifier-data", type=Path, help="Use this held-out folder instead.")
    parser.add_argument("--reconstructor-data", type=Path, help="Use this held-out folder instead.")
    parser.add_argument("--workload-data", type=Path, help="Folder of 1608x1608 focused/defocused frames.")
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="Run only these sections (repeatable); default: all.")
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="Also print all figures as one JSON line.")
    args = parser.parse_args()

    from refocusd.daemon.ops.logging import configure_logging

    configure_logging(level="warning", stream=sys.stderr)
    from refocusd.models.runtime import load_classifier, load_reconstructor

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"cpu_count": os.cpu_count()}
    sections = args.only or SECTIONS
    if "quality" in sections:
        results.update(quality(args, work))
    if "speed" in sections or "workload" in sections:
        classifier = load_classifier(args.classifier, device="cpu")
        reconstructor = load_reconstructor(args.reconstructor, device="cpu")
    if "speed" in sections:
        results.update(speed(args, work, classifier, reconstructor))
    if "workload" in sections:
        results["workload"] = workload(args, work, classifier, reconstructor)
    if "finetune" in sections:
        say("== fine-tuning on 200 labelled frames of a new kind of image")
        results["finetune"] = finetune(args, work)
    if args.json:
        print(json.dumps(results, default=float))


def quality(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from refocusd.models import evaluation

    results: dict[str, Any] = {}
    say("== held-out simulated data")
    cls_data = args.classifier_data or synth(work / "heldout-classifier", **HELDOUT_CLASSIFIER)
    rec_data = args.reconstructor_data or synth(work / "heldout-reconstructor", **HELDOUT_RECONSTRUCTOR)
    report = evaluation.evaluate_classifier(args.classifier, cls_data, device="cpu")
    results["classifier"] = {"n": report.n, "accuracy": report.accuracy, "auc": report.auc,
                             "confusion": report.confusion.as_rows(), "model": report.model}
    say(f"classifier {report.model}: accuracy {report.accuracy:.4f} (>= 0.99), "
        f"AUC {report.auc:.5f} (>= 0.998), n={report.n}, confusion {report.confusion.as_rows()}")
    rep = evaluation.evaluate_reconstructor(args.reconstructor, rec_data, classifier=args.classifier,
                                            device="cpu")
    results["reconstructor"] = rep.model_dump(mode="json", exclude={"data"})
    say(f"reconstructor {rep.model}, n={rep.n} pairs:")
    say(f"  mean SSIM input {rep.input.mean_ssim:.4f}  reconstruction {rep.reconstruction.mean_ssim:.4f}"
        f"  Richardson-Lucy {rep.richardson_lucy.mean_ssim:.4f}  "
        f"(gain {rep.reconstruction.mean_ssim - rep.input.mean_ssim:+.4f}, target >= +0.15 and > RL)")
    say(f"  mean PSNR input {rep.input.mean_psnr:.2f}  reconstruction {rep.reconstruction.mean_psnr:.2f}"
        f"  Richardson-Lucy {rep.richardson_lucy.mean_psnr:.2f} dB")
    say(f"  realism: classifier AUC focused vs defocused {rep.realism_auc_focused_vs_defocused:.4f}, "
        f"focused vs reconstructed {rep.realism_auc_focused_vs_reconstructed:.4f} (<= 0.75)")
    return results


def speed(args: argparse.Namespace, work: Path, classifier: Any, reconstructor: Any) -> dict[str, Any]:
    results: dict[str, Any] = {}
    say("== speed (CPU)")
    rng = np.random.default_rng(0)
    frame2048 = rng.integers(0, 4096, (2048, 2048), dtype=np.uint16)
    latency = median_seconds(lambda: classifier.classify(frame2048), 50)
    results["classify_2048_uint16_median_ms"] = latency * 1e3
    say(f"classify one 2048x2048 uint16 frame: median {latency * 1e3:.2f} ms (<= 10 ms)")
    batch = [rng.integers(0, 4096, (2048, 2048), dtype=np.uint16) for _ in range(32)]
    seconds = median_seconds(lambda: classifier.classify_batch(batch), 5)
    results["classify_batch_2048_fps"] = len(batch) / seconds
    say(f"classify_batch of 32 such frames: {len(batch) / seconds:.0f} frames/s (>= 100)")

    rec_data = args.reconstructor_data or synth(work / "heldout-reconstructor", **HELDOUT_RECONSTRUCTOR)
    source, _ = next(iter(_pairs(rec_data)))
    big = np.pad(source, ((0, max(0, 1604 - source.shape[0])), (0, max(0, 1604 - source.shape[1]))),
                 mode="symmetric")[:1604, :1604]
    seconds = median_seconds(lambda: reconstructor.reconstruct(big), 3)
    results["reconstruct_1604_s"] = seconds
    say(f"reconstruct one 1604x1604 {big.dtype} frame ({reconstructor.card.name}, tile "
        f"{reconstructor.tile}): median {seconds:.2f} s (<= 5 s)")
    return results


def workload(args: argparse.Namespace, work: Path, classifier: Any, reconstructor: Any) -> dict[str, Any]:
    from refocusd.models.datasets import read_image, scan_classifier_folder

    say("== the paper's workload: sort 120 frames of 1608x1608, reconstruct the defocused")
    frames_dir = args.workload_data or synth(work / "workload-1608", **WORKLOAD)
    folder = scan_classifier_folder(frames_dir)
    paths = [*folder.defocused[:8]] + [folder.focused[i % len(folder.focused)] for i in range(112)]
    truth = np.array([1] * 8 + [0] * 112)
    started = time.perf_counter()
    frames = [read_image(p) for p in paths]
    verdicts = classifier.classify_batch(frames)
    sort_done = time.perf_counter()
    flagged = [f for f, v in zip(frames, verdicts, strict=True) if v.label == "defocused"]
    for f in flagged:
        reconstructor.reconstruct(f)
    total = time.perf_counter() - started
    predicted = np.array([1 if v.label == "defocused" else 0 for v in verdicts])
    w = {
        "total_s": total, "sort_s": sort_done - started, "reconstructed": len(flagged),
        "defocused_found": int(np.sum((predicted == 1) & (truth == 1))),
        "focused_flagged": int(np.sum((predicted == 1) & (truth == 0))),
    }
    say(f"read+sort 120 frames {w['sort_s']:.2f} s; reconstructed {w['reconstructed']}; total "
        f"{total:.1f} s (<= 30 s); found {w['defocused_found']}/8 defocused, "
        f"{w['focused_flagged']} focused wrongly flagged")
    return w


def _pairs(folder: Path) -> Any:
    from refocusd.models.datasets import scan_paired_folder

    pairs = scan_paired_folder(folder)
    for name in pairs.names:
        yield pairs.read_pair(name)


def finetune(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from refocusd.models import evaluation
    from refocusd.models.training import ClassifierTrainConfig, train_classifier

    train_dir = synth(work / "newkind-train", n=200, seed=31, **NEW_KIND)
    test_dir = synth(work / "newkind-test", n=200, seed=32, **NEW_KIND)
    say(f"new kind: {json.dumps(NEW_KIND)}")
    before = evaluation.evaluate_classifier(args.classifier, test_dir, device="cpu")
    started = time.perf_counter()
    tuned = train_classifier(ClassifierTrainConfig(
        data=train_dir, out=work / "newkind-model", base=args.classifier,
        epochs=args.finetune_epochs, seed=0, name="sdcnn-finetuned",
        command="bench/bench_models.py fine-tune",
    ))
    seconds = time.perf_counter() - started
    after = evaluation.evaluate_classifier(str(tuned.folder), test_dir, device="cpu")
    say(f"before: accuracy {before.accuracy:.4f} AUC {before.auc:.4f}; after fine-tuning "
        f"({args.finetune_epochs} epochs, {seconds:.0f} s): accuracy {after.accuracy:.4f} "
        f"AUC {after.auc:.4f} (200 held-out frames of the new kind)")
    return {"before": {"accuracy": before.accuracy, "auc": before.auc},
            "after": {"accuracy": after.accuracy, "auc": after.auc},
            "seconds": seconds, "epochs": args.finetune_epochs, "kind": NEW_KIND}


if __name__ == "__main__":
    main()
