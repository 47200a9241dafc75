"""Image formation of a thin specimen in a transmitted-light microscope.

Physics (scalar, thin object, Köhler illumination):

* The specimen is a complex transmission ``t(x)``. A tilted illumination plane wave of
  spatial frequency ``f_j`` leaves it as ``t(x) exp(i2π f_j·x)``, whose spectrum is the
  specimen spectrum shifted by ``f_j``: the specimen is Fourier-transformed once and each
  illumination direction only reads a shifted window of that spectrum.
* Defocus by ``z`` is angular-spectrum propagation, transfer function
  ``exp(i2πz·sqrt(1/λ² − |f|²))`` (evanescent waves cut); the objective pupil passes
  ``|f| ≤ NA/λ``; in phase contrast the pupil also holds the phase ring (the conjugate of
  the condenser annulus) that advances and attenuates the direct light.
* Partially coherent illumination: the condenser aperture (annulus for phase contrast, a
  disc for bright field and DIC, a decentred disc for oblique illumination) is sampled by
  discrete mutually incoherent directions and their
  intensities are summed. A single coherent plane wave would ring; real microscopes do not.
* Negative phase contrast retards the direct light (``phase_ring_shift_rad < 0``); apodised
  rings (Nikon ADL-like) add weakly absorbing bands beside the phase ring, which damps halos.
* DIC (ideal Nomarski model): two copies of the field sheared by ``dic_shear_um`` with a
  bias phase interfere; for every illumination direction that is the linear pupil filter
  ``sin(π f·s + β/2)``, so it goes in the pupil like the phase ring.
* Fluorescence is incoherent: the emitter density is blurred by the intensity PSF
  ``|h_z|²`` (its OTF is computed from the same defocused pupil at the emission wavelength).
  Without aberrations ``|h_z|² = |h_−z|²``: the blur is symmetric in z.

Each partial field is computed on the smallest grid that holds the intensity band
(``2·NA/λ``) without aliasing, so the cost depends on the optics and the field size, not on
how finely the specimen is sampled; the summed intensity is then Fourier-resampled to the
requested output shape (the camera usually oversamples the optical resolution).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.fft as sfft

if TYPE_CHECKING:
    from refocusd.models.synth.specimen import Specimen

Modality = Literal["phase_contrast", "brightfield", "oblique", "dic", "fluorescence"]
MODALITIES: tuple[Modality, ...] = ("phase_contrast", "brightfield", "oblique", "dic", "fluorescence")

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
_BATCH_ELEMENTS = 8_000_000  # complex64 elements per FFT batch (64 MB): bounds memory


_FFT_THREADS: int | None = None


def set_fft_workers(threads: int | None) -> None:
    """Fix the scipy.fft thread count (None: automatic); parallel generators use 1 per process."""
    global _FFT_THREADS
    _FFT_THREADS = threads


def fft_workers() -> int:
    """Threads for scipy.fft: all cores, at most 4 (more gains little at these sizes)."""
    if _FFT_THREADS is not None:
        return _FFT_THREADS
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Optics:
    """An objective + condenser configuration.

    ``condenser_annulus_na`` is the (inner, outer) numerical aperture of the phase-contrast
    condenser annulus; the phase ring in the objective pupil covers its conjugate
    (slightly wider, as real rings are). ``phase_ring_shift_rad`` *advances* the direct
    light (positive, "dark" phase contrast: phase-delaying cells look dark with bright
    halos); ``phase_ring_transmission`` is the ring's intensity transmittance.
    ``brightfield_condenser_na`` is the radius of the filled condenser disc in bright field.
    """

    wavelength_um: float = 0.55
    na: float = 0.30
    magnification: float = 10.0
    field_of_view_um: float = 600.0
    modality: Modality = "phase_contrast"
    condenser_annulus_na: tuple[float, float] = (0.14, 0.18)
    phase_ring_shift_rad: float = math.pi / 2
    phase_ring_transmission: float = 0.25
    phase_ring_margin_na: float = 0.01
    brightfield_condenser_na: float = 0.18
    n_illumination_directions: int = 48
    phase_ring_apodization_transmission: float = 1.0  # intensity T of the side bands (1: none)
    phase_ring_apodization_width_na: float = 0.0
    oblique_offset_na: float = 0.0  # oblique: centre of the condenser disc, off axis
    oblique_angle_rad: float = 0.0
    dic_shear_um: float = 0.0
    dic_bias_rad: float = 0.0
    dic_angle_rad: float = 0.0
    emission_wavelength_um: float | None = None  # fluorescence (default: wavelength_um)

    def __post_init__(self) -> None:
        inner, outer = self.condenser_annulus_na
        problems = []
        if not 0.0 < self.wavelength_um < 5.0:
            problems.append(f"wavelength_um={self.wavelength_um} (want 0 < λ < 5 µm)")
        if not 0.0 < self.na < 1.0:
            problems.append(f"na={self.na} (dry objective: 0 < NA < 1)")
        if self.magnification <= 0 or self.field_of_view_um <= 0:
            problems.append("magnification and field_of_view_um must be positive")
        if self.modality not in MODALITIES:
            problems.append(f"modality={self.modality!r} (want one of {'|'.join(MODALITIES)})")
        if self.modality == "phase_contrast" and not 0.0 <= inner <= outer < self.na:
            problems.append(f"condenser_annulus_na={self.condenser_annulus_na} (want 0 ≤ inner ≤ outer < NA)")
        if self.modality in ("brightfield", "dic") and not 0.0 <= self.brightfield_condenser_na <= self.na:
            problems.append(f"brightfield_condenser_na={self.brightfield_condenser_na} (want 0 ≤ NAc ≤ NA)")
        if self.modality == "oblique" and not (
            self.oblique_offset_na >= 0.0 and self.oblique_offset_na - self.brightfield_condenser_na < self.na
        ):
            problems.append("oblique illumination must reach the pupil (offset − NAc < NA)")
        if not 0.0 < self.phase_ring_transmission <= 1.0:
            problems.append(f"phase_ring_transmission={self.phase_ring_transmission} (want 0 < T ≤ 1)")
        if not 0.0 < self.phase_ring_apodization_transmission <= 1.0 or self.phase_ring_apodization_width_na < 0:
            problems.append("phase ring apodisation: want 0 < T ≤ 1 and width ≥ 0")
        if self.dic_shear_um < 0:
            problems.append(f"dic_shear_um={self.dic_shear_um} (want ≥ 0)")
        if self.emission_wavelength_um is not None and not 0.0 < self.emission_wavelength_um < 5.0:
            problems.append(f"emission_wavelength_um={self.emission_wavelength_um} (want 0 < λ < 5 µm)")
        if self.n_illumination_directions < 1:
            problems.append(f"n_illumination_directions={self.n_illumination_directions} (want ≥ 1)")
        if problems:
            raise ValueError("invalid Optics: " + "; ".join(problems))

    @property
    def depth_of_field_um(self) -> float:
        """Wave-optical depth of field λ/NA² (the classical first term)."""
        return self.wavelength_um / self.na**2

    def depth_of_field_total_um(self, pixel_size_um: float, refractive_index: float = 1.0) -> float:
        """Total depth of field (Inoué/Spring): ``λn/NA² + n·e/NA`` with ``e`` the pixel
        size at the specimen (the detector term); a frame is "focused" within ± half of it."""
        lam = self.wavelength_um
        if self.modality == "fluorescence" and self.emission_wavelength_um is not None:
            lam = self.emission_wavelength_um
        return refractive_index * (lam / self.na**2 + pixel_size_um / self.na)

    @property
    def resolution_um(self) -> float:
        """Rayleigh-like resolution λ/(2·NA) of the incoherent limit."""
        return self.wavelength_um / (2.0 * self.na)


OBJECTIVES: dict[str, Optics] = {
    # The paper's objectives (Nikon Ti2, phase contrast, both Ph1: same condenser annulus).
    "10x": Optics(na=0.30, magnification=10.0, field_of_view_um=600.0, brightfield_condenser_na=0.18),
    "20x": Optics(na=0.45, magnification=20.0, field_of_view_um=300.0, brightfield_condenser_na=0.27),
}


def illumination_directions(optics: Optics) -> np.ndarray:
    """Condenser sample points in NA units, shape (K, 2) as (NA_y, NA_x).

    Area-uniform golden-angle (sunflower) sampling of the annulus (phase contrast) or the
    disc (bright field): every point stands for the same share of condenser area.
    """
    k = optics.n_illumination_directions
    if optics.modality == "phase_contrast":
        inner, outer = optics.condenser_annulus_na
    else:
        inner, outer = 0.0, optics.brightfield_condenser_na
    i = np.arange(k, dtype=np.float64)
    r = np.sqrt(inner**2 + (i + 0.5) / k * (outer**2 - inner**2))
    theta = i * _GOLDEN_ANGLE
    dirs = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    if optics.modality == "oblique":
        a = optics.oblique_angle_rad
        dirs += optics.oblique_offset_na * np.array([math.sin(a), math.cos(a)])
    return dirs


def condenser_area_na(optics: Optics) -> float:
    """Area of the condenser aperture in NA² units."""
    if optics.modality == "phase_contrast":
        inner, outer = optics.condenser_annulus_na
        return math.pi * (outer**2 - inner**2)
    return math.pi * optics.brightfield_condenser_na**2


def pupil_function(optics: Optics, ky: np.ndarray, kx: np.ndarray, z_um: float, *, wavelength_um: float | None = None,
                   min_margin: float = 0.0) -> np.ndarray:
    """Objective pupil at frequencies (ky, kx) (1/µm), defocused by ``z_um`` (complex64).

    Holds the phase ring (phase contrast, with its apodising side bands) or the DIC shear
    filter; ``min_margin`` (1/µm) widens the ring to at least the frequency spacing.
    """
    lam = wavelength_um or optics.wavelength_um
    fr = np.sqrt(ky**2 + kx**2)
    pupil = propagation_kernel(ky, kx, z_um, lam) * (fr <= optics.na / lam)
    if optics.modality == "phase_contrast":
        inner, outer = optics.condenser_annulus_na
        margin = max(optics.phase_ring_margin_na / lam, min_margin)
        lo, hi = inner / lam - margin, outer / lam + margin
        ring = (fr >= lo) & (fr <= hi)
        ring_factor = np.complex64(
            math.sqrt(optics.phase_ring_transmission) * np.exp(-1j * optics.phase_ring_shift_rad)
        )
        pupil = np.where(ring, pupil * ring_factor, pupil)
        width = optics.phase_ring_apodization_width_na / lam
        if width > 0 and optics.phase_ring_apodization_transmission < 1.0:
            bands = ((fr >= lo - width) & (fr < lo)) | ((fr > hi) & (fr <= hi + width))
            pupil = np.where(bands, pupil * np.float32(math.sqrt(optics.phase_ring_apodization_transmission)), pupil)
    elif optics.modality == "dic":
        a = optics.dic_angle_rad
        along = ky * math.sin(a) + kx * math.cos(a)
        pupil = pupil * np.sin(math.pi * along * optics.dic_shear_um + optics.dic_bias_rad / 2.0)
    return pupil.astype(np.complex64)


def propagation_kernel(
    fy: np.ndarray, fx: np.ndarray, z_um: float, wavelength_um: float
) -> np.ndarray:
    """Angular-spectrum transfer function, global phase exp(i2πz/λ) removed, evanescent cut.

    Dropping the common phase keeps complex64 accurate at tens of µm (2πz/λ ≈ 700 rad)
    and changes no intensity.
    """
    inv_l2 = 1.0 / wavelength_um**2
    f2 = fy.astype(np.float64) ** 2 + fx.astype(np.float64) ** 2
    propagating = f2 < inv_l2
    kz = np.sqrt(np.where(propagating, inv_l2 - f2, 0.0))
    # 1/λ − kz is computed in a cancellation-free form: (1/λ² − kz²)/(1/λ + kz) = f²/(1/λ + kz)
    phase = -2.0 * math.pi * z_um * f2 / (1.0 / wavelength_um + kz)
    return np.where(propagating, np.exp(1j * phase), 0.0).astype(np.complex64)


def propagate(field: np.ndarray, z_um: float, *, wavelength_um: float, pixel_size_um: float) -> np.ndarray:
    """Coherent angular-spectrum propagation of a sampled complex field by ``z_um``."""
    ny, nx = field.shape
    spec = sfft.fft2(np.asarray(field, dtype=np.complex64), workers=fft_workers())
    fy = sfft.fftfreq(ny, d=pixel_size_um)[:, None]
    fx = sfft.fftfreq(nx, d=pixel_size_um)[None, :]
    spec *= propagation_kernel(fy, fx, z_um, wavelength_um)
    return sfft.ifft2(spec, workers=fft_workers(), overwrite_x=True)


def centered_spectrum(transmission: np.ndarray) -> np.ndarray:
    """Spectrum with DC at index (N//2, M//2), normalised so a clear field has DC = 1."""
    spec = sfft.fft2(transmission.astype(np.complex64, copy=False), norm="forward", workers=fft_workers())
    return sfft.fftshift(spec)


def render(
    specimen: Specimen,
    z_um: float,
    optics: Optics,
    *,
    out_shape: tuple[int, int] | None = None,
    pixel_integration: bool = False,
) -> np.ndarray:
    """Noise-free image intensity of ``specimen`` defocused by ``z_um`` (background ≈ 1).

    ``z_um > 0`` images the plane ``z`` µm past the specimen along the light path; the
    specimen's spectrum is cached on it, so repeated renders (other z, other optics) only
    pay for the illumination sum.

    ``out_shape`` (default: the specimen grid) is the sampling of the returned image over the
    same field: the band-limited intensity is Fourier-resampled, so asking for a finer grid
    than the specimen's is exact interpolation, not a blur. ``pixel_integration`` applies
    the camera pixels' box aperture (the detector MTF, sinc) of that output sampling.
    """
    ny, nx = specimen.shape
    oy, ox = out_shape if out_shape is not None else (ny, nx)
    if oy < 2 or ox < 2:
        raise ValueError(f"out_shape={out_shape} too small")
    if optics.modality == "fluorescence":
        return render_fluorescence(specimen, z_um, optics, out_shape=(oy, ox), pixel_integration=pixel_integration)
    dx = specimen.pixel_size_um
    ly, lx = ny * dx, nx * dx
    lam = optics.wavelength_um

    # Pupil window in frequency-pixel units (index k ↔ frequency k/L).
    ry, rx = int(optics.na / lam * ly), int(optics.na / lam * lx)
    ky = np.arange(-ry, ry + 1)[:, None] / ly
    kx = np.arange(-rx, rx + 1)[None, :] / lx
    pupil = pupil_function(optics, ky, kx, z_um, min_margin=1.0 / min(ly, lx))

    # Illumination directions → integer frequency shifts (periodic field), duplicates merged.
    na_dirs = illumination_directions(optics)
    shifts = np.stack(
        [np.rint(na_dirs[:, 0] / lam * ly), np.rint(na_dirs[:, 1] / lam * lx)], axis=1
    ).astype(np.int64)
    shifts, weights = np.unique(shifts, axis=0, return_counts=True)
    weights = weights.astype(np.float64) / weights.sum()

    # Background of a clear specimen: each direction's DC passes the pupil at +shift.
    # (A direction outside the pupil, as in oblique light, adds dark-field light only.)
    inside = (np.abs(shifts[:, 0]) <= ry) & (np.abs(shifts[:, 1]) <= rx)
    iy, ix = np.clip(shifts[:, 0] + ry, 0, 2 * ry), np.clip(shifts[:, 1] + rx, 0, 2 * rx)
    direct = np.where(inside, np.abs(pupil[iy, ix]) ** 2, 0.0)
    background = float(np.sum(weights * direct))
    if background <= 0.0:
        raise ValueError("no illumination direction reaches the pupil")

    # Partial-field grid: holds the field (±r) and the intensity band the output keeps.
    my = sfft.next_fast_len(2 * ry + min(2 * ry, oy // 2) + 1)
    mx = sfft.next_fast_len(2 * rx + min(2 * rx, ox // 2) + 1)

    # Zero-padded centred spectrum: windows that leave the specimen's band read zeros.
    spec = specimen.spectrum
    py = ry + int(np.abs(shifts[:, 0]).max()) + 1
    px = rx + int(np.abs(shifts[:, 1]).max()) + 1
    spad = np.zeros((ny + 2 * py, nx + 2 * px), dtype=np.complex64)
    spad[py : py + ny, px : px + nx] = spec
    cy, cx = py + ny // 2, px + nx // 2

    batch = max(1, min(len(shifts), _BATCH_ELEMENTS // (my * mx)))
    wins = np.empty((batch, 2 * ry + 1, 2 * rx + 1), dtype=np.complex64)
    acc = np.zeros((my, mx), dtype=np.float32)
    workers = fft_workers()
    for start in range(0, len(shifts), batch):
        chunk = shifts[start : start + batch]
        b = len(chunk)
        for i, (sy, sx) in enumerate(chunk):
            # Field spectrum at pupil frequency f: S(f − f_j)·P(f) (DC lands at +f_j).
            win = spad[cy - sy - ry : cy - sy + ry + 1, cx - sx - rx : cx - sx + rx + 1]
            np.multiply(win, pupil, out=wins[i])
        # Zero-padded inverse FFT, one axis at a time so the first pass only touches the
        # window's rows. The window sits at the array origin rather than centred on DC:
        # that is a phase ramp, invisible in |U|².
        field = sfft.ifft(wins[:b], n=mx, axis=2, norm="forward", workers=workers)
        field = sfft.ifft(field, n=my, axis=1, norm="forward", workers=workers, overwrite_x=True)
        inten = np.square(field.real) + np.square(field.imag)
        acc += np.tensordot(weights[start : start + b].astype(np.float32), inten, axes=1)
    acc /= np.float32(background)
    # Each sample point stands for a cell of the condenser aperture; out of focus, the
    # directions within a cell give copies of its image shifted by z·ΔNA. Spreading the
    # sum by that cell (a Gaussian) stands in for the continuous source, without which
    # far-defocus images show the discrete sampling as fringes and ghost copies.
    # (A single direction is a deliberately coherent source: left as it is.)
    sigma_um = 0.0
    if len(shifts) > 1:
        area_na = condenser_area_na(optics)
        cell_na = max(math.sqrt(area_na / optics.n_illumination_directions), lam / min(ly, lx))
        sigma_um = 0.29 * abs(z_um) * cell_na  # std of a uniform cell of side cell_na
    return fourier_resample(acc, (oy, ox), sigma_px=(sigma_um * my / ly, sigma_um * mx / lx),
                            pixel_integration=pixel_integration)


def render_fluorescence(
    specimen: Specimen, z_um: float, optics: Optics, *, out_shape: tuple[int, int] | None = None,
    pixel_integration: bool = False,
) -> np.ndarray:
    """Incoherent image of the specimen's emitter density (``specimen.emission``) at defocus
    ``z_um``: emission ⊛ |h_z|², computed as spectrum × OTF (mean preserved, float32)."""
    if specimen.emission is None:
        raise ValueError("fluorescence needs a specimen with an emission map")
    ny, nx = specimen.shape
    out_shape = out_shape or (ny, nx)
    dx = specimen.pixel_size_um
    ly, lx = ny * dx, nx * dx
    lam = optics.emission_wavelength_um or optics.wavelength_um
    ry, rx = int(optics.na / lam * ly), int(optics.na / lam * lx)
    # Coherent PSF on a grid that holds the OTF (|k| ≤ 2r) without wrap-around.
    my, mx = sfft.next_fast_len(4 * ry + 2), sfft.next_fast_len(4 * rx + 2)
    ky = sfft.fftfreq(my, d=1.0 / my)[:, None] / ly
    kx = sfft.fftfreq(mx, d=1.0 / mx)[None, :] / lx
    pupil = pupil_function(dataclasses.replace(optics, modality="brightfield", brightfield_condenser_na=0.0),
                           ky, kx, z_um, wavelength_um=lam)
    psf = np.abs(sfft.ifft2(pupil, workers=fft_workers())) ** 2
    otf = sfft.fft2(psf.astype(np.float32), workers=fft_workers())
    otf /= otf[0, 0]
    otf = sfft.fftshift(otf)
    cy, cx = my // 2, mx // 2
    # The emitter spectrum on the same window (zero beyond the specimen's own band).
    spec = specimen.emission_spectrum
    win = np.zeros((my, mx), dtype=np.complex64)
    hy, hx = min(2 * ry, ny // 2 - 1), min(2 * rx, nx // 2 - 1)
    sy, sx = ny // 2, nx // 2
    win[cy - hy : cy + hy + 1, cx - hx : cx + hx + 1] = spec[sy - hy : sy + hy + 1, sx - hx : sx + hx + 1]
    win *= otf.astype(np.complex64)
    image = sfft.ifft2(sfft.ifftshift(win), norm="forward", workers=fft_workers()).real
    return fourier_resample(image, out_shape, pixel_integration=pixel_integration)


def fourier_resample(
    image: np.ndarray, out_shape: tuple[int, int], *, sigma_px: tuple[float, float] = (0.0, 0.0),
    pixel_integration: bool = False,
) -> np.ndarray:
    """Band-limited resampling of a periodic real image over the same field (float32).

    ``sigma_px`` (input pixels, per axis) applies a Gaussian blur on the way, at no extra cost;
    ``pixel_integration`` the box aperture of an output pixel (sinc MTF).
    """
    image = np.asarray(image, dtype=np.float32)
    my, mx = image.shape
    oy, ox = out_shape
    blur = sigma_px[0] > 0.0 or sigma_px[1] > 0.0
    if (my, mx) == (oy, ox) and not blur and not pixel_integration:
        return image
    spec = sfft.rfft2(image, norm="forward", workers=fft_workers())
    if blur:
        fy = sfft.fftfreq(my)[:, None] * sigma_px[0]
        fx = sfft.rfftfreq(mx)[None, :] * sigma_px[1]
        spec *= np.exp(-2.0 * math.pi**2 * (fy**2 + fx**2)).astype(np.float32)
    if pixel_integration:  # frequency in cycles per output pixel
        spec *= (np.sinc(sfft.fftfreq(my)[:, None] * (my / oy))
                 * np.sinc(sfft.rfftfreq(mx)[None, :] * (mx / ox))).astype(np.float32)
    out = np.zeros((oy, ox // 2 + 1), dtype=np.complex64)
    ky = min(my, oy)
    kx = min(mx // 2, ox // 2) + 1
    top = (ky + 1) // 2
    bottom = ky - top
    out[:top, :kx] = spec[:top, :kx]
    if bottom:
        out[oy - bottom :, :kx] = spec[my - bottom :, :kx]
    return sfft.irfft2(out, s=(oy, ox), norm="forward", workers=fft_workers()).astype(np.float32)
