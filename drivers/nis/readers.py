"""Read NIS-Elements exports (TIFF, ND2) page by page, refusing bad files with a reason.

Every check that can be made from the file's structure is made before any pixel is read:
a file that declares a 100 000 × 100 000 frame is refused, never allocated. Failures are
:class:`FileNotReady` (the file may still be growing: retried until the give-up time) or
:class:`~refocusd.drivers.base.FrameUnreadable` (refused at once).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from refocusd.drivers import pixel_size
from refocusd.drivers.base import FrameUnreadable
from refocusd.models.images import nd2_planes

#: NIS-Elements private TIFF tags (XML/text metadata), read when present.
NIS_PRIVATE_TAGS = (65330, 65331, 65332, 65333)
#: An ND2 file is complete once this is in its last 40 bytes (NIS writes the chunk map last).
ND2_SIGNATURE = b"ND2 CHUNK MAP SIGNATURE 0000001!"
ND2_TAIL_BYTES = 40
MAX_TAG_TEXT = 8192  # metadata text kept per tag: enough for provenance, not a memory hog
_SAMPLES_OK = (1, 3, 4)


class FileNotReady(FrameUnreadable):
    """The file does not parse yet (empty, truncated, ND2 without its chunk map).

    It may still be being written: the watcher tries again until the file has been
    unchanged for the give-up time, then quarantines it with this reason.
    """


@dataclass(frozen=True, slots=True)
class PagePixels:
    """One frame read from a file."""

    index: int  # TIFF: page; ND2: plane = sequence index × channels + channel
    pixels: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    stage_um: tuple[float, float, float] | None = None
    relative_time_s: float | None = None
    loop: dict[str, int] = field(default_factory=dict)
    channel: str = ""
    pixel_size_um: float | None = None  # as the file's metadata states it


def is_nd2(path: Path) -> bool:
    return path.suffix.lower() == ".nd2"


# --- TIFF ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TiffLayout:
    """What a TIFF declares, checked against the file before reading pixels."""

    pages: int
    shape: tuple[int, ...]
    dtype: np.dtype


def check_tiff(tif: tifffile.TiffFile, file_size: int, *, max_frame_bytes: int) -> TiffLayout:
    """Validate every page's declared shape, type and data extent; raise with the reason."""
    count = 0
    first: tuple[tuple[int, ...], np.dtype] | None = None
    try:
        for page in tif.pages:
            if not isinstance(page, tifffile.TiffPage):  # a TiffFrame: same layout as page 0
                page = page.aspage()
            _check_page(page, count, file_size, max_frame_bytes=max_frame_bytes)
            if first is None:
                first = (tuple(page.shape), page.dtype)
            count += 1
    except FrameUnreadable:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError, struct.error) as exc:
        raise FileNotReady(f"TIFF structure unreadable after page {count} (truncated?): {exc}") from None
    if first is None:
        raise FileNotReady("TIFF has no image pages (truncated?)")
    return TiffLayout(count, first[0], first[1])


def _check_page(page: tifffile.TiffPage, index: int, file_size: int, *, max_frame_bytes: int) -> None:
    shape = tuple(int(n) for n in page.shape)
    dtype = page.dtype
    where = f"page {index}"
    if dtype is None:
        raise FrameUnreadable(
            f"{where}: unsupported sample format (bits {page.bitspersample}, format {page.sampleformat})"
        )
    if dtype.kind not in "uif":
        raise FrameUnreadable(f"{where}: unsupported pixel type {dtype}")
    if len(shape) == 3 and (shape[-1] in _SAMPLES_OK or (_planar(page) and shape[0] in _SAMPLES_OK)):
        pass
    elif len(shape) != 2:
        raise FrameUnreadable(f"{where}: wrong dimensionality {shape}; expected a 2-D mono or RGB page")
    declared = math.prod(shape) * dtype.itemsize
    if declared > max_frame_bytes:
        raise FrameUnreadable(
            f"{where}: declared dimensions {shape} {dtype} need {declared:,} bytes, "
            f"over the {max_frame_bytes:,}-byte limit (absurd header, not allocated)"
        )
    offsets, counts = page.dataoffsets, page.databytecounts
    if not offsets or not counts:
        raise FileNotReady(f"{where}: no pixel data recorded (truncated?)")
    end = max(o + c for o, c in zip(offsets, counts, strict=False))
    if end > file_size:
        raise FileNotReady(f"{where}: pixel data ends at byte {end:,} but the file has {file_size:,} (truncated)")
    if page.compression == 1 and sum(counts) < declared:
        raise FileNotReady(f"{where}: {sum(counts):,} bytes of pixels for a {declared:,}-byte frame (truncated)")


def _planar(page: tifffile.TiffPage) -> bool:
    """Samples stored plane by plane: tifffile gives (S, Y, X)."""
    return page.planarconfig == tifffile.PLANARCONFIG.SEPARATE


