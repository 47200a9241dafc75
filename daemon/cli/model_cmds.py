"""``refocusd classify`` and ``refocusd reconstruct``: the networks on image files.

Inputs are files or folders (expanded recursively to ``*.tif *.tiff *.png *.jpg *.jpeg``,
sorted). TIFFs are read with tifffile, PNG/JPEG with Pillow. A multi-page TIFF or a stack
contributes its *first* plane (first page of the first series): one input, one answer.
A file that cannot be read as one mono or RGB frame gets an error line; the others are
still processed, and the exit status is 1. An unusable model is exit status 2.
TensorFlow is imported only once a command runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer
from rich.table import Table

from refocusd.models.frame_checks import InvalidFrame
from refocusd.models.images import IMAGE_SUFFIXES, UnreadableImage, is_image_file, read_plane
from refocusd.daemon.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    err_console,
    out_console,
    print_json,
    user_errors,
)

if TYPE_CHECKING:
    from refocusd.daemon.state.jobs import ReconstructionRequest
    from refocusd.models.api import FrameReconstructor
    from refocusd.models.api import FocusClassifier
    from refocusd.models.runtime import DevicePreference


_MODEL_HELP = "'default' (shipped), a model folder written by `refocusd train`, or its .keras file."
_CLASSIFIER_HELP = _MODEL_HELP[:-1] + ", or a focus-measure calibration .json written by `refocusd calibrate`."
_DEVICE_HELP = "auto (GPU when present), cpu or gpu."


class InputError(Exception):
    """One input could not be used; the message is the reason shown to the user."""


@dataclass(frozen=True, slots=True)
class Input:
    path: Path
    problem: str | None = None  # set when the path itself is unusable


def expand_inputs(paths: list[Path]) -> Iterator[Input]:
    """Files as given; folders as the images inside them, recursively, sorted."""
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and is_image_file(p, root=path)
            )
            if not found:
                yield Input(path, f"folder holds no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images")
            yield from (Input(p) for p in found)
        elif path.is_file():
            yield Input(path)
        elif path.exists():
            yield Input(path, "not a regular file or folder")
        else:
            yield Input(path, "no such file or folder")


def read_frame(path: Path) -> np.ndarray:
    """The first plane of an image file as a frame, by the daemon's rules (see module docs)."""
    try:
        return read_plane(path, 0)
    except (UnreadableImage, InvalidFrame) as exc:
        raise InputError(str(exc)) from exc


def _quiet_logging() -> None:
    # Logs go to stderr so stdout carries only the results (JSON lines or the table).
    from refocusd.daemon.ops.logging import configure_logging

    configure_logging(level="warning")


# ----------------------------------------------------------------------------- classify


def classify(
    paths: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    model: str = typer.Option("default", "--model", "-m", help=_CLASSIFIER_HELP),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per input on stdout."),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    threshold: float = typer.Option(
        0.5, "--threshold", min=0.0, max=1.0, help="p(focused) at or above this is 'focused'."
    ),
    pixel_size_um: float | None = typer.Option(
        None, "--pixel-size-um", min=0.0,
        help="µm per pixel of the inputs (default: read from each file's metadata; "
        "unknown: native pixels).",
    ),
    detail: bool = typer.Option(
        False, "--detail", help="Also print the crops used and what each one scored (JSON)."
    ),
    crops: int | None = typer.Option(
        None, "--crops", min=1, help="Crops per frame (crop classifiers; default: the model's)."
    ),
) -> None:
    """Classify frames as focused or defocused (and, with the default model, by how many
    µm and in which direction)."""
    _quiet_logging()
    with user_errors():
        from refocusd.daemon.factories import build_classifier

        if not 0.0 < threshold < 1.0:
            err_console.print("[bold red]error:[/] --threshold must be strictly between 0 and 1")
            raise typer.Exit(2)
        if pixel_size_um is not None and not pixel_size_um > 0:
            err_console.print("[bold red]error:[/] --pixel-size-um must be > 0")
            raise typer.Exit(2)
        classifier = build_classifier(model, device=_device(device), threshold=threshold, crops=crops)
    rows: list[dict[str, Any]] = []
    for item in expand_inputs(paths):
        row = _classify_one(classifier, item, pixel_size_um, detail)
        rows.append(row)
        if json_lines:
            print_json(row)
    if not json_lines:
        _print_table(rows, classifier.model_id)
    raise typer.Exit(EXIT_FAILURES if any("error" in r for r in rows) else EXIT_OK)


def _classify_one(classifier: FocusClassifier, item: Input, pixel_size_um: float | None,
                  detail: bool) -> dict[str, Any]:
    from refocusd.drivers.pixel_size import pixel_size_from_file
    from refocusd.models.preprocessing import PixelFormatError

    if item.problem:
        return {"path": str(item.path), "error": item.problem}
    try:
        pixels = read_frame(item.path)
        size = pixel_size_um if pixel_size_um is not None else pixel_size_from_file(item.path)
        verdict = classifier.classify(pixels, pixel_size_um=size)
    except (InputError, PixelFormatError) as exc:
        return {"path": str(item.path), "error": str(exc)}
    out = verdict.as_dict(detail=detail)
    out.pop("latency_ms")
    return {"path": str(item.path), **out}


