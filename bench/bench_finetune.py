"""Fine-tuning on 200 frames of a new kind: accuracy on held-out frames of that kind before
and after (target: >= 0.98 after).

The folder (e.g. ``refocusd synth --domain dic --n 280``) is split by file order: the first
``--n-train`` frames (both labels, balanced by synth's alternation) fine-tune the model
(``refocusd train classifier --base MODEL`` equivalent), the rest are the test.

    python bench/bench_finetune.py --data dic-256-s401 --work /tmp/ft [--model default]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def split(folder: Path, work: Path, n_train: int) -> tuple[Path, Path]:
    records = json.loads((folder / "manifest.json").read_text())["items"]
    parts = {"train": records[:n_train], "test": records[n_train:]}
    out = {}
    for name, items in parts.items():
        root = work / name
        shutil.rmtree(root, ignore_errors=True)
        for sub in ("focused", "defocused"):
            (root / sub).mkdir(parents=True)
        for rec in items:
            shutil.copy(folder / rec["path"], root / rec["path"])
        (root / "manifest.json").write_text(json.dumps({"items": items, "complete": True}))
        out[name] = root
    return out["train"], out["test"]


def accuracy(model: str, folder: Path) -> dict[str, object]:
    from refocusd.models.evaluation import evaluate_classifier

    report = evaluate_classifier(model, folder, device="cpu")
    return {"n": report.n, "accuracy": report.accuracy, "auc": report.auc,
            "confusion": report.confusion.model_dump()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    from refocusd.models.focus_training import CropTrainConfig, train_crop_classifier

    train, test = split(args.data, args.work, args.n_train)
    before = accuracy(args.model, test)
    print(f"before fine-tuning: {json.dumps(before)}", flush=True)
    began = time.perf_counter()
    out = args.work / "tuned"
    train_crop_classifier(CropTrainConfig(data=(train,), out=out, base=args.model, epochs=args.epochs,
                                          seed=args.seed, val_fraction=0.1, name="tuned", version="bench"))
    after = accuracy(str(out), test)
    print(f"after fine-tuning on {args.n_train} frames ({time.perf_counter() - began:.0f} s): "
          f"{json.dumps(after)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
