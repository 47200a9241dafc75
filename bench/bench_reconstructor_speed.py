"""Reconstructor CPU speed (issue 13): one 1604x1604 frame, by width, tile, threads and runtime.

Prints, for each variant, the median seconds per frame through the same tiling and
stitching the runtime uses, and its ratio against the shipped default measured in the same
run (other jobs share these cores, so ratios are the comparable figure):

1. the shipped default (``load_reconstructor("default")``, automatic tile) end to end;
2. ResUNet widths (default 8 / 12 / 16 / 24 / 32; 64 is the paper's) at the automatic
   tile, untrained weights (the cost does not depend on the weights);
3. the shipped default at fixed tiles 388 (the paper's) and 580, and with 1 thread;
4. TFLite (XNNPACK delegate) float32 and dynamic-range int8 of the shipped default at its
   automatic tile, with the SSIM of their output against the Keras output (quality held?).

    python bench/bench_reconstructor_speed.py [--repeats 3] [--widths 8 16 64]
        [--only keras threads tflite] [--json]
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

SIDE = 1604


def say(text: str) -> None:
    print(text, flush=True)


def frame() -> np.ndarray:
    """A realistic 1604 px defocused phase-contrast frame from the simulator."""
    from refocusd.models.synth.dataset import SynthRequest, render_item

    item = render_item(SynthRequest(kind="reconstructor", n=1, seed=5, size=SIDE, objective="10x"), 0)
    return next(v for k, v in item.frames.items() if k.startswith("input/"))


def median_s(fn: Any, repeats: int) -> float:
    fn()  # warm (traces, allocations)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def keras_variants(pixels: np.ndarray, repeats: int, widths: list[int]) -> list[dict[str, Any]]:
    import tensorflow as tf

    from refocusd.models import tiling
    from refocusd.models.preprocessing import to_network_range
    from refocusd.models.resunet import build_resunet
    from refocusd.models.runtime import load_reconstructor

    rows: list[dict[str, Any]] = []
    default = load_reconstructor("default", device="cpu")
    reference = median_s(lambda: default.reconstruct(pixels), repeats)
    auto_tile = default.tile_for(SIDE, SIDE)
    rows.append({"variant": f"shipped default {default.model_id} (tile {auto_tile})",
                 "seconds": reference, "params": default.card.params.get("parameter_count")})
    say(f"  shipped default: {reference:.2f} s (tile {auto_tile})")

    net_in, _ = to_network_range(pixels)
    for width in widths:
        model = build_resunet(width, input_size=None)
        window = auto_tile + 2 * tiling.MARGIN
        fn = tf.function(lambda x, m=model: m(x, training=False),
                         input_signature=[tf.TensorSpec([None, window, window, 3], tf.float32)])

        def run(fn: Any = fn) -> None:
            tiling.apply_tiled(net_in, lambda b: fn(b).numpy(), tile=auto_tile, batch_size=1)

        seconds = median_s(run, 1 if width >= 32 else repeats)
        rows.append({"variant": f"ResUNet width {width} (tile {auto_tile})", "seconds": seconds,
                     "params": int(model.count_params())})
        say(f"  width {width:>2}: {seconds:.2f} s ({model.count_params():,} params)")
        del model, fn

    for tile in (388, 580):
        fixed = load_reconstructor("default", device="cpu", tile=tile)
        seconds = median_s(lambda r=fixed: r.reconstruct(pixels), repeats)
        rows.append({"variant": f"shipped default, tile {tile}", "seconds": seconds})
        say(f"  tile {tile}: {seconds:.2f} s")
    return [{**r, "ratio": round(r["seconds"] / reference, 3)} for r in rows]


def one_thread(pixels: np.ndarray, repeats: int) -> dict[str, Any]:
    """The shipped default with TensorFlow limited to one thread (a fresh process)."""
    import subprocess

    code = (
        "import os,sys,time,statistics,numpy as np;"
        "os.environ['TF_CPP_MIN_LOG_LEVEL']='3';"
        "import tensorflow as tf;tf.config.threading.set_intra_op_parallelism_threads(1);"
        "tf.config.threading.set_inter_op_parallelism_threads(1);"
        "from refocusd.models.runtime import load_reconstructor;"
        f"x=np.load(sys.argv[1]);r=load_reconstructor('default',device='cpu');r.reconstruct(x);t=[]\n"
        f"for _ in range({repeats}):\n s=time.perf_counter();r.reconstruct(x);t.append(time.perf_counter()-s)\n"
        "print(statistics.median(t))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frame.npy"
        np.save(path, pixels)
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                             timeout=1800, check=True)
    return {"variant": "shipped default, 1 thread", "seconds": float(out.stdout.strip().splitlines()[-1])}


def tflite_variants(pixels: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    import tensorflow as tf

    from refocusd.models import store, tiling
    from refocusd.models.evaluation import ssim
    from refocusd.models.preprocessing import from_network_range, to_network_range
    from refocusd.models.runtime import load_reconstructor

    default = load_reconstructor("default", device="cpu")
    tile = default.tile_for(SIDE, SIDE)
    window = tile + 2 * tiling.MARGIN
    folder = store.resolve("default", "reconstructor")
    model = store.load_keras(folder, store.load_card(folder))
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec([1, window, window, 3], tf.float32)])
    keras_out = default.reconstruct(pixels)
    net_in, imap = to_network_range(pixels)
    rows = []
    for label, quantize in (("TFLite float32 + XNNPACK", False), ("TFLite dynamic-range int8 + XNNPACK", True)):
        try:
            converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
            if quantize:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            flat = converter.convert()
            interpreter = tf.lite.Interpreter(model_content=flat, num_threads=os.cpu_count() or 1)
            interpreter.allocate_tensors()
            inp = interpreter.get_input_details()[0]["index"]
            outp = interpreter.get_output_details()[0]["index"]

            def run_tile(batch: np.ndarray, it: Any = interpreter, i: int = inp, o: int = outp) -> np.ndarray:
                it.set_tensor(i, batch.astype(np.float32))
                it.invoke()
                return it.get_tensor(o)

            def run(run_tile: Any = run_tile) -> np.ndarray:
                out = tiling.apply_tiled(net_in, run_tile, tile=tile, batch_size=1)
                return from_network_range(out, imap)

            seconds = median_s(run, repeats)
            quality = ssim(keras_out, run())
            rows.append({"variant": f"{label} (tile {tile})", "seconds": seconds,
                         "ssim_vs_keras": round(quality, 4), "size_mb": round(len(flat) / 1e6, 2)})
            say(f"  {label}: {seconds:.2f} s, SSIM vs Keras {quality:.4f}, {len(flat) / 1e6:.1f} MB")
        except Exception as exc:  # noqa: BLE001 - a bench reports what failed and goes on
            rows.append({"variant": label, "error": f"{type(exc).__name__}: {exc}"[:300]})
            say(f"  {label}: failed: {type(exc).__name__}: {str(exc)[:200]}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=("keras", "threads", "tflite"),
                        default=["keras", "threads", "tflite"])
    parser.add_argument("--widths", type=int, nargs="*", default=[8, 12, 16, 24, 32])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    say(f"reconstructor speed on one {SIDE}x{SIDE} frame, {os.cpu_count()} CPU(s), "
        f"load {os.getloadavg()[0]:.1f}")
    pixels = frame()
    rows: list[dict[str, Any]] = []
    if "keras" in args.only:
        rows += keras_variants(pixels, args.repeats, args.widths)
    reference = rows[0]["seconds"] if rows else None
    if "threads" in args.only:
        row = one_thread(pixels, args.repeats)
        if reference:
            row["ratio"] = round(row["seconds"] / reference, 3)
        say(f"  1 thread: {row['seconds']:.2f} s")
        rows.append(row)
    if "tflite" in args.only:
        for row in tflite_variants(pixels, args.repeats):
            if reference and "seconds" in row:
                row["ratio"] = round(row["seconds"] / reference, 3)
            rows.append(row)
    say(f"  (load at the end {os.getloadavg()[0]:.1f})")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
