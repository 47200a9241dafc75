"""A corpus of bad inputs, written as real files: broken images and broken configurations.

Each maker writes one file under a folder and returns its path; the test data are small
but byte-for-byte what a user could hand refocusd.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

GOOD = (np.arange(128 * 128, dtype=np.uint32).reshape(128, 128) % 4096).astype(np.uint16)
NOISE = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)  # does not compress away


def _tiff_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def _absurd_tiff() -> bytes:
    """A valid header declaring a 1,000,000 x 1,000,000 16-bit image (2 TB) with 8 bytes of data."""
    entries = [  # tag, type (3 short, 4 long), count, value
        (256, 4, 1, 1_000_000), (257, 4, 1, 1_000_000), (258, 3, 1, 16), (259, 3, 1, 1),
        (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, 1_000_000), (279, 4, 1, 8),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 16) + b"\0" * 8 + ifd


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


IMAGE_CASES: dict[str, tuple[str, Callable[[], bytes]]] = {
    # kind: (file name, bytes)
    "zero-byte TIFF": ("empty.tif", lambda: b""),
    "truncated TIFF": ("truncated.tif", lambda: _tiff_bytes(GOOD)[:300]),
    "text file named .tif": ("notes.tif", lambda: b"exported by NIS-Elements\nplate 3\n" * 20),
    "PNG bytes named .tif": ("actually_png.tif", lambda: _png(GOOD.astype(np.uint8))),
    "1-D image": ("line.tif", lambda: _tiff_bytes(np.arange(4096, dtype=np.uint16).reshape(1, 4096))),
    "tiny 4x4 image": ("tiny.tif", lambda: _tiff_bytes(np.ones((4, 4), np.uint16))),
    "float image with NaN": ("nan.tif", lambda: _tiff_bytes(np.where(GOOD > 2000, np.nan, GOOD).astype(np.float32))),
    "float image with Inf": ("inf.tif", lambda: _tiff_bytes(np.where(GOOD > 2000, np.inf, GOOD).astype(np.float32))),
    "complex pixels": ("complex.tif", lambda: _tiff_bytes(GOOD.astype(np.complex64))),
    "5-channel image": ("five.tif", lambda: _tiff_bytes(np.zeros((64, 64, 5), np.uint8), photometric="minisblack",
                                                        planarconfig="contig")),
    "absurd declared size": ("absurd.tif", _absurd_tiff),
    "truncated PNG": ("truncated.png", lambda: _png(NOISE)[:2000]),
    "truncated JPEG": ("truncated.jpg", lambda: _jpeg(NOISE)[:2000]),
    "zero-byte PNG": ("empty.png", lambda: b""),
    "half-written ND2": ("half.nd2", lambda: b"\xda\xce\xbe\x0a" + b"\0" * 4092),
    # No signal at all: a capped lens, a lamp off, a saturated sensor (#14.20)
    "blank frame": ("blank.tif", lambda: _tiff_bytes(np.zeros((128, 128), np.uint16))),
    "saturated frame": ("saturated.tif", lambda: _tiff_bytes(np.full((128, 128), 255, np.uint8))),
    "constant colour frame": ("grey_rgb.tif", lambda: _tiff_bytes(np.full((96, 96, 3), 77, np.uint8),
                                                                  photometric="rgb")),
    "constant float frame": ("flat.tif", lambda: _tiff_bytes(np.full((96, 96), 0.5, np.float32))),
}

CONFIG_CASES: dict[str, tuple[str, str]] = {
    # kind: (TOML text, what the error message must name)
    "TOML syntax error": ("[service\nexperiment = 'x'\n", "TOML"),
    "unknown section": ("[servise]\nexperiment = 'x'\n", "servise"),
    "unknown key": ("[service]\nexperimnet = 'x'\n", "service.experimnet"),
    "wrong type": ("[models]\nbatch_size = 'many'\n", "models.batch_size"),
    "out of range": ("[models]\nthreshold = 1.5\n", "models.threshold"),
    "bad choice": ("[refocus]\nstrategy = 'guess'\n", "refocus.strategy"),
    "well outside the plate": ("[plate]\nrows = 8\ncolumns = 12\nwells = ['Z99']\n", "Z99"),
    "sweep step larger than range": ("[refocus]\nsweep_range_um = 5.0\nsweep_step_um = 10.0\n", "sweep_step_um"),
    "dask backend without scheduler": ("[reconstruction]\nbackend = 'dask'\n", "dask_scheduler"),
    "not UTF-8": ("\udcff", "UTF-8"),  # written as a lone 0xFF byte below
}


def write_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, (name, make) in IMAGE_CASES.items():
        path = folder / name
        path.write_bytes(make())
        paths[kind] = path
    return paths


def write_config(folder: Path, kind: str) -> Path:
    text, _ = CONFIG_CASES[kind]
    path = folder / f"{kind.replace(' ', '-')}.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path
