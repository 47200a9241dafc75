"""Reconstruct one frame and write it with provenance: the one pipeline behind the worker,
``refocusd reconstruct`` and the Dask backend (a Dask reconstructor is just another
:class:`~refocusd.models.api.FrameReconstructor` here).

Steps: hash the source, choose the output name (:func:`output_path`), decide what an
existing output means (``existing``), clear this output's own temporaries left by an
interrupted write, read the plane with the one image reader, reconstruct, write.

An output is unique to its source frame. The name is the source's stem (without
``.ome.tif(f)``/``.tif(f)``) plus the page of a multi-page source. Whether an existing output
really belongs to the frame is decided by its provenance (the source SHA-256), never by its
name alone: when another frame's reconstruction holds the name (``a.tif`` and ``a.tiff``
share a stem; a file replaced under the same name keeps its old output), this frame's
output gets the first 12 hex digits of its source's SHA-256 in its name instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from refocusd.config.files import stale_temporaries
from refocusd.daemon.output.provenance import build_provenance, sha256_file
from refocusd.daemon.output.writer import (
    OUTPUT_SUFFIX,
    OutputExists,
    WriterError,
    reconstruction_path,
    sidecar_path,
    write_reconstruction,
)
from refocusd.daemon.state.jobs import ReconstructionRequest, RecordedVerdict
from refocusd.models import FrameReconstructor, Verdict
from refocusd.models.frame_checks import InvalidFrame
from refocusd.models.images import UnreadableImage, read_plane

log = structlog.get_logger(__name__)

#: What to do when the output name is taken: ``resume`` (the daemon: done if it is this
#: frame's, else a content-tagged name), ``refuse`` or ``overwrite`` (the CLI's choice).
Existing = Literal["resume", "refuse", "overwrite"]


class SourceUnavailable(WriterError):
    """The raw frame a job refers to cannot be read (any more); the message says why."""


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    already_written: bool  # an earlier attempt wrote it (a crash came before it was recorded)
    seconds: float = 0.0  # time in the network


def output_path(request: ReconstructionRequest, output_root: Path, *, content_tag: str | None = None) -> Path:
    """Where ``request``'s reconstruction goes (see the module docs for the rule)."""
    parts = [] if request.source_page is None else [f"page{request.source_page:05d}"]
    if content_tag:
        parts.append(content_tag)
    root = request.source_root
    return reconstruction_path(
        Path(request.source_uri),
        source_root=Path(root) if root else None,
        output_root=output_root,
        tag="_".join(parts) or None,
    )


def recorded_source_sha256(output: Path) -> str | None:
    """The source SHA-256 an existing output's provenance names (``None``: none readable)."""
    try:
        record = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
        digest = record["source"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) else None


def remove_stale_temporaries(output_root: Path) -> int:
    """On start: remove every output temporary an interrupted write left under ``output_root``."""
    removed = 0
    if not output_root.is_dir():
        return 0
    for image in {p.parent / _final_name(p.name) for p in output_root.rglob(f".*{OUTPUT_SUFFIX}*.tmp")}:
        removed += _remove(stale_temporaries(image) + stale_temporaries(sidecar_path(image)))
    if removed:
        log.warning("writer.temporaries_removed", output_root=str(output_root), files=removed)
    return removed


def reconstruct_and_write(
    request: ReconstructionRequest,
    reconstructor: FrameReconstructor,
    *,
    output_root: Path,
    reason: str,
    run_id: str,
    existing: Existing = "resume",
    parameters: Mapping[str, Any] | None = None,
) -> Written:
    """Reconstruct ``request``'s frame and write it (+ JSON sidecar) under ``output_root``."""
    source = Path(request.source_uri)
    try:
        digest = sha256_file(source)  # before reading the pixels: hash what we reconstruct
    except OSError as exc:
        raise SourceUnavailable(f"cannot read raw frame {source}: {exc}") from exc
    target = output_path(request, output_root)
    if target.exists():
        if existing == "refuse":
            raise OutputExists(target)
        if existing == "resume":
            if recorded_source_sha256(target) == digest:
                return Written(target, already_written=True)
            # The name holds another frame's reconstruction: this frame's gets its own.
            target = output_path(request, output_root, content_tag=digest[:12])
            if target.exists() and recorded_source_sha256(target) == digest:
                return Written(target, already_written=True)
    _remove(stale_temporaries(target) + stale_temporaries(sidecar_path(target)))
    try:
        pixels = read_plane(source, request.source_page or 0)
    except (OSError, UnreadableImage, InvalidFrame) as exc:
        page = request.source_page or 0
        raise SourceUnavailable(f"cannot read raw frame {source} (page {page}): {exc}") from exc
    started = time.perf_counter()
    restored = reconstructor.reconstruct(pixels)
    seconds = time.perf_counter() - started
    provenance = build_provenance(
        reason=reason,
        source_path=source,
        source_sha256=digest,
        coords=request.coords,
        acquired_at=request.acquired_at,
        verdict=_verdict(request.verdict),
        reconstructor=reconstructor.provenance,
        parameters={
            **reconstructor.parameters_for(pixels.shape[0], pixels.shape[1]),
            "input_shape": list(pixels.shape),
            "input_dtype": str(pixels.dtype),
            "seconds": round(seconds, 3),
            **(parameters or {}),
        },
        run_id=run_id,
        device=str(reconstructor.provenance.get("device", "cpu")),
    )
    try:
        written = write_reconstruction(
            restored, target, provenance, source_path=source, overwrite=existing == "overwrite"
        )
    except OutputExists:
        # Another thread wrote the same frame meanwhile (its link() won): fine if it is ours.
        if existing == "resume" and recorded_source_sha256(target) == digest:
            return Written(target, already_written=True)
        raise
    return Written(written, already_written=False, seconds=seconds)


def _verdict(recorded: RecordedVerdict | None) -> Verdict | None:
    if recorded is None:
        return None
    label = "focused" if recorded.label == "focused" else "defocused"
    return Verdict(p_focused=recorded.p_focused, label=label, model_id=recorded.model, latency_s=0.0)


def _final_name(temporary: str) -> str:
    """``.NAME.reconstructed.ome.tif[.json].<hex>.tmp`` → ``NAME.reconstructed.ome.tif``."""
    name = temporary[1:]
    return name[: name.index(OUTPUT_SUFFIX) + len(OUTPUT_SUFFIX)]


def _remove(paths: list[Path]) -> int:
    removed = 0
    for path in paths:
        try:
            path.unlink(missing_ok=True)
            removed += 1
        except OSError as exc:
            log.warning("writer.temp_not_removed", path=str(path), error=str(exc))
    return removed
