"""The camera: illumination non-uniformity, shot and read noise, quantisation.

``acquire_frame`` is the whole simulated acquisition (optics → illumination → sensor); the
simulated microscope may instead cache :func:`~refocusd.models.synth.optics.render` results
and call :meth:`Camera.expose` per frame, which gives the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.fft as sfft

from refocusd.models.synth.optics import Optics, fft_workers, render
from refocusd.models.synth.specimen import Specimen

BitDepth = Literal[8, 12, 16]


@dataclass(frozen=True)
class Camera:
    """A linear sensor.

    The specimen background (intensity 1) collects ``background_fill`` of the full well at
    ``exposure_scale`` 1. ``full_well_e`` maps to the top of the ADC range; ``offset_adu``
    is the dark level (default: ≈ 1.5 % of the range for 12/16-bit, 0 for 8-bit exports).
    """

    bit_depth: BitDepth = 16
    full_well_e: float = 20_000.0
    read_noise_e: float = 2.0
    offset_adu: int | None = None
    background_fill: float = 0.4

    def __post_init__(self) -> None:
        if self.bit_depth not in (8, 12, 16):
            raise ValueError(f"bit_depth={self.bit_depth} (want 8, 12 or 16)")
        if self.full_well_e <= 0 or self.read_noise_e < 0:
            raise ValueError("full_well_e must be > 0 and read_noise_e ≥ 0")
        if not 0.0 < self.background_fill <= 1.0:
            raise ValueError(f"background_fill={self.background_fill} (want 0 < f ≤ 1)")
        if self.offset_adu is not None and not 0 <= self.offset_adu < self.max_adu // 2:
            raise ValueError(f"offset_adu={self.offset_adu} outside [0, {self.max_adu // 2})")

    @property
    def max_adu(self) -> int:
        return (1 << self.bit_depth) - 1

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint8 if self.bit_depth == 8 else np.uint16

    @property
    def offset(self) -> int:
        if self.offset_adu is not None:
            return self.offset_adu
        return 0 if self.bit_depth == 8 else int(round(0.0015 * self.max_adu))

    @property
    def gain_e_per_adu(self) -> float:
        return self.full_well_e / (self.max_adu - self.offset)

    def expose(self, intensity: np.ndarray, rng: np.random.Generator, *, exposure_scale: float = 1.0) -> np.ndarray:
        """Digitise a relative intensity image (background ≈ 1) with shot + read noise."""
        if exposure_scale <= 0:
            raise ValueError(f"exposure_scale={exposure_scale} must be positive")
        mean_e = np.clip(np.asarray(intensity, dtype=np.float64), 0.0, None)
        mean_e = mean_e * (self.background_fill * self.full_well_e * exposure_scale)
        # Beyond the full well the pixel saturates anyway; capping keeps Poisson finite.
        electrons = rng.poisson(np.minimum(mean_e, 4.0 * self.full_well_e)).astype(np.float64)
        electrons += rng.normal(0.0, self.read_noise_e, electrons.shape)
        adu = np.rint(electrons / self.gain_e_per_adu) + self.offset
        return np.clip(adu, 0, self.max_adu).astype(self.dtype)


def illumination_field(
    shape: tuple[int, int], rng: np.random.Generator, *, strength: float = 1.0
) -> np.ndarray:
    """Smooth random Köhler-illumination non-uniformity, mean 1 (float32).

    Off-centre vignetting, a linear tilt and a faint low-frequency mottle, each of a few
    per cent (scaled by ``strength``; 0 gives a flat field).
    """
    ny, nx = shape
    yy = np.linspace(-1.0, 1.0, ny, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, nx, dtype=np.float32)[None, :]
    cy, cx = rng.uniform(-0.4, 0.4, 2)
    vignette = 1.0 - rng.uniform(0.03, 0.15) * ((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0
    ang = rng.uniform(0, 2 * math.pi)
    tilt = rng.uniform(0.0, 0.06) * (yy * math.sin(ang) + xx * math.cos(ang))
    white = rng.standard_normal((ny, nx)).astype(np.float32)
    spec = sfft.rfft2(white, workers=fft_workers())
    fy = sfft.fftfreq(ny)[:, None] * ny
    fx = sfft.rfftfreq(nx)[None, :] * nx
    spec *= np.exp(-((fy**2 + fx**2) / 2.0 / 1.5**2)).astype(np.float32)  # a few cycles per field
    mottle = sfft.irfft2(spec, s=(ny, nx), workers=fft_workers())
    mottle *= rng.uniform(0.0, 0.03) / max(float(mottle.std()), 1e-12)
    field = np.maximum(1.0 + strength * (vignette - 1.0 + tilt + mottle), 0.05)
    return (field / field.mean()).astype(np.float32)


def dust_field(shape: tuple[int, int], rng: np.random.Generator, *, mean_count: float = 2.0) -> np.ndarray:
    """Out-of-focus dust on the camera window or a conjugate plane: soft dark discs with a
    lighter centre (the shadow of the illumination aperture), fixed across z (float32, ≤ 1)."""
    ny, nx = shape
    field = np.ones(shape, dtype=np.float32)
    for _ in range(int(rng.poisson(mean_count))):
        radius = float(rng.uniform(4.0, 40.0))
        depth = float(rng.uniform(0.03, 0.2))
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        y0, y1 = max(0, int(cy - radius - 3)), min(ny, int(cy + radius + 4))
        x0, x1 = max(0, int(cx - radius - 3)), min(nx, int(cx + radius + 4))
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        rho = np.sqrt(yy**2 + xx**2) / radius
        disc = np.clip((1.0 - rho) / 0.25, 0.0, 1.0)
        centre = np.clip((0.45 - rho) / 0.25, 0.0, 1.0)
        field[y0:y1, x0:x1] *= 1.0 - depth * (disc - 0.5 * centre)
    return field


def acquire_frame(
    specimen: Specimen,
    z_um: float,
    optics: Optics,
    camera: Camera,
    rng: np.random.Generator,
    frame_shape: tuple[int, int],
    *,
    illumination: np.ndarray | None = None,
    exposure_scale: float = 1.0,
) -> np.ndarray:
    """One camera frame of ``specimen`` at defocus ``z_um``.

    The optics are rendered band-limited straight onto ``frame_shape`` (the camera samples
    the specimen's field of view). ``illumination`` (mean ≈ 1, ``frame_shape``) is the
    microscope's fixed lamp profile; None draws a fresh random one from ``rng``.
    """
    intensity = render(specimen, z_um, optics, out_shape=frame_shape)
    if illumination is None:
        illumination = illumination_field(frame_shape, rng)
    elif illumination.shape != tuple(frame_shape):
        raise ValueError(f"illumination shape {illumination.shape} != frame_shape {tuple(frame_shape)}")
    return camera.expose(intensity * illumination, rng, exposure_scale=exposure_scale)


def specimen_grid(
    optics: Optics, frame_shape: tuple[int, int], *, max_side: int = 512
) -> tuple[tuple[int, int], float]:
    """Specimen grid (shape, pixel size µm) for frames covering ``optics.field_of_view_um``.

    The longer frame side spans the field of view; the grid is at most ``max_side`` on its
    longer side (the optics are band-limited, so the camera oversamples it).
    """
    fy, fx = frame_shape
    side = max(fy, fx)
    scale = min(1.0, max_side / side)
    shape = (max(16, int(round(fy * scale))), max(16, int(round(fx * scale))))
    return shape, optics.field_of_view_um / max(shape)
