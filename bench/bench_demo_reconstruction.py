"""What a lab sees of a lost time point (issue 13): the demo's reconstructions as a picture.

Runs ``refocusd demo`` (the CLI, the shipped models) unless ``--demo`` names a finished
demo folder, then writes ``demo-reconstruction.png``: one row per reconstructed time-lapse
frame (up to ``--rows``), each showing

    the same field's sharp frame one time point earlier | the defocused input | the reconstruction

as a whole frame and a 4x-magnified central crop, each panel stretched to its own 0.5-99.5
percentiles. It prints the rows' quality scores (from the provenance sidecars).

    python bench/bench_demo_reconstruction.py [--out DIR] [--demo DIR] [--rows 3]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image, ImageDraw

PANEL = 384  # px per panel
ZOOM = 4


def say(text: str) -> None:
    print(text, flush=True)


def run_demo(out: Path) -> None:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "refocusd.daemon.cli", "demo", "--out", str(out), "--wells", "12",
         "--timepoints", "4", "--seed", "0", "--json"],
        capture_output=True, text=True, timeout=3600,
    )
    if result.returncode != 0:
        raise SystemExit(f"refocusd demo failed ({result.returncode}):\n{result.stderr[-3000:]}")
    say(f"demo: {result.stdout.strip().splitlines()[-1]} ({time.perf_counter() - started:.0f} s)")


def examples(demo: Path, limit: int) -> list[dict[str, Any]]:
    """Reconstructed time-lapse frames with the same field's sharp frame one point earlier."""
    db = sqlite3.connect(f"file:{demo / 'state' / 'ledger.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    done = db.execute(
        "SELECT f.*, j.output_path FROM frames f JOIN jobs j ON j.frame_id = f.id "
        "WHERE j.state = 'done' AND j.output_path IS NOT NULL AND f.t > 0 ORDER BY f.id"
    ).fetchall()
    rows = []
    for frame in done:
        earlier = db.execute(
            "SELECT * FROM frames WHERE experiment = ? AND plate = ? AND well = ? AND position = ? "
            "AND t = ? AND label = 'focused' ORDER BY retry DESC LIMIT 1",
            (frame["experiment"], frame["plate"], frame["well"], frame["position"], frame["t"] - 1),
        ).fetchone()
        if earlier is None:
            continue
        rows.append({"defocused": frame["source_uri"], "reconstructed": frame["output_path"],
                     "earlier": earlier["source_uri"], "well": frame["well"], "t": frame["t"],
                     "outcome": frame["outcome"]})
        if len(rows) == limit:
            break
    return rows


def _stretch(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float64)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=-1)
    low, high = np.percentile(image, [0.5, 99.5])
    return (np.clip((image - low) / max(high - low, 1e-9), 0, 1) * 255).astype(np.uint8)


def _panels(path: str) -> tuple[Image.Image, Image.Image]:
    pixels = tifffile.imread(path)
    whole = Image.fromarray(_stretch(pixels)).resize((PANEL, PANEL), Image.Resampling.LANCZOS)
    h, w = pixels.shape[:2]
    side = min(h, w) // ZOOM
    crop = pixels[(h - side) // 2 : (h + side) // 2, (w - side) // 2 : (w + side) // 2]
    zoom = Image.fromarray(_stretch(crop)).resize((PANEL, PANEL), Image.Resampling.NEAREST)
    return whole, zoom


def compose(rows: list[dict[str, Any]], out: Path) -> Path:
    titles = ("sharp, one time point earlier", "defocused input", "reconstruction")
    header = 22
    sheet = Image.new("L", (PANEL * 6, (PANEL + header) * len(rows)), 255)
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        top = r * (PANEL + header)
        for c, key in enumerate(("earlier", "defocused", "reconstructed")):
            whole, zoom = _panels(row[key])
            sheet.paste(whole, (c * PANEL, top + header))
            sheet.paste(zoom, ((3 + c) * PANEL, top + header))
            draw.text((c * PANEL + 4, top + 4), f"{row['well']} t{row['t']}: {titles[c]}", fill=0)
            draw.text(((3 + c) * PANEL + 4, top + 4), f"centre x{ZOOM}: {titles[c]}", fill=0)
    path = out / "demo-reconstruction.png"
    sheet.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "refocusd-bench-demo")
    parser.add_argument("--demo", type=Path, help="A finished `refocusd demo --out` folder to use.")
    parser.add_argument("--rows", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    demo = args.demo
    if demo is None:
        demo = args.out / "demo"
        if not (demo / "state" / "ledger.sqlite").is_file():
            run_demo(demo)
    rows = examples(demo, args.rows)
    if not rows:
        raise SystemExit("the demo reconstructed no time-lapse frame with a sharp frame before it")
    for row in rows:
        sidecar = json.loads(Path(f"{row['reconstructed']}.json").read_text())
        q = sidecar.get("quality") or {}
        say(f"  {row['well']} t{row['t']}: quality {q.get('quality')}, p_focused "
            f"{q.get('p_focused_before')} -> {q.get('p_focused_after')}, sharpness gain "
            f"{q.get('sharpness_gain')} ({row['reconstructed']})")
    say(f"wrote {compose(rows, args.out)}")


if __name__ == "__main__":
    main()
