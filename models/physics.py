"""A physics-aware deconvolution baseline: Wiener inversion of the weak-object transfer
functions of the simulator's own optics, at the true defocus.

For a weak object ``t = 1 + a + iφ`` (absorption ``a``, phase ``φ``, both small) under
partially coherent Köhler illumination (incoherent source points ``s_j`` of weight
``w_j``) and a pupil ``P`` (aperture, defocus, phase ring), the image is linear in
``a`` and ``φ`` (e.g. Streibl 1985; Claus et al., Opt. Express 2015)::

    I(f) = δ(f) + H_a(f) A(f) + H_φ(f) Φ(f)
    H_a(f) =  Σ w_j [P*(s_j) P(s_j + f) + P(s_j) P*(s_j − f)] / B
    H_φ(f) = iΣ w_j [P*(s_j) P(s_j + f) − P(s_j) P*(s_j − f)] / B,   B = Σ w_j |P(s_j)|²

One defocused frame cannot separate ``a`` from ``φ``, but the in-focus *image* is what we
want: with a Gaussian prior on the object (absorption variance ``κ`` times the phase
variance) and white noise ``ε``, the minimum-mean-square estimate of the in-focus image
from the defocused one is the Wiener filter::

    G(f) = (κ H_a0 H_az* + H_φ0 H_φz*) / (κ |H_az|² + |H_φz|² + ε)

(``z``: the frame's defocus, ``0``: focus). The frame is divided by its smooth background
(lamp and exposure), filtered, and multiplied back. This knows exactly what the network
must learn (the optics and the true ``z``) and is therefore the upper reference for
classical methods; it fails where the object is not weak (thick nuclei, bubbles), which is
where a learnt prior should win. Pure numpy/scipy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from refocusd.models.synth.optics import (
    Optics,
    condenser_area_na,
    illumination_directions,
    pupil_function,
)

#: Wiener noise levels searched per pair (relative to the peak |H|², oracle choice on the
#: pair's own target, as the Richardson–Lucy baseline's PSF search).
EPSILON_GRID: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
ABSORPTION_RATIO = 0.05  # κ: absorption variance / phase variance of the simulated cells
_BACKGROUND_SIGMA_FRACTION = 1 / 12  # smooth background: a Gaussian of this share of the side


@dataclass(frozen=True, slots=True)
class TransferFunctions:
    """Weak-object transfer functions on an ``fft2`` frequency grid."""

    absorption: np.ndarray
    phase: np.ndarray


def weak_object_transfer(
    optics: Optics, shape: tuple[int, int], pixel_size_um: float, z_um: float
) -> TransferFunctions:
    """``H_a`` and ``H_φ`` of ``optics`` at defocus ``z_um`` for a ``shape`` frame.

    The pupil (aperture, defocus, phase ring with its side bands, DIC shear filter) and the
    condenser sampling are the simulator's own (``pupil_function``,
    ``illumination_directions``). In fluorescence the image is linear in the emitter
    density with the incoherent OTF, returned as ``absorption`` (``phase`` is zero).
    """
    ny, nx = shape
    ly, lx = ny * pixel_size_um, nx * pixel_size_um
    fy = sfft.fftfreq(ny, d=pixel_size_um)[:, None]
    fx = sfft.fftfreq(nx, d=pixel_size_um)[None, :]
    if optics.modality == "fluorescence":
        return TransferFunctions(_incoherent_otf(optics, fy, fx, z_um), np.zeros((ny, nx), np.complex128))
    lam = optics.wavelength_um
    margin = 1.0 / min(ly, lx)

    def pupil(ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
        return pupil_function(optics, ky, kx, z_um, min_margin=margin).astype(np.complex128)

    # Source points on the frame's own frequency grid, as the simulator samples them.
    na = illumination_directions(optics)
    shifts = np.stack([np.rint(na[:, 0] / lam * ly), np.rint(na[:, 1] / lam * lx)], axis=1)
    shifts, counts = np.unique(shifts, axis=0, return_counts=True)
    weights = counts / counts.sum()
    h_a = np.zeros((ny, nx), np.complex128)
    h_p = np.zeros((ny, nx), np.complex128)
    background = 0.0
    for (sy, sx), w in zip(shifts, weights, strict=True):
        y, x = sy / ly, sx / lx
        p0 = complex(pupil(np.array([[y]]), np.array([[x]]))[0, 0])
        if p0 == 0:
            continue  # outside the pupil (oblique light): dark-field only, no linear term
        plus = pupil(fy + y, fx + x)
        minus = np.conj(pupil(y - fy, x - fx))
        h_a += w * (np.conj(p0) * plus + p0 * minus)
        h_p += w * 1j * (np.conj(p0) * plus - p0 * minus)
        background += w * abs(p0) ** 2
    if background <= 0:
        raise ValueError("no illumination direction reaches the pupil")
    h_a /= background
    h_p /= background
    # The simulator spreads each source point over its share of the condenser (a Gaussian
    # whose width grows with |z|); the same blur multiplies both transfer functions.
    if len(shifts) > 1:
        cell = max(math.sqrt(condenser_area_na(optics) / optics.n_illumination_directions), lam / min(ly, lx))
        sigma = 0.29 * abs(z_um) * cell
        blur = np.exp(-2.0 * math.pi**2 * sigma**2 * (fy**2 + fx**2))
        h_a *= blur
        h_p *= blur
    return TransferFunctions(h_a, h_p)


def _incoherent_otf(optics: Optics, fy: np.ndarray, fx: np.ndarray, z_um: float) -> np.ndarray:
    """OTF of the defocused intensity PSF |h_z|^2 on the frame's grid (OTF(0) = 1)."""
    lam = optics.emission_wavelength_um or optics.wavelength_um
    coherent = dataclasses.replace(optics, modality="brightfield", brightfield_condenser_na=0.0)
    pupil = pupil_function(coherent, fy, fx, z_um, wavelength_um=lam)
    psf = np.abs(sfft.ifft2(pupil)) ** 2
    otf = sfft.fft2(psf)
    return otf / otf[0, 0]


