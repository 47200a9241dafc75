"""Write reconstructions as OME-TIFF + JSON sidecar, atomically, never over raw data.

Layout: a reconstruction of ``<source_root>/a/b/img_t001.tif`` lands at
``<output_root>/a/b/img_t001.reconstructed.ome.tif`` with its full provenance in
``img_t001.reconstructed.ome.tif.json`` (the image name + ``.json``, so the pair is
unambiguous). Inside the TIFF, the OME-XML holds one Image and a ``MapAnnotation`` in the
namespace :data:`PROVENANCE_NAMESPACE` with the flattened provenance, linked to the Image.

The OME-XML is built with ome-types and handed to tifffile as the description, because
tifffile's own ``ome=True`` writer drops structured annotations.

Atomicity: both files are written to hidden temporary names in the destination directory,
fsynced, then renamed — sidecar first, image last. The image's appearance under its final
name is the commit point; a sidecar without an image is a leftover from a crash and is
replaced on the next attempt.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import tifffile
from ome_types import model as ome
from ome_types import to_xml

from refocusd.config.errors import RefocusdError
from refocusd.config.files import fsync_dir, temp_name
from refocusd.daemon.output.provenance import flatten

log = structlog.get_logger(__name__)

#: Namespace of the provenance MapAnnotation. A URN: an identifier, not a web address.
PROVENANCE_NAMESPACE = "urn:refocusd:provenance:v1"
OUTPUT_SUFFIX = ".reconstructed.ome.tif"
SIDECAR_SUFFIX = ".json"
_SOURCE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome")
_TAG_OK = re.compile(r"^[A-Za-z0-9._-]+$")

_PIXEL_TYPES: dict[np.dtype, ome.PixelType] = {
    np.dtype(np.uint8): ome.PixelType.UINT8,
    np.dtype(np.uint16): ome.PixelType.UINT16,
    np.dtype(np.uint32): ome.PixelType.UINT32,
    np.dtype(np.int8): ome.PixelType.INT8,
    np.dtype(np.int16): ome.PixelType.INT16,
    np.dtype(np.int32): ome.PixelType.INT32,
    np.dtype(np.float32): ome.PixelType.FLOAT,
    np.dtype(np.float64): ome.PixelType.DOUBLE,
}


class WriterError(RefocusdError, RuntimeError):
    """A reconstruction could not be written; the message names the path and the cause."""


class DiskFull(WriterError):
    """The output volume is full (or over quota): retry once space returns, not a bad job."""


class OutputExists(WriterError):
    """The output already exists and ``overwrite`` was not requested (``.path`` says where)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path} already exists (pass overwrite=True to replace it)")


def sidecar_path(out_path: Path) -> Path:
    """The JSON sidecar that belongs to ``out_path``."""
    return out_path.with_name(out_path.name + SIDECAR_SUFFIX)


def reconstruction_path(
    source: Path,
    *,
    source_root: Path | None,
    output_root: Path,
    tag: str | None = None,
) -> Path:
    """Where the reconstruction of ``source`` goes, mirroring its place under ``source_root``.

    The stem is the source name without ``.ome.tif(f)``/``.tif(f)``; sources that differ only
    in that suffix are told apart by the pipeline's content tag
    (:func:`refocusd.daemon.output.pipeline.output_path`). ``tag`` tells apart
    frames that share one source file (multi-page TIFF, ND2): ``run.nd2`` with
    ``tag="t003_p02"`` → ``run.nd2_t003_p02.reconstructed.ome.tif``. With
    ``source_root=None`` the output goes straight into ``output_root``.
    """
    if tag is not None and not _TAG_OK.match(tag):
        raise WriterError(f"output tag {tag!r} may only hold letters, digits, '.', '_' and '-'")
    stem = _strip_suffix(source.name)
    name = f"{stem}_{tag}{OUTPUT_SUFFIX}" if tag else f"{stem}{OUTPUT_SUFFIX}"
    if source_root is None:
        return output_root / name
    try:
        relative = source.parent.resolve().relative_to(source_root.resolve())
    except ValueError:
        raise WriterError(
            f"source {source} is not under the source root {source_root}; "
            "cannot mirror its location under the output root"
        ) from None
    return output_root / relative / name