def nis_tags(page: tifffile.TiffPage) -> dict[str, str]:
    """NIS private tags 65330–65333 as text (bytes decoded leniently, long values cut)."""
    found: dict[str, str] = {}
    for code in NIS_PRIVATE_TAGS:
        tag = page.tags.get(code)
        if tag is None:
            continue
        value = tag.value
        if isinstance(value, bytes):
            # NIS writes UTF-16 XML in some versions, UTF-8/ASCII in others.
            utf16 = value[:2] in (b"\xff\xfe", b"\xfe\xff")
            text = value.decode("utf-16", "replace") if utf16 else value.decode("utf-8", "replace")
        else:
            text = str(value)
        found[str(code)] = text.strip("\x00")[:MAX_TAG_TEXT]
    return found


def read_tiff(path: Path, *, max_frame_bytes: int) -> Iterator[PagePixels]:
    """Yield each page of a TIFF (one frame per page) after validating the whole file."""
    size = _size(path)
    try:
        tif = tifffile.TiffFile(path)
    except tifffile.TiffFileError as exc:
        text = str(exc)
        raise FileNotReady(text if text.startswith("not a TIFF") else f"not a TIFF file: {text}") from None
    except (ValueError, OSError, struct.error) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise FileNotReady(f"TIFF header unreadable: {exc}") from None
    with tif:
        layout = check_tiff(tif, size, max_frame_bytes=max_frame_bytes)
        try:
            stated_pixel_um = pixel_size.from_tiff(tif)
        except Exception:  # noqa: BLE001 - odd metadata means "unknown", not "unreadable"
            stated_pixel_um = None
        for index in range(layout.pages):
            page = tif.pages[index]
            try:
                pixels = page.asarray()
            except Exception as exc:  # noqa: BLE001 - any codec error means this page is unusable
                raise FileNotReady(f"page {index}: pixels cannot be decoded: {type(exc).__name__}: {exc}") from None
            if pixels.ndim == 3 and isinstance(page, tifffile.TiffPage) and _planar(page):
                pixels = np.moveaxis(pixels, 0, -1)
            tags = nis_tags(page if isinstance(page, tifffile.TiffPage) else tif.pages.first)
            yield PagePixels(index=index, pixels=pixels, metadata={"pages": layout.pages, "nis_tags": tags},
                             pixel_size_um=stated_pixel_um)


# --- ND2 -------------------------------------------------------------------------------


def nd2_complete(path: Path) -> bool:
    """True once NIS has written the chunk map (the file's last step)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        length = handle.tell()
        handle.seek(max(0, length - ND2_TAIL_BYTES))
        return ND2_SIGNATURE in handle.read(ND2_TAIL_BYTES)


def read_nd2(path: Path, *, max_frame_bytes: int) -> Iterator[PagePixels]:
    """Yield each sequence frame of an ND2 (split per channel) with stage position and time."""
    if _size(path) == 0:
        raise FileNotReady("empty file (0 bytes)")
    if not nd2_complete(path):
        raise FileNotReady("ND2 incomplete: chunk-map signature missing at the end of the file")
    frames = _nd2_frames(path, max_frame_bytes=max_frame_bytes)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except FrameUnreadable:
            raise
        except Exception as exc:  # noqa: BLE001 - the nd2 reader raises many types on bad files
            raise FrameUnreadable(f"ND2 file unreadable: {type(exc).__name__}: {exc}") from None
        yield frame


def _nd2_frames(path: Path, *, max_frame_bytes: int) -> Iterator[PagePixels]:
    import nd2

    with nd2.ND2File(path) as f:
        a = f.attributes
        # Declared in the header: checked before any frame is read.
        frame_bytes = a.heightPx * (a.widthPx or 0) * a.componentCount * max(1, a.bitsPerComponentInMemory // 8)
        if frame_bytes > max_frame_bytes:
            raise FrameUnreadable(f"ND2 frame of {frame_bytes:,} bytes is over the {max_frame_bytes:,}-byte limit")
        count = int(a.sequenceCount)
        loops = f.loop_indices if len(f.loop_indices) == count else ()
        channels = int(f.sizes.get("C", 1))
        names = [c.channel.name for c in (f.metadata.channels or [])] if f.metadata else []
        pixel_size_um = pixel_size.from_nd2(f)
        for index in range(count):
            stack = f.read_frame(index)
            meta = f.frame_metadata(index)
            planes = nd2_planes(stack, channels=channels, is_rgb=f.is_rgb)  # numbered as read_plane reads them
            for c, plane in enumerate(planes):
                fc = meta.channels[min(c, len(meta.channels) - 1)] if meta.channels else None
                yield PagePixels(
                    index=index * len(planes) + c,  # the plane, as the worker reads it back
                    pixels=plane,
                    metadata={"frames": count * len(planes), "channels": channels, "sequence_index": index},
                    stage_um=None if fc is None else tuple(float(v) for v in fc.position.stagePositionUm),
                    relative_time_s=None if fc is None else fc.time.relativeTimeMs / 1000.0,
                    loop=dict(loops[index]) if loops else {},
                    channel=names[c] if c < len(names) else (str(c) if channels > 1 else ""),
                    pixel_size_um=pixel_size_um,
                )


def _size(path: Path) -> int:
    size = path.stat().st_size
    if size == 0:
        raise FileNotReady("empty file (0 bytes)")
    return size