def _print_table(rows: list[dict[str, Any]], model_id: str) -> None:
    table = Table(title=f"classifier {model_id}", title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("p(focused)", justify="right")
    table.add_column("label")
    for row in rows:
        if "error" in row:
            table.add_row(row["path"], "", f"[red]error: {row['error']}[/]")
        else:
            colour = "green" if row["label"] == "focused" else "yellow"
            table.add_row(row["path"], f"{row['p_focused']:.4f}", f"[{colour}]{row['label']}[/]")
    out_console.print(table)
    counts = {label: sum(r.get("label") == label for r in rows) for label in ("focused", "defocused")}
    errors = sum("error" in r for r in rows)
    out_console.print(
        f"{counts['focused']} focused, {counts['defocused']} defocused, {errors} unreadable"
    )


# -------------------------------------------------------------------------- reconstruct


def reconstruct(
    paths: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the reconstructions."),
    model: str = typer.Option("default", "--model", "-m", help=_MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    dask: str | None = typer.Option(
        None, "--dask", metavar="tcp://HOST:PORT",
        help="Run the network on this Dask scheduler's workers (archives); outputs are still written here.",
    ),
) -> None:
    """Reconstruct frames with the ResUNet; write OUT/<stem>.reconstructed.ome.tif (+ .json).

    Each output carries its provenance (source path and SHA-256, model and its SHA-256,
    parameters, software versions, device, UTC time). Inputs are only ever read. With
    --dask, frames go to the cluster (as many at once as it has worker threads) and
    results are printed as they come back.
    """
    _quiet_logging()
    with user_errors():
        reconstructor = _reconstructor(model, _device(device), dask)
    run_id = f"cli-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    claimed: dict[Path, Path] = {}
    failed = False
    try:
        with ThreadPoolExecutor(max_workers=reconstructor.threads) as pool:
            pending = []
            for item in expand_inputs(paths):
                problem = item.problem or _claim(item, out, claimed, overwrite)
                if problem:  # answered at once: nothing to send to the network
                    failed = True
                    print_json({"path": str(item.path), "error": problem})
                    continue
                pending.append(pool.submit(_reconstruct_one, reconstructor, item, out, run_id, overwrite))
            for future in as_completed(pending):
                row = future.result()
                failed |= "error" in row
                print_json(row)
    finally:
        reconstructor.close()
    raise typer.Exit(EXIT_FAILURES if failed else EXIT_OK)


def _reconstructor(model: str, device: DevicePreference, dask: str | None) -> FrameReconstructor:
    from refocusd.daemon.factories import connect_dask, load_local_reconstructor

    return connect_dask(dask, model, device=device) if dask else load_local_reconstructor(model, device=device)


def _request(item: Input) -> ReconstructionRequest:
    from refocusd.daemon.state.jobs import ReconstructionRequest

    return ReconstructionRequest(source_uri=str(item.path.resolve()))


def _claim(item: Input, out: Path, claimed: dict[Path, Path], overwrite: bool) -> str | None:
    """Reserve the output path of ``item``; the reason it cannot have one, if so."""
    from refocusd.daemon.output.pipeline import output_path

    target = output_path(_request(item), out).resolve()
    if target in claimed:
        return f"output {target} would overwrite the one of {claimed[target]}"
    if target.exists() and not overwrite:  # refuse before spending seconds on the network
        return f"{target} already exists (pass --overwrite to replace it)"
    claimed[target] = item.path
    return None


def _reconstruct_one(reconstructor: FrameReconstructor, item: Input, out: Path,
                     run_id: str, overwrite: bool) -> dict[str, Any]:
    from refocusd.daemon.errors import BackendUnavailable
    from refocusd.daemon.output.pipeline import reconstruct_and_write
    from refocusd.daemon.output.writer import WriterError
    from refocusd.models.preprocessing import PixelFormatError

    try:
        written = reconstruct_and_write(
            _request(item),
            reconstructor,
            output_root=out,
            reason="requested: refocusd reconstruct",
            run_id=run_id,
            existing="overwrite" if overwrite else "refuse",
        )
    except (PixelFormatError, WriterError, OSError, BackendUnavailable) as exc:
        return {"path": str(item.path), "error": str(exc)}
    return {"path": str(item.path), "output": str(written.path)}


def _device(value: str) -> DevicePreference:
    from refocusd.models.api import ModelError

    if value not in ("auto", "cpu", "gpu"):
        raise ModelError(f"--device must be auto, cpu or gpu, not {value!r}")
    return value


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)
    app.command("reconstruct")(reconstruct)