def write_reconstruction(
    pixels: np.ndarray,
    out_path: Path,
    provenance: Mapping[str, Any],
    *,
    source_path: Path | None = None,
    overwrite: bool = False,
    compression: str | None = None,
) -> Path:
    """Write ``pixels`` as an OME-TIFF with provenance to ``out_path`` (+ JSON sidecar).

    ``pixels``: (Y, X) mono or (Y, X, 3) RGB, integer or float dtype. The source is taken
    from ``source_path`` and from ``provenance["source"]["path"]``; writing onto either is
    refused. Returns ``out_path``. Raises :class:`OutputExists` or :class:`WriterError`.
    """
    out_path = Path(out_path)
    started = time.perf_counter()
    _refuse_source(out_path, source_path, provenance)
    image = _validated(pixels, out_path)
    if out_path.exists() and not overwrite:
        raise OutputExists(out_path)
    xml = _ome_xml(image, out_path.name, provenance)
    sidecar = sidecar_path(out_path)
    try:
        sidecar_json = json.dumps(provenance, indent=2, sort_keys=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WriterError(f"provenance for {out_path} is not JSON-serialisable: {exc}") from exc

    directory = out_path.parent
    temps: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp_sidecar = temp_name(sidecar)
        temps.append(tmp_sidecar)
        with open(tmp_sidecar, "xb") as fh:
            fh.write(sidecar_json.encode("utf-8") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp_image = temp_name(out_path)
        temps.append(tmp_image)
        with open(tmp_image, "xb") as fh:
            tifffile.imwrite(
                fh,
                image,
                description=xml,
                photometric="rgb" if image.ndim == 3 else "minisblack",
                planarconfig="contig" if image.ndim == 3 else None,
                metadata=None,  # no tifffile JSON description: ours is the OME-XML
                compression=compression,
            )
            fh.flush()
            os.fsync(fh.fileno())
        if sidecar.exists() and not out_path.exists():
            log.warning("writer.orphan_sidecar_replaced", path=str(sidecar))
        os.replace(tmp_sidecar, sidecar)
        temps.remove(tmp_sidecar)
        _publish(tmp_image, out_path, overwrite=overwrite)
        temps.remove(tmp_image)
        fsync_dir(directory)
    except OSError as exc:
        message = _describe(exc, out_path, needed=image.nbytes)
        raise (DiskFull if _out_of_space(exc, message) else WriterError)(message) from exc
    finally:
        for temp in temps:
            _remove_quietly(temp)
    log.debug(
        "writer.written",
        path=str(out_path),
        bytes=out_path.stat().st_size,
        write_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return out_path


def _strip_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in _SOURCE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _validated(pixels: np.ndarray, out_path: Path) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise WriterError(
            f"cannot write {out_path}: pixels must be (Y, X) or (Y, X, 3), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise WriterError(f"cannot write {out_path}: empty image of shape {arr.shape}")
    dtype = arr.dtype.newbyteorder("=")
    if dtype not in _PIXEL_TYPES:
        raise WriterError(f"cannot write {out_path}: unsupported pixel type {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _ome_xml(image: np.ndarray, name: str, provenance: Mapping[str, Any]) -> bytes:
    rgb = image.ndim == 3
    annotation = ome.MapAnnotation(
        id="Annotation:0",
        namespace=PROVENANCE_NAMESPACE,
        description="refocusd reconstruction provenance",
        value=ome.Map(ms=[ome.Map.M(k=k, value=v) for k, v in flatten(provenance)]),
    )
    pixels = ome.Pixels(
        id="Pixels:0",
        dimension_order=ome.Pixels_DimensionOrder.XYCZT,
        type=_PIXEL_TYPES[image.dtype],
        size_x=image.shape[1],
        size_y=image.shape[0],
        size_c=3 if rgb else 1,
        size_z=1,
        size_t=1,
        # RGB is stored chunky (RGBRGB...) in a single IFD: one Channel with 3 samples.
        interleaved=True if rgb else None,
        big_endian=False,
        channels=[ome.Channel(id="Channel:0:0", samples_per_pixel=3 if rgb else 1)],
        tiff_data_blocks=[ome.TiffData(ifd=0, plane_count=1)],
    )
    doc = ome.OME(
        creator="refocusd",
        images=[
            ome.Image(
                id="Image:0",
                name=name,
                pixels=pixels,
                annotation_refs=[ome.AnnotationRef(id=annotation.id)],
            )
        ],
        structured_annotations=ome.StructuredAnnotations(map_annotations=[annotation]),
    )
    # TIFF descriptions are ASCII: non-ASCII characters (e.g. in paths) become XML
    # character references, which every XML parser turns back into the original text.
    return to_xml(doc).encode("ascii", "xmlcharrefreplace")


def _refuse_source(
    out_path: Path, source_path: Path | None, provenance: Mapping[str, Any]
) -> None:
    sources = [source_path] if source_path is not None else []
    source_block = provenance.get("source")
    if isinstance(source_block, Mapping) and isinstance(source_block.get("path"), str):
        sources.append(Path(source_block["path"]))
    for target in (out_path, sidecar_path(out_path)):
        for source in sources:
            if _same_file(target, source):
                raise WriterError(
                    f"refusing to write {target}: it is the source frame {source} "
                    "(raw data is never overwritten)"
                )


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)  # also catches hard links and symlinks
    except OSError:
        pass
    return os.path.abspath(a) == os.path.abspath(b)


def _publish(tmp: Path, final: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, final)
        return
    # link() fails atomically if ``final`` appeared meanwhile: no check-then-rename race.
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise OutputExists(final) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # Filesystems without hard links (some SMB/FAT mounts): best-effort check + rename.
        if final.exists():
            raise OutputExists(final) from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("writer.temp_not_removed", path=str(path), error=str(exc))


def _out_of_space(exc: OSError, message: str) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or "no space left on device" in message


def _describe(exc: OSError, out_path: Path, *, needed: int) -> str:
    where = exc.filename or out_path
    if exc.errno is None and "written" in str(exc):
        # numpy/tifffile report a short write without errno: usually a full disk.
        cause = f"short write ({exc})"
        try:
            free = shutil.disk_usage(out_path.parent).free
        except OSError:
            free = None
        if free is not None and free < needed:
            cause += f"; no space left on device ({free} bytes free, {needed} needed)"
        else:
            cause += "; disk full or file-size limit?"
    elif exc.errno == errno.ENOSPC:
        cause = "no space left on device"
    elif exc.errno == errno.EDQUOT:
        cause = "disk quota exceeded"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        cause = "permission denied"
    elif exc.errno == errno.EROFS:
        cause = "read-only file system"
    elif exc.errno == errno.EFBIG:
        cause = "file too large for this file system or process limit"
    else:
        cause = exc.strerror or str(exc)
    return f"cannot write reconstruction {out_path}: {cause} ({where})"
