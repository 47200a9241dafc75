"""``refocusd train classifier|reconstructor`` and ``refocusd evaluate classifier|reconstructor``.

Progress goes to stderr (a rich progress bar and one line per epoch); results go to stdout.
The first Ctrl-C stops training after the current step and writes the best model so far
(its card says ``interrupted``); a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import math
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from refocusd.daemon.cli.common import (
    EXIT_USAGE,
    err_console,
    out_console,
    print_json,
    user_errors,
)


train_app = typer.Typer(
    help="Train or fine-tune the networks on your own images (model folder out).",
    no_args_is_help=True,
)
evaluate_app = typer.Typer(
    help="Measure a model on a held-out folder (accuracy/AUC, SSIM/PSNR).", no_args_is_help=True
)

_DATA_HELP = "Folder with focused/ and defocused/ images (TIFF/PNG/JPEG)."
_PAIRS_HELP = "Folder with input/ (defocused) and target/ (focused) images of identical names."
_BASE_HELP = "Fine-tune from this model ('default' or a model folder) instead of from scratch."


# ------------------------------------------------------------------------- plumbing


def _quiet_logging(level: str) -> None:
    """Library events to stderr at ``level`` (stdout stays for results / JSON)."""
    from refocusd.daemon.ops.logging import configure_logging

    configure_logging(level=level, stream=sys.stderr)


@contextmanager
def _data_errors() -> Iterator[None]:
    """Data-folder problems get their own wording; everything else goes to user_errors()."""
    try:
        with user_errors():  # data errors and interruptions carry their own label and exit code
            yield
    except ValueError as exc:  # invalid option values the libraries reject
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


@contextmanager
def _ctrl_c_stops(stop: threading.Event) -> Iterator[None]:
    """First SIGINT: ask the loop to stop and save; second: the default (abort)."""
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        stop.set()
        err_console.print(
            "\n[yellow]stopping after this step; the best model so far will be written "
            "(Ctrl-C again to abort)[/]"
        )

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _ConsoleObserver:
    """Draws training progress on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None  # Any: rich's TaskID once started

    def on_start(self, kind: str, epochs: int, steps_per_epoch: int, summary: dict[str, Any]) -> None:
        details = ", ".join(f"{k} {v}" for k, v in summary.items() if v is not None)
        err_console.print(f"training {kind}: {epochs} epochs x {steps_per_epoch} steps ({details})")
        self.task = self.progress.add_task(f"epoch 1/{epochs}", total=steps_per_epoch)
        self.epochs = epochs

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        if self.task is not None:
            self.progress.update(
                self.task, completed=step, description=f"epoch {epoch}/{self.epochs} loss {loss:.4f}"
            )

    def on_epoch(self, report: Any) -> None:  # Any: training.EpochReport (imported lazily with TF)
        val = "  ".join(f"val_{k} {v:.4f}" for k, v in report.val.items() if _finite(v))
        mark = " [green]*best[/]" if report.improved else ""
        self.progress.console.print(
            f"epoch {report.epoch:>3}/{report.epochs}  lr {report.learning_rate:.2e}  "
            f"loss {report.train_loss:.4f}  {val}  {report.seconds:.1f}s{mark}"
        )
        if self.task is not None:
            self.progress.reset(self.task, description=f"epoch {report.epoch + 1}/{report.epochs}")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def _command_line() -> str:
    return shlex.join(["refocusd", *sys.argv[1:]])


def _report_training(result: Any) -> None:  # Any: training.TrainingResult (imported lazily)
    card = result.card
    state = "interrupted, best so far" if result.interrupted else "finished"
    val = card.metrics.get("validation", {})
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if _finite(v))
    typer.echo(
        f"wrote {result.folder} ({card.model_id}): {state}; {result.epochs_run} epoch(s) run, "
        f"best epoch {result.best_epoch}; validation {metrics or 'n/a'}"
    )


def _train(run: Any, cfg: Any, log_level: str) -> None:  # Any: either trainer and its config (lazy imports)
    _quiet_logging(log_level)
    stop = threading.Event()
    with _data_errors(), _ctrl_c_stops(stop), _progress() as progress:
        result = run(cfg, observer=_ConsoleObserver(progress), stop=stop)
    _report_training(result)


# ---------------------------------------------------------------------------- train


def _base_architecture(base: str | None) -> str | None:
    """The architecture of the model to fine-tune (read from its card, no TensorFlow)."""
    if base is None:
        return None
    from refocusd.models import store

    return store.check_model(base, "classifier").architecture


