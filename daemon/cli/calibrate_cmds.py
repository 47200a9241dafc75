"""``refocusd calibrate``: teach refocusd what "in focus" looks like for a new kind of sample."""

from __future__ import annotations

from pathlib import Path

import typer

from refocusd.daemon.cli.common import EXIT_USAGE, err_console, out_console, print_json, user_errors


def calibrate(
    out: Path = typer.Option(
        ..., "--out",
        help="A model folder (fine-tune the classifier on the sample), or a .json (focus-measure calibration).",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="refocusd.toml with a [driver.micromanager] section (z-series from the core)."
    ),
    zstack: list[Path] | None = typer.Option(
        None, "--zstack", help="A z-stack file (multi-page TIFF or ND2), one per position; repeat for more."
    ),
    z_step_um: float | None = typer.Option(None, "--z-step-um", help="µm between the z-stack's planes."),
    positions: int = typer.Option(3, "--positions", min=1, help="First N stage positions of the plan to use."),
    z_range: float = typer.Option(8.0, "--z-range", min=0.1, help="± µm around each position's z."),
    z_step: float = typer.Option(1.0, "--z-step", min=0.01, help="µm between planes."),
    tolerance: float = typer.Option(1.5, "--tolerance", min=0.01, help="Planes this close to best focus are focused."),
    measure: str | None = typer.Option(
        None, "--measure", help="Focus measure (default: gradient_energy for .json, normalized_variance to label)."
    ),
    base: str = typer.Option("default", "--base", help="Model to fine-tune (a folder, or 'default')."),
    epochs: int = typer.Option(8, "--epochs", min=1, max=200, help="Fine-tuning epochs."),
    sample: str = typer.Option("", "--sample", help="Name of the sample, recorded on the model card."),
    planes: Path | None = typer.Option(
        None, "--planes", help="Also write the labelled planes here (focused/, defocused/) for `train classifier`."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON line."),
) -> None:
    """Label the planes of z-series at a few positions by the sample's own focus peak, then
    fine-tune the classifier on them (--out FOLDER), or fit a focus-measure classifier
    (--out FILE.json, the fallback where fine-tuning is not wanted).

    The z-series come from the Micro-Manager core (--config), or from z-stacks a user
    exported (--zstack FILE --z-step-um S) where the driver has no stage control.
    Use the result as `[models] classifier = "<out>"`.
    """
    from refocusd.models.self_calibration import ZStackError

    fine_tune = out.suffix != ".json"
    if measure is None:
        measure = "normalized_variance" if fine_tune or zstack else "gradient_energy"
    _check_arguments(config, zstack, z_step_um, measure, out, fine_tune)
    try:
        with user_errors():
            if config is not None and not fine_tune:  # the focus-measure calibration on the core, as before
                _core_focus_measure(config, out, positions, z_range, z_step, tolerance, measure, planes, json_out)
                return
            series, session_sample = _z_series(config, zstack, z_step_um, positions, z_range, z_step, measure)
            sample = sample or session_sample
            if fine_tune:
                _fine_tune(series, out, base, tolerance, epochs, measure, sample, json_out)
            else:
                _focus_measure(series, out, tolerance, measure, planes, json_out)
    except ZStackError as exc:
        err_console.print(f"[bold red]z-stack error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def _check_arguments(config, zstack, z_step_um, measure: str, out: Path, fine_tune: bool) -> None:
    from refocusd.models.focus_measures import FOCUS_MEASURES

    if measure not in FOCUS_MEASURES:
        err_console.print(f"unknown --measure {measure!r}; choose from {', '.join(FOCUS_MEASURES)}")
        raise typer.Exit(EXIT_USAGE)
    if (config is None) == (not zstack):
        err_console.print("give either --config (z-series from the Micro-Manager core) or --zstack FILE")
        raise typer.Exit(EXIT_USAGE)
    if zstack and z_step_um is None:
        err_console.print("--zstack needs --z-step-um (the µm between its planes)")
        raise typer.Exit(EXIT_USAGE)
    if fine_tune and out.exists() and (not out.is_dir() or any(out.iterdir())):
        err_console.print(f"--out {out} already exists; a calibration never overwrites a model")
        raise typer.Exit(EXIT_USAGE)


def _core_plan(config: Path, positions: int, z_range: float, z_step: float):
    """The core session, the first ``positions`` XY of the plan, and the z-series planes."""
    import sys

    from refocusd.config import load_settings
    from refocusd.daemon.ops.logging import configure_logging
    from refocusd.drivers.micromanager import CoreSession, load_sequence

    settings = load_settings(config)
    configure_logging(level=settings.logging.level, fmt=settings.logging.format, stream=sys.stderr)
    mm = settings.driver.micromanager
    if mm is None:
        err_console.print(f"{config} has no [driver.micromanager] section")
        raise typer.Exit(EXIT_USAGE)
    from refocusd.drivers.micromanager.calibrate import calibration_plan

    xy, z = calibration_plan(load_sequence(mm), positions, z_range, z_step)
    session = CoreSession(mm)
    session.connect()
    return mm, session, xy, z


def _core_focus_measure(config, out, positions, z_range, z_step, tolerance, measure, planes, json_out) -> None:
    from dataclasses import asdict

    from refocusd.drivers.micromanager.calibrate import calibrate as run_calibration

    _, session, xy, z = _core_plan(config, positions, z_range, z_step)
    result = run_calibration(session, xy, z_um=z, tolerance_um=tolerance, measure=measure, planes_dir=planes)
    result.save(out)
    if json_out:
        print_json(asdict(result))
        return
    _print_focus_measure(result, measure, out)


def _z_series(config, zstack, z_step_um, positions, z_range, z_step, measure):
    from refocusd.models.self_calibration import ZSeries, read_zstack

    if zstack:
        return [read_zstack(path, float(z_step_um)) for path in zstack], zstack[0].stem
    from refocusd.drivers.micromanager.calibrate import acquire_z_series

    mm, session, xy, z = _core_plan(config, positions, z_range, z_step)
    series = []
    for i, position in enumerate(xy):
        acquired = acquire_z_series(session, position, z, measure)
        series.append(ZSeries(name=f"position{i}", z_um=acquired.z_um, planes=tuple(acquired.planes)))
    mode = mm.camera_properties.get("Mode", "")
    return series, mode or "micromanager"


def _fine_tune(series, out: Path, base: str, tolerance: float, epochs: int, measure: str, sample: str,
               json_out: bool) -> None:
    from refocusd.models.self_calibration import self_calibrate

    report = self_calibrate(series, out=out, base=base, tolerance_um=tolerance, epochs=epochs, measure=measure,
                            sample=sample)
    if json_out:
        print_json(report.as_dict())
        return
    b, a = report.before, report.after
    out_console.print(
        f"fine-tuned on {report.train_planes} planes in {report.seconds:.0f} s → {out}\n"
        f"held out {report.held_out}: accuracy {b.accuracy:.3f} → {a.accuracy:.3f}, "
        f"AUC {_fmt(b.auc)} → {_fmt(a.auc)}, defocus error {_fmt(b.defocus_mae_um)} → {_fmt(a.defocus_mae_um)} µm\n"
        f"use it with [models] classifier = \"{out}\" and threshold = {report.details['threshold']:.6g}"
    )


def _focus_measure(series, out: Path, tolerance: float, measure: str, planes_dir: Path | None,
                   json_out: bool) -> None:
    from dataclasses import asdict

    import tifffile

    from refocusd.models.focus_measure_classifier import FocusMeasureCalibration, fit_threshold
    from refocusd.models.focus_measures import FOCUS_MEASURES
    from refocusd.models.self_calibration import focus_peak, label_planes

    score = FOCUS_MEASURES[measure]
    focused, defocused, bests = [], [], []
    for i, s in enumerate(series):
        peak = focus_peak(s, measure)
        bests.append(peak)
        for plane in label_planes(s, peak, tolerance):
            (focused if plane.focused else defocused).append(score(plane.pixels))
            if planes_dir is not None:
                label = "focused" if plane.focused else "defocused"
                target = planes_dir / label / f"pos{i:02d}_dz{plane.defocus_um:+08.2f}.tif"
                target.parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(target, plane.pixels)
    threshold, scale = fit_threshold(focused, defocused)
    result = FocusMeasureCalibration(
        measure=measure, threshold=threshold, scale=scale, focused_within_um=tolerance,
        details={
            "positions": [s.name for s in series],
            "best_z_um": bests,
            "focused_scores": [min(focused), max(focused)],
            "defocused_scores": [min(defocused), max(defocused)],
            "n_focused": len(focused),
            "n_defocused": len(defocused),
        },
    )
    result.save(out)
    if json_out:
        print_json(asdict(result))
        return
    _print_focus_measure(result, measure, out)


def _print_focus_measure(result, measure: str, out: Path) -> None:
    d = result.details
    out_console.print(
        f"calibrated [bold]{measure}[/]: threshold {result.threshold:.4g} "
        f"(focused planes {d['focused_scores'][0]:.4g}…{d['focused_scores'][1]:.4g}, "
        f"defocused {d['defocused_scores'][0]:.4g}…{d['defocused_scores'][1]:.4g}); "
        f"best z per position {[round(b, 2) for b in d['best_z_um']]} → {out}"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
