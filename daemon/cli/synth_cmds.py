"""``refocusd synth``: render training data with the optical simulator."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from refocusd.daemon.cli.common import EXIT_USAGE, err_console, out_console


class SynthKind(str, Enum):
    classifier = "classifier"
    reconstructor = "reconstructor"


class ObjectiveOption(str, Enum):
    x10 = "10x"
    x20 = "20x"
    mixed = "mixed"


class BitDepthOption(str, Enum):
    b8 = "8"
    b16 = "16"


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


def synth(
    kind: SynthKind = typer.Option(..., "--kind", help="classifier: focused/ + defocused/; reconstructor: input/ + target/ pairs."),
    out: Path = typer.Option(..., "--out", help="Output folder (new, empty, or a previous data set of the same kind)."),
    n: int = typer.Option(..., "--n", min=1, help="Number of frames (classifier) or pairs (reconstructor)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed; the same seed gives identical files."),
    size: int | None = typer.Option(None, "--size", min=32, max=8192, help="Frame side in px (default: 512 classifier, 1024 reconstructor)."),
    objective: ObjectiveOption = typer.Option(ObjectiveOption.mixed, "--objective", help="10x/0.30, 20x/0.45, or both 1:1."),
    bit_depth: BitDepthOption = typer.Option(BitDepthOption.b8, "--bit-depth", help="Camera bit depth of the written TIFFs."),
    camera_pixel_um: float | None = typer.Option(
        None, "--camera-pixel-um", min=0.5, max=50.0,
        help="Camera pixel pitch in µm; specimen sampling = pitch / magnification (default: 3.70, the paper's 1608 px = 595 µm at 10x).",
    ),
) -> None:
    """Render simulated phase-contrast training data (physical optics + camera noise)."""
    from refocusd.daemon.ops.logging import configure_logging
    from refocusd.models.synth.dataset import (
        PAPER_CAMERA_PIXEL_UM,
        SynthError,
        SynthRequest,
        check_output_folder,
        generate_dataset,
    )

    configure_logging(level="warning")  # the progress bar is the feedback; keep stdout clean
    try:
        request = SynthRequest(
            kind=kind.value,  # type: ignore[arg-type]
            n=n,
            seed=seed,
            size=size,
            objective=objective.value,  # type: ignore[arg-type]
            bit_depth=int(bit_depth.value),  # type: ignore[arg-type]
            camera_pixel_um=camera_pixel_um if camera_pixel_um is not None else PAPER_CAMERA_PIXEL_UM,
        )
        check_output_folder(out, request.kind)  # refuse a wrong folder before any progress
        started = time.perf_counter()
        columns = (
            TextColumn(f"synth {request.kind}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        with Progress(*columns, console=err_console, transient=False) as bar:
            task = bar.add_task("synth", total=request.n)
            generate_dataset(out, request, progress=lambda done, total: bar.update(task, completed=done, total=total))
    except SynthError as exc:
        err_console.print(f"[bold red]synth error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    seconds = time.perf_counter() - started
    a, b = ("focused", "defocused") if request.kind == "classifier" else ("input", "target")
    out_console.print(
        f"wrote {request.n} {request.kind} item(s) to {out} ({a}/ and {b}/, manifest.json) "
        f"in {seconds:.1f} s ({seconds / request.n:.2f} s/item)",
        highlight=False, soft_wrap=True,
    )