class Refocuser:
    """The Wiener refocusing of frames of one shape, optics and defocus (the transfer
    functions are computed once; the noise level can then be varied cheaply)."""

    def __init__(self, optics: Optics, shape: tuple[int, int], pixel_size_um: float, z_um: float,
                 absorption_ratio: float = ABSORPTION_RATIO) -> None:
        ny, nx = int(shape[0]), int(shape[1])
        self.shape = (ny, nx)
        self._pad = (ny // 4, nx // 4)
        padded = (ny + 2 * self._pad[0], nx + 2 * self._pad[1])
        at_z = weak_object_transfer(optics, padded, pixel_size_um, z_um)
        at_0 = weak_object_transfer(optics, padded, pixel_size_um, 0.0)
        k = absorption_ratio
        self._power = k * np.abs(at_z.absorption) ** 2 + np.abs(at_z.phase) ** 2
        self._numerator = k * at_0.absorption * np.conj(at_z.absorption) + at_0.phase * np.conj(at_z.phase)
        self._peak = float(self._power.max())

    def filter(self, epsilon: float) -> np.ndarray:
        """``G`` on the padded grid for a noise level ``epsilon`` (relative to peak |H|²)."""
        return self._numerator / (self._power + epsilon * self._peak)

    def __call__(self, image: np.ndarray, epsilon: float = 1e-2) -> np.ndarray:
        """The in-focus estimate of ``image``, in its own dtype."""
        frame = np.asarray(image)
        if frame.shape[:2] != self.shape:
            raise ValueError(f"built for {self.shape} frames, got {frame.shape[:2]}")
        g = self.filter(epsilon)
        channels = [frame] if frame.ndim == 2 else [frame[..., c] for c in range(frame.shape[-1])]
        out = [self._plane(ch.astype(np.float64), g) for ch in channels]
        result = out[0] if frame.ndim == 2 else np.stack(out, axis=-1)
        if np.issubdtype(frame.dtype, np.integer):
            info = np.iinfo(frame.dtype)
            return np.clip(np.rint(result), info.min, info.max).astype(frame.dtype)
        return result.astype(frame.dtype)

    def _plane(self, plane: np.ndarray, g: np.ndarray) -> np.ndarray:
        (ny, nx), (py, px) = self.shape, self._pad
        # Mirror the frame so the FFT's periodic wrap sees no edge.
        padded = np.pad(plane, ((py, py), (px, px)), mode="symmetric")
        sigma = max(padded.shape) * _BACKGROUND_SIGMA_FRACTION
        background = np.maximum(ndimage.gaussian_filter(padded, sigma, mode="reflect"), 1e-6)
        contrast = padded / background - 1.0  # the weak-object image minus its DC
        restored = np.real(sfft.ifft2(sfft.fft2(contrast, workers=-1) * g, workers=-1))
        return ((1.0 + restored) * background)[py : py + ny, px : px + nx]


def physics_deconvolve(
    image: np.ndarray, optics: Optics, pixel_size_um: float, z_um: float, *,
    epsilon: float = 1e-2, absorption_ratio: float = ABSORPTION_RATIO,
) -> np.ndarray:
    """The in-focus estimate of ``image`` (taken ``z_um`` from focus), in its own dtype."""
    refocus = Refocuser(optics, np.shape(image)[:2], pixel_size_um, z_um, absorption_ratio)
    return refocus(image, epsilon)


def best_physics_deconvolution(
    defocused: np.ndarray, target: np.ndarray, optics: Optics, pixel_size_um: float, z_um: float,
    grid: tuple[float, ...] = EPSILON_GRID,
) -> tuple[np.ndarray, float]:
    """The Wiener restoration with the best SSIM to ``target`` over the noise levels."""
    from refocusd.models.evaluation import ssim

    refocus = Refocuser(optics, np.shape(defocused)[:2], pixel_size_um, z_um)
    best: tuple[float, np.ndarray, float] | None = None
    for epsilon in grid:
        restored = refocus(defocused, epsilon)
        score = ssim(target, restored)
        if best is None or score > best[0]:
            best = (score, restored, epsilon)
    assert best is not None
    return best[1], best[2]