@train_app.command("classifier")
def train_classifier(
    data: list[Path] = typer.Option(
        ..., "--data", help=_DATA_HELP + " Repeat to train on several folders together."
    ),
    out: Path = typer.Option(..., "--out", help="Model folder to write (model.keras + model.json)."),
    base: str | None = typer.Option(None, "--base", help=_BASE_HELP),
    epochs: int = typer.Option(50, "--epochs", min=1, help="Epochs (the paper: 50)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, initialisation and shuffling."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=0.9),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Batch size (default: the paper's 4 for sdcnn, 64 crops)."
    ),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", min=1, help="Steps per epoch (default: one pass)."
    ),
    augment: bool = typer.Option(
        True, "--augment/--no-augment",
        help="Random flips/rotations (crop networks: also gamma and polarity inversion).",
    ),
    name: str | None = typer.Option(None, "--name", help="Model name in the card (default: the architecture)."),
    version: str | None = typer.Option(None, "--version", help="Model version (default: UTC time)."),
    architecture: str | None = typer.Option(
        None, "--architecture",
        help="sdcnn (the paper's whole-frame net), focusnet (crops + signed defocus, the "
        "shipped default) or sdcnn-crops (the paper's layers on crops + defocus). Default: "
        "the --base model's, else sdcnn.",
    ),
    crops_per_frame: int = typer.Option(
        4, "--crops-per-frame", min=1, help="Crop networks: training crops cut from each frame."
    ),
    crops: int = typer.Option(8, "--crops", min=1, help="Crop networks: crops per frame at inference."),
    trained_pixel_um: float = typer.Option(
        0.5, "--trained-pixel-um", min=0.01, help="Crop networks: the sampling to train at (µm/px)."
    ),
    frame_pixel_um: float | None = typer.Option(
        None, "--pixel-size-um", min=0.001,
        help="Crop networks: pixel size of frames whose folder's manifest does not say (µm).",
    ),
    width: int = typer.Option(16, "--width", min=4, help="focusnet: channels of the first layer."),
    exclude_domains: list[str] = typer.Option(
        [], "--exclude-domain",
        help="Crop networks: leave out frames of this imaging mode or specimen (synth manifests; "
        "repeatable), e.g. empty fields, whose focus no image can show.",
    ),
    learning_rate: float | None = typer.Option(
        None, "--lr", min=0.0, help="Crop networks: peak Adam rate (default 2e-3, fine-tune 4e-4)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Crop networks: continue from OUT/.checkpoint (an interrupted run)."
    ),
    log_level: str = typer.Option("warning", "--log-level", help="Log level on stderr."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model already in --out."),
) -> None:
    """Train the focus classifier (or fine-tune one with --base)."""
    with _data_errors():
        arch = architecture or _base_architecture(base) or "sdcnn"
    if arch != "sdcnn":
        from refocusd.models.focus_training import CropTrainConfig, train_crop_classifier
        from refocusd.models.synth.domains import DomainError, select_domains

        try:
            select_domains(exclude=exclude_domains)  # the simulator's own check of the names
        except DomainError as exc:
            raise typer.BadParameter(str(exc), param_hint="--exclude-domain") from exc

        crop_cfg = CropTrainConfig(
            data=tuple(data), out=out, architecture=arch, base=base, epochs=epochs, seed=seed,
            val_fraction=val_fraction, batch_size=batch_size or 64,
            steps_per_epoch=steps_per_epoch, crops_per_frame=crops_per_frame, crops=crops,
            trained_pixel_um=trained_pixel_um, frame_pixel_um=frame_pixel_um, width=width,
            learning_rate=learning_rate, augment=augment, resume=resume, name=name or arch,
            exclude_domains=tuple(exclude_domains),
            version=version, command=_command_line(),
        )
        _train(train_crop_classifier, crop_cfg, log_level)
        return
    from refocusd.models.training import ClassifierTrainConfig, train_classifier as run

    batch_size = batch_size or 4
    name = name or "sdcnn"
    cfg = ClassifierTrainConfig(
        data=tuple(data), out=out, base=base, epochs=epochs, seed=seed, val_fraction=val_fraction,
        batch_size=batch_size, steps_per_epoch=steps_per_epoch, augment=augment, name=name,
        version=version, command=_command_line(), overwrite=overwrite,
    )
    _train(run, cfg, log_level)


