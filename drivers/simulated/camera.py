"""The simulated microscope's camera: the only module that calls the optics simulator.

A frame of field ``site`` at true defocus ``d`` is made in three steps, of very different
cost, so that a plate scan runs at camera speed:

1. the specimen of the field (one per field, seeded; ~0.4 s to draw, small LRU);
2. the noise-free image in camera counts on the specimen grid (≤ 512 px): the optics render
   at ``d`` rounded to ``defocus_quantum_um`` (~0.5 s; LRU bounded in bytes);
3. per snap: bilinear resampling to ``frame_shape`` plus fresh sensor noise from a noise
   bank drawn once through the synth camera (shot + read noise + quantisation at the
   background level), read at a random offset (~1–2 ms for 2048×2048 with OpenCV).

The noise bank is stationary: every pixel gets the background's noise; the synth camera
would scale shot noise with the signal, which costs ~100 ms per 2048² frame. Counts within
the bank's maximum excursion of full scale read just below it (the noise is added with
wrap-around arithmetic on a clipped image, one pass, no overflow).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from refocusd.config.settings import SimulatedMicroscopeSettings
from refocusd.drivers.clock import Clock
from refocusd.models.synth.dataset import PAPER_CAMERA_PIXEL_UM
from refocusd.models.synth.camera import Camera, illumination_field, specimen_grid
from refocusd.models.synth.optics import OBJECTIVES, Optics, render
from refocusd.models.synth.specimen import CELL_TYPES, SUBSTRATES, Specimen, random_specimen

log = structlog.get_logger(__name__)

SiteKey = tuple[int, int, int]  # (row, column, position index)

# Seed-stream tags (the stage uses 1 and 2).
STREAM_PLATE = 10
STREAM_WELL = 11
STREAM_SPECIMEN = 12
STREAM_LAMP = 13
STREAM_NOISE_BANK = 14
STREAM_NOISE_OFFSET = 15

DEFAULT_RENDER_CACHE_BYTES = 128 * 2**20
DEFAULT_SPECIMEN_CACHE = 8
SPECIMEN_GRID_MAX_SIDE = 512
# Distinct noise offsets; the bank holds one frame plus this many extra pixels.
NOISE_BANK_OFFSETS = 1 << 16
# Noise beyond this many standard deviations is clipped (a 4M-pixel bank reaches ~5.3).
NOISE_CLIP_SIGMA = 5.5


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to ``shape`` (rows, columns), same integer dtype, new array."""
    if image.shape == shape:
        return image.copy()
    rows, cols = shape
    try:
        import cv2  # fast path: ~1 ms for 512² → 2048² uint16
    except ImportError:
        from PIL import Image

        resized = Image.fromarray(image.astype(np.float32)).resize((cols, rows), Image.Resampling.BILINEAR)
        return np.rint(np.asarray(resized)).astype(image.dtype)
    return cv2.resize(image, (cols, rows), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True, slots=True)
class CacheInfo:
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    specimens: int


