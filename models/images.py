"""The one image reader: one plane of a TIFF, ND2, PNG or JPEG file as a validated frame.

Used by the CLI (``classify``, ``reconstruct``), the training and evaluation datasets, and
the reconstruction worker (which reads a job's source back); the NIS driver shares its ND2
plane numbering (:func:`nd2_planes`) and the frame rules (:func:`~.frame_checks.as_frame`).
Which files are images at all is decided here too (:func:`is_image_file`), so the daemon
and the CLI skip the same files.

Sizes declared in headers are checked before any pixel is decoded: a corrupt header must
not allocate terabytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePath

import numpy as np

from refocusd.models.frame_checks import MAX_SIDE, InvalidFrame, as_frame

#: Files the CLI and the training datasets read (the NIS driver adds ``.nd2`` by pattern).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
_PIL_TO_RGB = ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA", "RGBX")
_PIL_TO_MONO = ("1", "LA", "La")


class UnreadableImage(ValueError):
    """A file cannot be read as one frame; the message is the reason (the caller names the file)."""


def is_hidden(path: PurePath) -> bool:
    """Hidden files and folders (``.name``, which includes macOS ``._name`` resource forks)
    are never frames: editors, sync tools and writers keep their temporaries there."""
    return any(part.startswith(".") for part in path.parts)


def is_image_file(path: Path, *, root: Path | None = None, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> bool:
    """``path`` is an image to read: a wanted suffix, not hidden below ``root``."""
    relative = path.relative_to(root) if root is not None else PurePath(path.name)
    return path.suffix.lower() in suffixes and not is_hidden(relative)


def read_plane(path: Path, page: int | None = 0) -> np.ndarray:
    """One frame from ``path``: plane ``page`` of a TIFF (page) or ND2 (plane = sequence
    index × channels + channel), or the image of a PNG/JPEG. ``page=None`` demands that
    the file hold exactly one frame (training data: a z-stack is not one sample).

    Raises :class:`UnreadableImage` (decoder failures, absurd sizes, a missing page) and
    :class:`~.frame_checks.InvalidFrame` (pixels that are not a frame); the messages say why.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            pixels = _read_tiff(path, page)
        elif suffix == ".nd2":
            pixels = _read_nd2(path, page or 0)
        else:
            pixels = _read_pil(path)
    except (UnreadableImage, InvalidFrame):
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure on a file means "unreadable"
        raise UnreadableImage(f"cannot read image: {type(exc).__name__}: {exc}") from exc
    return as_frame(np.asarray(pixels))


def refuse_absurd_size(width: int, height: int) -> None:
    """Check a declared size before decoding."""
    if max(width, height) > MAX_SIDE:
        raise UnreadableImage(f"declares {width}x{height} pixels (more than {MAX_SIDE} per side); not read")


def nd2_planes(stack: np.ndarray, *, channels: int, is_rgb: bool) -> list[np.ndarray]:
    """The planes of one ND2 sequence frame: one per channel (RGB stays one plane)."""
    return [stack] if channels == 1 or is_rgb else list(stack)


def _read_tiff(path: Path, page: int | None) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise UnreadableImage("TIFF holds no images")
        if page is None:
            if len(tif.pages) > 1:
                raise UnreadableImage(f"holds {len(tif.pages)} planes; expected one frame")
            page = 0
        if page >= len(tif.pages):
            raise UnreadableImage(f"has {len(tif.pages)} page(s); page {page} does not exist")
        first = tif.pages[page]
        declared = first if isinstance(first, tifffile.TiffPage) else tif.pages.first  # a TiffFrame: page 0's layout
        refuse_absurd_size(declared.imagewidth, declared.imagelength)
        return first.asarray()


def _read_nd2(path: Path, plane: int) -> np.ndarray:
    import nd2

    with nd2.ND2File(path) as f:
        refuse_absurd_size(int(f.attributes.widthPx or 0), int(f.attributes.heightPx))
        channels = 1 if f.is_rgb else int(f.sizes.get("C", 1))
        sequence, channel = divmod(plane, channels)
        if sequence >= int(f.attributes.sequenceCount):
            raise UnreadableImage(f"has {f.attributes.sequenceCount * channels} plane(s); plane {plane} does not exist")
        planes = nd2_planes(f.read_frame(sequence), channels=channels, is_rgb=f.is_rgb)
        return planes[channel]


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        refuse_absurd_size(*image.size)
        image.seek(0)
        if image.mode in _PIL_TO_RGB:
            image = image.convert("RGB")
        elif image.mode in _PIL_TO_MONO:
            image = image.convert("L")
        return np.asarray(image)