@train_app.command("reconstructor")
def train_reconstructor(
    data: Path = typer.Option(..., "--data", help=_PAIRS_HELP),
    out: Path = typer.Option(..., "--out", help="Model folder to write (model.keras + model.json)."),
    base: str | None = typer.Option(None, "--base", help=_BASE_HELP),
    epochs: int = typer.Option(60, "--epochs", min=1, help="Epochs (the paper: 60)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, initialisation and tiles."),
    base_filters: int | None = typer.Option(
        None, "--base-filters", min=1,
        help="Width of the first level (paper 64; default 16, the shipped CPU variant).",
    ),
    tile: int = typer.Option(
        388, "--tile", min=4, help="Output tile side (network input = tile + 184; paper 388)."
    ),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=0.9),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Batch size (the paper: 2)."),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", min=1, help="Steps per epoch (default: tiles covering the data once)."
    ),
    val_tiles: int = typer.Option(1, "--val-tiles", min=1, help="Validation tiles per pair."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Random flips/rotations."),
    name: str = typer.Option("resunet", "--name", help="Model name in the card."),
    version: str | None = typer.Option(None, "--version", help="Model version (default: UTC time)."),
    learning_rate: float | None = typer.Option(
        None, "--lr", min=1e-7, max=1.0,
        help="Constant learning rate for this run/segment (default: the paper's schedule, "
             "1e-3 from scratch, 2e-4 then 1e-4 when fine-tuning).",
    ),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue OUT's checkpoint (written after every epoch) up to --epochs in all; "
             "the data folder may change, the network, tile, batch, steps and seed may not.",
    ),
    log_level: str = typer.Option("warning", "--log-level", help="Log level on stderr."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model already in --out."),
) -> None:
    """Train the ResUNet reconstructor (or fine-tune one with --base; continue with --resume)."""
    from refocusd.models.training import ReconstructorTrainConfig, train_reconstructor as run

    cfg = ReconstructorTrainConfig(
        data=data, out=out, base=base, epochs=epochs, seed=seed, base_filters=base_filters,
        tile=tile, val_fraction=val_fraction, batch_size=batch_size,
        steps_per_epoch=steps_per_epoch, val_tiles_per_pair=val_tiles, augment=augment,
        name=name, version=version, command=_command_line(), overwrite=overwrite, resume=resume,
        learning_rate=learning_rate,
    )
    if resume and base is not None:
        err_console.print("[bold red]error:[/] --resume continues OUT's own run; drop --base")
        raise typer.Exit(EXIT_USAGE)
    _train(run, cfg, log_level)


# ------------------------------------------------------------------------- evaluate


def _fmt(value: object) -> str:
    return f"{value:.4f}" if _finite(value) else "n/a"


@evaluate_app.command("classifier")
def evaluate_classifier(
    model: str = typer.Option("default", "--model", help="'default', a model folder or .keras."),
    data: Path = typer.Option(..., "--data", help=_DATA_HELP),
    threshold: float = typer.Option(0.5, "--threshold", help="p_focused at or above: focused."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | gpu"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    record: str | None = typer.Option(
        None, "--record", help="Also store the report in the model's card under metrics.<KEY>."
    ),
    pixel_size_um: float | None = typer.Option(
        None, "--pixel-size-um", min=0.001,
        help="µm per pixel of frames whose folder's manifest does not say (default: native pixels).",
    ),
    log_level: str = typer.Option("warning", "--log-level", help="Log level on stderr."),
) -> None:
    """Accuracy, ROC AUC and confusion matrix on a labelled folder; rows per domain,
    objective and frame size, and the signed-defocus error where z is known."""
    from refocusd.models import evaluation

    _quiet_logging(log_level)
    with _data_errors():
        report = evaluation.evaluate_classifier(model, data, device=device, threshold=threshold,  # type: ignore[arg-type]
                                                pixel_size_um=pixel_size_um)
        if record:
            _record(model, "classifier", record, report)
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    c = report.confusion
    out_console.print(f"model {report.model} on {data} ({report.n} frames)", highlight=False)
    out_console.print(f"accuracy {_fmt(report.accuracy)}   AUC {_fmt(report.auc)}")
    table = Table(title="confusion (rows: true, columns: predicted)")
    table.add_column("")
    table.add_column("focused", justify="right")
    table.add_column("defocused", justify="right")
    table.add_row("focused", str(c.focused_as_focused), str(c.focused_as_defocused))
    table.add_row("defocused", str(c.defocused_as_focused), str(c.defocused_as_defocused))
    out_console.print(table)
    if report.rows:
        rows = Table(title="per group")
        for column in ("group", "value", "n", "accuracy", "AUC", "missed", "false alarms"):
            rows.add_column(column, justify="left" if column in ("group", "value") else "right")
        for r in report.rows:
            rows.add_row(r["group"], r["value"], str(r["n"]), _fmt(r["accuracy"]), _fmt(r["auc"]),
                         str(r["missed_defocused"]), str(r["false_alarms"]))
        out_console.print(rows)
    if report.defocus:
        d = report.defocus
        out_console.print(f"defocus: median |error| {_fmt(d['median_abs_error_um'])} µm over {d['n']} frames "
                          f"(median sigma {_fmt(d['median_sigma_um'])} µm)", highlight=False)
        if "10x_within_30um" in d:
            t = d["10x_within_30um"]
            out_console.print(f"  10x within ±30 µm: {_fmt(t['median_abs_error_um'])} µm = "
                              f"{_fmt(t['median_abs_error_dof'])} DOF (n={t['n']})", highlight=False)
        if "sign_beyond_2dof_pc_bf" in d:
            t = d["sign_beyond_2dof_pc_bf"]
            out_console.print(f"  sign correct beyond 2 DOF (phase contrast, bright field): "
                              f"{_fmt(t['correct'])} (n={t['n']})", highlight=False)


