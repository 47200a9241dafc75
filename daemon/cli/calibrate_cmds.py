"""``refocusd calibrate``: teach refocusd what "in focus" looks like for a new kind of sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from refocusd.daemon.cli.common import EXIT_USAGE, err_console, out_console, print_json, user_errors


def calibrate(
    config: Path = typer.Option(..., "--config", "-c", help="refocusd.toml with a [driver.micromanager] section."),
    out: Path = typer.Option(..., "--out", help="Focus-measure calibration to write (.json)."),
    positions: int = typer.Option(3, "--positions", min=1, help="First N stage positions of the plan to use."),
    z_range: float = typer.Option(8.0, "--z-range", min=0.1, help="± µm around each position's z."),
    z_step: float = typer.Option(1.0, "--z-step", min=0.01, help="µm between planes."),
    tolerance: float = typer.Option(1.5, "--tolerance", min=0.01, help="Planes this close to best focus are focused."),
    measure: str = typer.Option("gradient_energy", "--measure", help="Focus measure scored on each plane."),
    planes: Path | None = typer.Option(
        None, "--planes", help="Also write the labelled planes here (focused/, defocused/) for `train classifier`."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the calibration as one JSON line."),
) -> None:
    """Acquire z-series at a few positions of the plan, label planes by their distance from
    the best focus found by a focus measure, and fit a focus-measure classifier.

    Use the result as `[models] classifier = "<out>.json"`; or fine-tune the SDCNN on the
    planes with `refocusd train classifier --data <planes> --base default`.
    """
    from dataclasses import asdict

    from refocusd.config import load_settings
    from refocusd.models.focus_measures import FOCUS_MEASURES
    from refocusd.drivers.micromanager import CoreSession, load_sequence

    if out.suffix != ".json":
        err_console.print("--out must end in .json (that is how [models] classifier recognises a calibration)")
        raise typer.Exit(EXIT_USAGE)
    if measure not in FOCUS_MEASURES:
        err_console.print(f"unknown --measure {measure!r}; choose from {', '.join(FOCUS_MEASURES)}")
        raise typer.Exit(EXIT_USAGE)
    with user_errors():
        settings = load_settings(config)
        import sys

        from refocusd.daemon.ops.logging import configure_logging

        configure_logging(level=settings.logging.level, fmt=settings.logging.format, stream=sys.stderr)
        mm = settings.driver.micromanager
        if mm is None:
            err_console.print(f"{config} has no [driver.micromanager] section")
            raise typer.Exit(EXIT_USAGE)
        from refocusd.drivers.micromanager.calibrate import calibrate as run_calibration

        sequence = load_sequence(mm)
        stage = list(sequence.stage_positions)[:positions] or [None]
        xy = [None if p is None or p.x is None else (float(p.x), float(p.y or 0.0)) for p in stage]
        centre = float(next((p.z for p in stage if p is not None and p.z is not None), 0.0))
        z = list(centre + np.arange(-z_range, z_range + z_step / 2, z_step))
        session = CoreSession(mm)
        session.connect()
        result = run_calibration(session, xy, z_um=z, tolerance_um=tolerance, measure=measure, planes_dir=planes)
        result.save(out)
    if json_out:
        print_json(asdict(result))
    else:
        d = result.details
        out_console.print(
            f"calibrated [bold]{measure}[/]: threshold {result.threshold:.4g} "
            f"(focused planes {d['focused_scores'][0]:.4g}…{d['focused_scores'][1]:.4g}, "
            f"defocused {d['defocused_scores'][0]:.4g}…{d['defocused_scores'][1]:.4g}); "
            f"best z per position {[round(b, 2) for b in d['best_z_um']]} → {out}"
        )


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