class SimulatedCamera:
    """Renders frames of plate fields at a given true defocus; ``snap`` costs exposure time."""

    def __init__(
        self,
        settings: SimulatedMicroscopeSettings,
        *,
        clock: Clock,
        render_cache_bytes: int = DEFAULT_RENDER_CACHE_BYTES,
        specimen_cache: int = DEFAULT_SPECIMEN_CACHE,
        defocus_quantum_um: float | None = None,
    ) -> None:
        self._clock = clock
        self.seed = settings.seed
        self.exposure_s = settings.exposure_s
        self.frame_shape: tuple[int, int] = (int(settings.frame_shape[0]), int(settings.frame_shape[1]))
        # The camera samples like the paper's (3.70 µm sensor pitch behind the objective),
        # the same sampling `refocusd synth` renders training data at, so the shipped
        # models see cells at the scale they were trained on.
        objective = OBJECTIVES[settings.objective]
        sensor_pitch_um = settings.camera_pixel_um or PAPER_CAMERA_PIXEL_UM
        self.optics: Optics = dataclasses.replace(
            objective, field_of_view_um=sensor_pitch_um / objective.magnification * max(self.frame_shape)
        )
        self.sensor = Camera(bit_depth=settings.bit_depth)
        self.grid_shape, self.grid_pixel_um = specimen_grid(
            self.optics, self.frame_shape, max_side=SPECIMEN_GRID_MAX_SIDE
        )
        # Images within a quarter of the depth of field are indistinguishable at camera
        # noise; rounding to it lets a well-focused field reuse one render across a run.
        self.defocus_quantum_um = (
            defocus_quantum_um if defocus_quantum_um is not None else max(0.25, self.optics.depth_of_field_um / 4)
        )
        if self.defocus_quantum_um <= 0:
            raise ValueError(f"defocus_quantum_um={self.defocus_quantum_um} must be positive")
        self._max_bytes = render_cache_bytes
        self._max_specimens = max(1, specimen_cache)
        self._renders: OrderedDict[tuple[SiteKey, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._specimens: OrderedDict[SiteKey, Specimen] = OrderedDict()
        self._info: dict[SiteKey, dict[str, Any]] = {}
        self._lamp: np.ndarray | None = None
        self._bank: np.ndarray | None = None
        self._bank_reach = 0
        plate_rng = np.random.default_rng([self.seed, STREAM_PLATE])
        self.substrate = SUBSTRATES[int(plate_rng.integers(len(SUBSTRATES)))]

    # -- geometry ----------------------------------------------------------------------

    @property
    def field_of_view_um(self) -> float:
        """Width of the frame's longer side on the specimen."""
        return self.optics.field_of_view_um

    @property
    def pixel_size_um(self) -> float:
        return self.field_of_view_um / max(self.frame_shape)

    # -- acquisition -------------------------------------------------------------------

    def snap(self, site: SiteKey, defocus_um: float, *, noise_key: tuple[int, ...]) -> np.ndarray:
        """A fresh frame (``frame_shape``, sensor dtype) of ``site`` at ``defocus_um``.

        ``noise_key`` picks the noise draw, so the same plan gives the same pixels
        whatever else was snapped in between.
        """
        base = self._render(site, defocus_um)
        bank = self._noise_bank()
        draw = np.random.default_rng([self.seed, STREAM_NOISE_OFFSET, *site, *noise_key])
        offset = int(draw.integers(NOISE_BANK_OFFSETS))
        size = self.frame_shape[0] * self.frame_shape[1]
        frame = _resize(base, self.frame_shape)
        # Modular add of two's-complement noise: exact because ``base`` keeps a margin of
        # ``_bank_reach`` from both ends of the range.
        np.add(frame.reshape(-1), bank[offset : offset + size], out=frame.reshape(-1))
        self._clock.sleep(self.exposure_s)
        return frame

    def expected(self, site: SiteKey, defocus_um: float) -> np.ndarray:
        """The noise-free frame (counts) that ``snap`` adds noise to."""
        return _resize(self._render(site, defocus_um), self.frame_shape)

    def specimen_info(self, site: SiteKey) -> dict[str, Any]:
        """Ground truth about the field's culture (substrate, cell type, confluence)."""
        if site not in self._info:
            self._specimen(site)
        return dict(self._info[site])

    def cache_info(self) -> CacheInfo:
        return CacheInfo(
            entries=len(self._renders), bytes=self._bytes, max_bytes=self._max_bytes,
            hits=self._hits, misses=self._misses, specimens=len(self._specimens),
        )

    def close(self) -> None:
        """Drop every cache and the noise bank (they are rebuilt on demand)."""
        self._renders.clear()
        self._specimens.clear()
        self._bytes = 0
        self._bank = None
        self._lamp = None

    # -- caches ------------------------------------------------------------------------

    def _render(self, site: SiteKey, defocus_um: float) -> np.ndarray:
        if not math.isfinite(defocus_um):
            raise ValueError(f"defocus {defocus_um} is not finite")
        q = round(defocus_um / self.defocus_quantum_um)
        key = (site, q)
        cached = self._renders.get(key)
        if cached is not None:
            self._renders.move_to_end(key)
            self._hits += 1
            return cached
        self._misses += 1
        specimen = self._specimen(site)
        intensity = render(specimen, q * self.defocus_quantum_um, self.optics, out_shape=self.grid_shape)
        counts = self._counts(intensity * self._lamp_field())
        counts.flags.writeable = False
        self._renders[key] = counts
        self._bytes += counts.nbytes
        while self._bytes > self._max_bytes and len(self._renders) > 1:
            _, old = self._renders.popitem(last=False)
            self._bytes -= old.nbytes
        log.debug("simulator.rendered", site=list(site), defocus_um=q * self.defocus_quantum_um)
        return counts

    def _specimen(self, site: SiteKey) -> Specimen:
        specimen = self._specimens.get(site)
        if specimen is not None:
            self._specimens.move_to_end(site)
            return specimen
        row, col, _ = site
        # One culture per well (cell type, confluence), one specimen per field.
        well_rng = np.random.default_rng([self.seed, STREAM_WELL, row, col])
        cell_type = CELL_TYPES[int(well_rng.integers(len(CELL_TYPES)))]
        confluence = float(well_rng.uniform(0.1, 0.6))
        rng = np.random.default_rng([self.seed, STREAM_SPECIMEN, *site])
        density = float(np.clip(confluence * rng.uniform(0.8, 1.25), 0.02, 0.9))
        specimen = random_specimen(
            self.grid_shape, rng, pixel_size_um=self.grid_pixel_um, density=density,
            substrate=self.substrate, cell_type=cell_type, wavelength_um=self.optics.wavelength_um,
        )
        self._info[site] = {
            "substrate": specimen.substrate, "cell_type": specimen.cell_type,
            "confluence": round(specimen.density, 3), "cells": specimen.n_cells,
        }
        self._specimens[site] = specimen
        while len(self._specimens) > self._max_specimens:
            self._specimens.popitem(last=False)
        return specimen

    def _lamp_field(self) -> np.ndarray:
        if self._lamp is None:
            self._lamp = illumination_field(self.grid_shape, np.random.default_rng([self.seed, STREAM_LAMP]))
        return self._lamp

    # -- sensor ------------------------------------------------------------------------

    def _background_counts(self) -> float:
        s = self.sensor
        return s.background_fill * s.full_well_e / s.gain_e_per_adu + s.offset

    def _counts(self, intensity: np.ndarray) -> np.ndarray:
        """Noise-free counts, clipped to keep the noise bank's reach from both range ends."""
        s = self.sensor
        self._noise_bank()  # sets _bank_reach
        mean = np.clip(intensity, 0.0, None) * (s.background_fill * s.full_well_e / s.gain_e_per_adu) + s.offset
        lo, hi = self._bank_reach, s.max_adu - self._bank_reach
        return np.clip(np.rint(mean), lo, hi).astype(s.dtype)

    def _noise_bank(self) -> np.ndarray:
        """Sensor noise at the background level, in the sensor dtype's two's complement."""
        if self._bank is not None:
            return self._bank
        s = self.sensor
        n = self.frame_shape[0] * self.frame_shape[1] + NOISE_BANK_OFFSETS
        rng = np.random.default_rng([self.seed, STREAM_NOISE_BANK])
        exposed = s.expose(np.ones(n, dtype=np.float32), rng).astype(np.int32)
        noise = exposed - round(self._background_counts())
        sigma = max(float(noise.std()), 0.5)
        reach = math.ceil(NOISE_CLIP_SIGMA * sigma)
        signed = np.int8 if s.dtype == np.uint8 else np.int16
        self._bank = np.clip(noise, -reach, reach).astype(signed).view(s.dtype)
        self._bank_reach = reach
        log.debug("simulator.noise_bank", pixels=n, sigma_adu=round(sigma, 2), reach_adu=reach)
        return self._bank