@evaluate_app.command("reconstructor")
def evaluate_reconstructor(
    model: str = typer.Option("default", "--model", help="'default', a model folder or .keras."),
    data: Path = typer.Option(..., "--data", help=_PAIRS_HELP),
    classifier: str = typer.Option(
        "default", "--classifier",
        help="Classifier for the realism check (focused vs reconstructed AUC); 'none' skips it.",
    ),
    richardson_lucy: bool = typer.Option(
        True, "--rl/--no-rl", help="Richardson-Lucy baseline (per-pair PSF/iteration search)."
    ),
    physics: bool = typer.Option(
        True, "--physics/--no-physics",
        help="Physics-aware baseline: Wiener inversion of the simulator's weak-object transfer "
             "functions at the true z (needs a refocusd synth manifest).",
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | gpu"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    record: str | None = typer.Option(
        None, "--record", help="Also store the report in the model's card under metrics.<KEY>."
    ),
    log_level: str = typer.Option("warning", "--log-level", help="Log level on stderr."),
) -> None:
    """Mean SSIM/PSNR against the targets: inputs, reconstructions, Richardson-Lucy."""
    from refocusd.models import evaluation

    _quiet_logging(log_level)
    with _data_errors(), _progress() as progress:
        task = progress.add_task("reconstructing", total=None)
        report = evaluation.evaluate_reconstructor(
            model, data, classifier=None if classifier.lower() == "none" else classifier,
            device=device, richardson_lucy_baseline=richardson_lucy,  # type: ignore[arg-type]
            physics_baseline=physics,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
        if record:
            _record(model, "reconstructor", record, report)
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    out_console.print(f"model {report.model} on {data} ({report.n} pairs)", highlight=False)
    judged = report.classifier is not None
    table = Table(title="against the focused targets")
    table.add_column("")
    table.add_column("mean SSIM", justify="right")
    table.add_column("mean PSNR (dB)", justify="right")
    if judged:
        table.add_column("realism AUC", justify="right")
    rows = (
        ("defocused input", report.input, report.realism_auc_focused_vs_defocused),
        ("Richardson-Lucy", report.richardson_lucy, report.realism_auc_focused_vs_richardson_lucy),
        ("physics (Wiener, true z)", report.physics, report.realism_auc_focused_vs_physics),
        ("network", report.reconstruction, report.realism_auc_focused_vs_reconstructed),
    )
    for label, stats, auc in rows:
        if stats is not None:
            table.add_row(label, _fmt(stats.mean_ssim), _fmt(stats.mean_psnr),
                          *([_fmt(auc)] if judged else []))
    out_console.print(table)
    if len(report.domains) > 1:
        per = Table(title="mean SSIM per domain")
        for header in ("domain", "n", "input", "RL", "physics", "network", "realism AUC"):
            per.add_column(header, justify="left" if header == "domain" else "right")
        for domain, d in report.domains.items():
            per.add_row(domain, str(d.n), _fmt(d.input.mean_ssim),
                        _fmt(d.richardson_lucy.mean_ssim if d.richardson_lucy else None),
                        _fmt(d.physics.mean_ssim if d.physics else None),
                        _fmt(d.reconstruction.mean_ssim), _fmt(d.realism_auc_focused_vs_reconstructed))
        out_console.print(per)
    if judged:
        out_console.print(
            f"classifier {report.classifier} judges realism: AUC of focused targets against each "
            "row (0.5 = indistinguishable, 1 = always told apart)", highlight=False,
        )


def _record(spec: str, kind: str, key: str, report: Any) -> None:  # Any: an evaluation report (lazy import)
    from refocusd.models import store
    from refocusd.models.evaluation import record_report

    folder = store.resolve(spec, kind)  # type: ignore[arg-type]
    path = record_report(folder, key, report)
    err_console.print(f"recorded metrics.{key} in {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    app.add_typer(evaluate_app, name="evaluate")
