"""``refocusd synth``: render training data with the optical simulator."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from refocusd.daemon.cli.common import EXIT_USAGE, err_console, out_console


class SynthKind(StrEnum):
    classifier = "classifier"
    reconstructor = "reconstructor"


class ObjectiveOption(StrEnum):
    x4 = "4x"
    x10 = "10x"
    x20 = "20x"
    x40 = "40x"
    mixed = "mixed"
    any = "any"


class BitDepthOption(StrEnum):
    b8 = "8"
    b16 = "16"


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


def _pixel_range(text: str) -> tuple[float, float]:
    """``0.65`` or ``0.3:1.2`` (µm) → (min, max)."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--pixel-size-um {text!r}: want a number or MIN:MAX in µm") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise ValueError(f"--pixel-size-um {text!r}: want a number or MIN:MAX in µm")


def _list_domains() -> None:
    from refocusd.models.synth.domains import DOMAIN_HELP, MODES, OBJECTIVE_BANDS, SPECIMENS

    out_console.print("imaging modes (--domain / --exclude-domain):", markup=False)
    for name in MODES:
        out_console.print(f"  {name:16s} {DOMAIN_HELP[name]}", markup=False, highlight=False)
    out_console.print("specimens:", markup=False)
    for name in SPECIMENS:
        out_console.print(f"  {name:16s} {DOMAIN_HELP[name]}", markup=False, highlight=False)
    bands = ", ".join(f"{m}/NA {lo:.2f}–{hi:.2f}" for m, (_, (lo, hi)) in OBJECTIVE_BANDS.items())
    out_console.print(f"objectives (--objective): {bands}; pixel size 0.1–2 µm at the specimen", markup=False,
                      highlight=False)


def synth(
    kind: SynthKind | None = typer.Option(
        None, "--kind", help="classifier: focused/ + defocused/; reconstructor: input/ + target/ pairs.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (new, empty, or a previous data set of the same kind).",
    ),
    n: int | None = typer.Option(None, "--n", min=1, help="Number of frames (classifier) or pairs (reconstructor)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed; the same seed gives identical files."),
    size: int | None = typer.Option(
        None, "--size", min=32, max=8192, help="Frame side in px (default: 512 classifier, 1024 reconstructor).",
    ),
    objective: ObjectiveOption | None = typer.Option(
        None, "--objective",
        help="Magnification (NA drawn in its band), mixed (10x+20x) or any (4x–40x). "
             "Default: any (classifier), mixed (reconstructor).",
    ),
    bit_depth: BitDepthOption = typer.Option(
        BitDepthOption.b8, "--bit-depth", help="Camera bit depth of the written TIFFs.",
    ),
    camera_pixel_um: float | None = typer.Option(
        None, "--camera-pixel-um", min=0.5, max=50.0,
        help="Camera pixel pitch in µm; pixel size = pitch / magnification (default: each objective's camera band).",
    ),
    pixel_size_um: str | None = typer.Option(
        None, "--pixel-size-um",
        help="Pixel size at the specimen in µm, fixed (0.65) or a range (0.3:1.2, log-uniform).",
    ),
    domain: list[str] = typer.Option(
        [], "--domain", help="Render only these domains (repeatable; see --list-domains).",
    ),
    exclude_domain: list[str] = typer.Option([], "--exclude-domain", help="Leave these domains out (repeatable)."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Processes rendering in parallel (same files)."),
    list_domains: bool = typer.Option(False, "--list-domains", help="Print the domain vocabulary and exit."),
) -> None:
    """Render simulated training data (physical optics, many imaging modes and specimens, camera noise)."""
    if list_domains:
        _list_domains()
        return
    from refocusd.daemon.ops.logging import configure_logging
    from refocusd.models.synth.dataset import (
        SynthError,
        SynthRequest,
        check_no_collision,
        check_output_folder,
        generate_dataset,
        plan_cleanup,
    )

    configure_logging(level="warning")  # the progress bar is the feedback; keep stdout clean
    try:
        missing = [flag for flag, value in (("--kind", kind), ("--out", out), ("--n", n)) if value is None]
        if missing:
            raise SynthError(f"missing option(s) {', '.join(missing)}")
        assert kind is not None and out is not None and n is not None
        try:
            pixel_range = _pixel_range(pixel_size_um) if pixel_size_um is not None else None
        except ValueError as exc:
            raise SynthError(str(exc)) from None
        request = SynthRequest(
            kind=kind.value,  # type: ignore[arg-type]
            n=n,
            seed=seed,
            size=size,
            objective=objective.value if objective is not None else None,  # type: ignore[arg-type]
            bit_depth=int(bit_depth.value),  # type: ignore[arg-type]
            camera_pixel_um=camera_pixel_um,
            pixel_size_um=pixel_range,
            domains=tuple(domain),
            exclude_domains=tuple(exclude_domain),
        )
        if check_output_folder(out, request.kind):  # refuse a wrong folder before any progress
            check_no_collision(plan_cleanup(out), request)
        started = time.perf_counter()
        columns = (
            TextColumn(f"synth {request.kind}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        with Progress(*columns, console=err_console, transient=False) as bar:
            task = bar.add_task("synth", total=request.n)
            manifest = generate_dataset(
                out, request, progress=lambda done, total: bar.update(task, completed=done, total=total),
                workers=workers,
            )
    except SynthError as exc:
        err_console.print(f"[bold red]synth error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    seconds = time.perf_counter() - started
    a, b = ("focused", "defocused") if request.kind == "classifier" else ("input", "target")
    out_console.print(
        f"wrote {request.n} {request.kind} item(s) to {out} ({a}/ and {b}/, manifest.json) "
        f"in {seconds:.1f} s ({seconds / request.n:.2f} s/item, {request.n / seconds:.1f} items/s)",
        highlight=False, soft_wrap=True,
    )
    kept = manifest.get("kept_files") or []
    if kept:
        shown = ", ".join(kept[:5]) + (" …" if len(kept) > 5 else "")
        out_console.print(
            f"kept {len(kept)} file(s) in {out} that synth did not write (or that changed since): {shown}",
            highlight=False, soft_wrap=True, markup=False,
        )
