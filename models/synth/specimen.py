"""Random cell cultures as thin phase-and-amplitude objects.

The specimen is built as an optical-path-difference map (OPD, µm: Σ Δn·thickness) plus an
absorption map, then turned into a complex transmission at one wavelength. Cells are
fibroblast-, smooth-muscle- or endothelial-like: irregular, often elongated bodies with a
thin lamella, a thicker nucleus, nucleoli and perinuclear granules; some rounded (mitotic)
cells; overlaps add. Substrates add texture: faint moulding texture and scratches on TCPS,
micro air bubbles (strong negative phase objects with a dark refracting rim) in hydrogel
and PDMS. The field is periodic (cells crossing an edge continue on the opposite edge), which
matches the FFT-based optics and leaves no border artefacts after defocus.

Work is vectorised per cell on its bounding box; the number of cells is tens to hundreds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import scipy.fft as sfft

from refocusd.models.synth.optics import centered_spectrum, fft_workers

Substrate = Literal["tcps", "hydrogel", "pdms"]
CellType = Literal["fibroblast", "smooth_muscle", "endothelial"]
Layout = Literal["spread", "round", "clusters", "monolayer", "sparse", "empty", "debris"]
SUBSTRATES: tuple[Substrate, ...] = ("tcps", "hydrogel", "pdms")
LAYOUTS: tuple[Layout, ...] = ("spread", "round", "clusters", "monolayer", "sparse", "empty", "debris")
CELL_TYPES: tuple[CellType, ...] = ("fibroblast", "smooth_muscle", "endothelial")

# Refractive-index contrasts against the medium (cell culture medium n ≈ 1.335).
_DN_CYTO = 0.030
_DN_NUCLEUS = 0.036
_DN_NUCLEOLUS = 0.06
_NUCLEOLUS_SIGMA_UM = 0.8
_GRANULE_SIGMA_UM = 0.45


@dataclass(frozen=True, eq=False)
class Specimen:
    """A thin object: complex64 transmission sampled at ``pixel_size_um`` (periodic field).

    The transmission is for ``wavelength_um``; rendering at another wavelength reuses it
    (the small dispersion of a phase object is not modelled).
    """

    transmission: np.ndarray
    pixel_size_um: float
    wavelength_um: float = 0.55
    substrate: str = "tcps"
    cell_type: str = "fibroblast"
    density: float = 0.0
    n_cells: int = 0
    emission: np.ndarray | None = None  # fluorophore density (≥ 0, float32), same grid
    layout: str = "spread"

    def __post_init__(self) -> None:
        t = np.asarray(self.transmission)
        if t.ndim != 2 or min(t.shape) < 2:
            raise ValueError(f"transmission must be a 2-D field, got shape {t.shape}")
        if self.pixel_size_um <= 0:
            raise ValueError(f"pixel_size_um={self.pixel_size_um} must be positive")
        t = t.astype(np.complex64, copy=True)
        t.flags.writeable = False  # frozen in fact, so the cached spectrum stays valid
        object.__setattr__(self, "transmission", t)
        if self.emission is not None:
            e = np.asarray(self.emission, dtype=np.float32).copy()
            if e.shape != t.shape or float(e.min(initial=0.0)) < 0.0:
                raise ValueError("emission must be a non-negative map of the transmission's shape")
            e.flags.writeable = False
            object.__setattr__(self, "emission", e)

    @property
    def shape(self) -> tuple[int, int]:
        return self.transmission.shape  # type: ignore[return-value]

    @property
    def extent_um(self) -> tuple[float, float]:
        return self.shape[0] * self.pixel_size_um, self.shape[1] * self.pixel_size_um

    @cached_property
    def spectrum(self) -> np.ndarray:
        """Centred, forward-normalised spectrum; computed once, reused by every render."""
        spec = centered_spectrum(self.transmission)
        spec.flags.writeable = False
        return spec

    @cached_property
    def emission_spectrum(self) -> np.ndarray:
        """Centred, forward-normalised spectrum of the emission map (fluorescence)."""
        if self.emission is None:
            raise ValueError("this specimen has no emission map")
        spec = centered_spectrum(self.emission.astype(np.complex64))
        spec.flags.writeable = False
        return spec


@dataclass
class _Maps:
    """What a specimen is built into: OPD (µm), optical density, fluorophore maps, spots."""

    opd: np.ndarray
    od: np.ndarray
    fl_cyto: np.ndarray  # cytoplasm thickness (µm): a cytoplasmic stain
    fl_nuc: np.ndarray  # nuclear mask (0–1): a nuclear stain
    fl_debris: np.ndarray  # autofluorescent debris
    spots: list[np.ndarray]

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> _Maps:
        return cls(*(np.zeros(shape, dtype=np.float32) for _ in range(5)), spots=[])


@dataclass(frozen=True)
class _Grid:
    shape: tuple[int, int]
    dx: float

    def patch(self, cy: float, cx: float, half_y_um: float, half_x_um: float | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Wrapped row/col indices of a patch and its local coordinates (µm, float32)."""
        ny, nx = self.shape
        half_x_um = half_y_um if half_x_um is None else half_x_um
        hy = min(int(math.ceil(half_y_um / self.dx)) + 1, (ny - 1) // 2)
        hx = min(int(math.ceil(half_x_um / self.dx)) + 1, (nx - 1) // 2)
        iy0, ix0 = int(round(cy / self.dx)), int(round(cx / self.dx))
        oy, ox = np.arange(-hy, hy + 1), np.arange(-hx, hx + 1)
        rows, cols = (iy0 + oy) % ny, (ix0 + ox) % nx
        yy = ((iy0 + oy) * self.dx - cy)[:, None].astype(np.float32)
        xx = ((ix0 + ox) * self.dx - cx)[None, :].astype(np.float32)
        return rows, cols, yy, xx


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma_px: float) -> np.ndarray:
    """Periodic Gaussian-filtered white noise with unit standard deviation."""
    out = _gaussian_blur_periodic(rng.standard_normal(shape).astype(np.float32), sigma_px)
    sd = float(out.std())
    return out / sd if sd > 0 else out


def _gaussian_blur_periodic(image: np.ndarray, sigma_px: float) -> np.ndarray:
    spec = sfft.rfft2(image, workers=fft_workers())
    fy = sfft.fftfreq(image.shape[0])[:, None]
    fx = sfft.rfftfreq(image.shape[1])[None, :]
    spec *= np.exp(-2.0 * (math.pi * sigma_px) ** 2 * (fy**2 + fx**2)).astype(np.float32)
    return sfft.irfft2(spec, s=image.shape, workers=fft_workers()).astype(np.float32)


def _splat_spots(grid: _Grid, opd: np.ndarray, od: np.ndarray, spots: np.ndarray) -> None:
    """Add Gaussian spots (rows y, x, peak OPD, peak OD, σ µm): bilinear splat + one blur per σ."""
    ny, nx = grid.shape
    for sigma in np.unique(spots[:, 4]):
        sel = spots[spots[:, 4] == sigma]
        sigma_px = float(sigma) / grid.dx
        gain = 2.0 * math.pi * sigma_px**2  # peak amp when resolved; integral kept when not
        fy, fx = sel[:, 0] / grid.dx, sel[:, 1] / grid.dx
        y0, x0 = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
        wy, wx = fy - y0, fx - x0
        for target, col in ((opd, 2), (od, 3)):
            if not np.any(sel[:, col]):
                continue
            acc = np.zeros(ny * nx, dtype=np.float64)
            corners = ((0, 0, (1 - wy) * (1 - wx)), (1, 0, wy * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 1, wy * wx))
            for dy, dx_, w in corners:
                idx = ((y0 + dy) % ny) * nx + (x0 + dx_) % nx
                acc += np.bincount(idx, weights=w * sel[:, col] * gain, minlength=ny * nx)
            target += _gaussian_blur_periodic(acc.reshape(ny, nx).astype(np.float32), sigma_px)


def _add(acc: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch: np.ndarray) -> None:
    r0, c0 = int(rows[0]), int(cols[0])
    if int(rows[-1]) - r0 == len(rows) - 1 and int(cols[-1]) - c0 == len(cols) - 1:
        acc[r0 : r0 + len(rows), c0 : c0 + len(cols)] += patch  # no wrap: a plain view, much faster
    else:
        acc[np.ix_(rows, cols)] += patch


def _blob(yy: np.ndarray, xx: np.ndarray, y: float, x: float, sigma: float) -> np.ndarray:
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2.0 * sigma**2))


def _cell(grid: _Grid, maps: _Maps, rng: np.random.Generator,
          cy: float, cx: float, cell_type: CellType, absorb: float, fl_gain: float = 1.0) -> None:
    """Add one adherent cell to the maps (its small spots to ``maps.spots`` as rows of
    y, x, peak OPD, peak optical density, σ)."""
    spots = maps.spots
    rounded = rng.random() < 0.07
    if rounded:  # rounded / mitotic cell: small, thick, bright halo in phase contrast
        length, aspect = rng.uniform(10.0, 16.0), rng.uniform(1.0, 1.25)
        peak_h, lamella_h = rng.uniform(6.0, 10.0), 1.0
    elif cell_type == "fibroblast":
        length, aspect = rng.uniform(30.0, 60.0), rng.uniform(2.0, 5.0)
        peak_h, lamella_h = rng.uniform(2.0, 3.5), rng.uniform(0.25, 0.6)
    elif cell_type == "smooth_muscle":
        length, aspect = rng.uniform(40.0, 60.0), rng.uniform(4.0, 7.0)
        peak_h, lamella_h = rng.uniform(2.5, 4.0), rng.uniform(0.4, 0.8)
    else:  # endothelial: flat, polygonal, cobblestone
        length, aspect = rng.uniform(15.0, 40.0), rng.uniform(1.1, 2.2)
        peak_h, lamella_h = rng.uniform(1.0, 2.0), rng.uniform(0.2, 0.5)
    a, b = length / 2.0, length / (2.0 * aspect)
    angle = rng.uniform(0.0, math.pi)
    ca, sa = math.cos(angle), math.sin(angle)
    # Boundary radius: (super)ellipse × (1 + random harmonics + protrusions). A superellipse
    # exponent < 2 gives the pointed ends of spindle-shaped cells.
    p = 2.0 if rounded or cell_type == "endothelial" else float(rng.uniform(1.2, 1.8))
    ks = np.arange(2, 7)
    harmonics = rng.normal(0.0, 0.10 / ks) * np.exp(1j * rng.uniform(0, 2 * math.pi, ks.size))
    n_prot = 0 if rounded else int(rng.integers(0, 4))
    prot_dir = rng.uniform(-math.pi, math.pi, n_prot)
    prot_width = rng.uniform(0.12, 0.35, n_prot)
    prot_amp = rng.uniform(0.2, 0.6, n_prot)

    def boundary_radius(cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
        ellipse = 1.0 / ((np.abs(cos_t) / a) ** p + (np.abs(sin_t) / b) ** p) ** (1.0 / p)
        unit = (cos_t + 1j * sin_t).astype(np.complex64)  # exp(iθ): harmonics without trig calls
        power = unit * unit
        wobble = np.ones_like(cos_t)
        for c in harmonics:
            wobble += (np.complex64(c) * power).real
            power *= unit
        for phi0, width, amp in zip(prot_dir, prot_width, prot_amp):
            cos_d = cos_t * math.cos(phi0) + sin_t * math.sin(phi0)
            wobble += amp * np.exp((cos_d - 1.0) / width**2)  # von Mises bump ≈ Gaussian in angle
        return np.maximum(ellipse * wobble, 1.0)

    # Tight bounding box from the outline itself, then the cell on that patch only.
    ring = np.linspace(0.0, 2.0 * math.pi, 256, endpoint=False, dtype=np.float32)
    outline = boundary_radius(np.cos(ring), np.sin(ring))
    ou, ov = outline * np.cos(ring), outline * np.sin(ring)
    rows, cols, yy, xx = grid.patch(
        cy, cx, float(np.abs(ou * sa + ov * ca).max()) + 2.0, float(np.abs(ou * ca - ov * sa).max()) + 2.0
    )
    u = xx * ca + yy * sa  # along the long axis
    v = -xx * sa + yy * ca
    rho = np.hypot(u, v) + np.float32(1e-6)
    s = rho / boundary_radius(u / rho, v / rho)

    edge = 1.5 / max(float(b), 1.0)  # ~1.5 µm soft edge
    mask = _smoothstep((1.0 - s) / edge)
    dome = np.clip(1.0 - s**2, 0.0, 1.0) ** 1.5
    thickness = mask * (lamella_h + (peak_h - lamella_h) * dome * 0.6)

    # Nucleus: an ellipse near the centre, oriented roughly with the cell, thicker and denser.
    nuc_a = rng.uniform(5.0, 8.0) if not rounded else a * 0.7
    nuc_b = min(nuc_a * rng.uniform(0.6, 0.9), max(b * 0.8, 3.0))
    nu0, nv0 = rng.normal(0.0, a * 0.08), rng.normal(0.0, b * 0.1)
    nang = rng.normal(0.0, 0.25)
    cn, sn = math.cos(nang), math.sin(nang)
    nu, nv = (u - nu0) * cn + (v - nv0) * sn, -(u - nu0) * sn + (v - nv0) * cn
    sn2 = (nu / nuc_a) ** 2 + (nv / nuc_b) ** 2
    nuc_mask = _smoothstep((1.0 - np.sqrt(sn2)) / (0.8 / nuc_b))
    nuc_h = peak_h * rng.uniform(0.7, 1.0) * np.sqrt(np.clip(1.0 - sn2, 0.0, 1.0)) * nuc_mask
    cell_opd = _DN_CYTO * thickness + (_DN_NUCLEUS - _DN_CYTO) * nuc_h + _DN_CYTO * nuc_h * 0.5

    # Nucleoli (1–4 dense spots in the nucleus) and perinuclear granules (phase-dense,
    # slightly absorbing) are point lists splatted and blurred once for the whole field.
    to_field = np.array([[ca, -sa], [sa, ca]])  # (u, v) → (x, y)
    n_nucleoli = int(rng.integers(1, 5))
    r, phi = rng.uniform(0, 0.6, n_nucleoli), rng.uniform(0, 2 * math.pi, n_nucleoli)
    uv = np.stack([nu0 + r * nuc_a * np.cos(phi), nv0 + r * nuc_b * np.sin(phi)])
    xy = to_field @ uv
    spots.append(np.stack([cy + xy[1], cx + xy[0], _DN_NUCLEOLUS * rng.uniform(0.35, 0.7, n_nucleoli),
                           np.zeros(n_nucleoli), np.full(n_nucleoli, _NUCLEOLUS_SIGMA_UM)], axis=1))
    n_gran = 0 if rounded else int(rng.integers(5, 40))
    if n_gran:
        uv = np.stack([rng.normal(nu0, a * 0.35, n_gran), rng.normal(nv0, b * 0.4, n_gran)])
        inside = (uv[0] / a) ** 2 + (uv[1] / b) ** 2 < 0.7
        xy = to_field @ uv[:, inside]
        amp = rng.uniform(0.005, 0.02, int(inside.sum()))
        spots.append(np.stack([cy + xy[1], cx + xy[0], amp, 3.0 * absorb * amp,
                               np.full(amp.size, _GRANULE_SIGMA_UM)], axis=1))

    _add(maps.opd, rows, cols, cell_opd.astype(np.float32))
    _add(maps.od, rows, cols, (absorb * cell_opd).astype(np.float32))
    _add(maps.fl_cyto, rows, cols, (fl_gain * thickness).astype(np.float32))
    _add(maps.fl_nuc, rows, cols, (fl_gain * nuc_mask).astype(np.float32))


def _round_cell(grid: _Grid, maps: _Maps, rng: np.random.Generator, cy: float, cx: float, radius: float,
                absorb: float, fl_gain: float = 1.0) -> None:
    """A suspension (non-adherent) cell: a refractive sphere with a denser nucleus inside."""
    rows, cols, yy, xx = grid.patch(cy, cx, radius + 2.0)
    rho2 = yy**2 + xx**2
    edge = _smoothstep((radius - np.sqrt(rho2)) / 0.8 + 0.5)
    chord = 2.0 * np.sqrt(np.clip(radius**2 - rho2, 0.0, None)) * edge  # path length through it
    nuc_r = radius * rng.uniform(0.5, 0.75)
    off = rng.normal(0.0, 0.15 * (radius - nuc_r), 2)
    nrho2 = (yy - off[0]) ** 2 + (xx - off[1]) ** 2
    nuc_chord = 2.0 * np.sqrt(np.clip(nuc_r**2 - nrho2, 0.0, None))
    dn = rng.uniform(0.012, 0.028)
    cell_opd = dn * chord + rng.uniform(0.004, 0.01) * nuc_chord
    _add(maps.opd, rows, cols, cell_opd.astype(np.float32))
    _add(maps.od, rows, cols, (absorb * cell_opd).astype(np.float32))
    _add(maps.fl_cyto, rows, cols, (fl_gain * 0.25 * chord).astype(np.float32))
    _add(maps.fl_nuc, rows, cols, (fl_gain * (nuc_chord > 0)).astype(np.float32))
    n_gran = int(rng.integers(0, 12))
    if n_gran:
        r = radius * 0.8 * np.sqrt(rng.uniform(0, 1, n_gran))
        phi = rng.uniform(0, 2 * math.pi, n_gran)
        amp = rng.uniform(0.01, 0.04, n_gran)
        maps.spots.append(np.stack([cy + r * np.sin(phi), cx + r * np.cos(phi), amp, 3.0 * absorb * amp,
                                    np.full(n_gran, _GRANULE_SIGMA_UM)], axis=1))


def _bubbles(grid: _Grid, maps: _Maps, rng: np.random.Generator, per_mm2: float,
             r_range: tuple[float, float]) -> int:
    """Micro air bubbles: negative phase lenses with a dark (refracting) rim."""
    ly, lx = grid.shape[0] * grid.dx, grid.shape[1] * grid.dx
    n = int(rng.poisson(per_mm2 * ly * lx / 1e6))
    for _ in range(n):
        r = float(np.exp(rng.uniform(math.log(r_range[0]), math.log(r_range[1]))))
        cy, cx = rng.uniform(0, ly), rng.uniform(0, lx)
        rows, cols, yy, xx = grid.patch(cy, cx, r + 4.0)
        rho = np.hypot(yy, xx)
        s = rho / r
        # A real bubble's OPD (air in gel: Δn ≈ −0.34 over 2·sqrt(r²−ρ²)) bends light far
        # outside any pupil; what the objective sees is a modest negative lens (``depth``
        # µm of OPD) plus a dark rim, both softened by the bubble lying deeper than the cells.
        soft = rng.uniform(0.5, 2.0) + 2.0 * grid.dx
        lens = np.sqrt(np.clip(1.0 - s**2, 0.0, 1.0)) * _smoothstep((r - rho) / soft + 0.5)
        depth = rng.uniform(0.02, 0.12) * min(r, 10.0) / 10.0 + 0.03
        rim = np.exp(-(((rho - r) / (0.6 * soft + 0.4)) ** 2))
        _add(maps.opd, rows, cols, (-depth * lens).astype(np.float32))
        _add(maps.od, rows, cols, (rng.uniform(0.15, 0.6) * rim).astype(np.float32))
    return n


def _debris(grid: _Grid, maps: _Maps, rng: np.random.Generator, per_mm2: float,
            size_range: tuple[float, float] = (0.6, 2.5)) -> None:
    ly, lx = grid.shape[0] * grid.dx, grid.shape[1] * grid.dx
    n = int(rng.poisson(per_mm2 * ly * lx / 1e6))
    for _ in range(n):
        size = rng.uniform(*size_range)
        cy, cx = rng.uniform(0, ly), rng.uniform(0, lx)
        rows, cols, yy, xx = grid.patch(cy, cx, 3 * size)
        b = _blob(yy, xx, 0.0, 0.0, size)
        _add(maps.opd, rows, cols, (rng.uniform(0.02, 0.08) * b).astype(np.float32))
        od_peak = rng.uniform(0.05, 0.4)
        _add(maps.od, rows, cols, (od_peak * b).astype(np.float32))
        _add(maps.fl_debris, rows, cols, (od_peak * b).astype(np.float32))


def _scratches(grid: _Grid, opd: np.ndarray, rng: np.random.Generator) -> None:
    ny, nx = grid.shape
    yy = (np.arange(ny, dtype=np.float32) * grid.dx)[:, None]
    xx = (np.arange(nx, dtype=np.float32) * grid.dx)[None, :]
    for _ in range(int(rng.choice([0, 0, 1, 1, 2]))):
        ang = rng.uniform(0, math.pi)
        y0, x0 = rng.uniform(0, ny * grid.dx), rng.uniform(0, nx * grid.dx)
        dist = (yy - y0) * math.cos(ang) - (xx - x0) * math.sin(ang)
        width = rng.uniform(0.4, 1.5)
        opd += (rng.uniform(0.001, 0.005) * np.exp(-(dist**2) / (2 * width**2))).astype(np.float32)


def _substrate(grid: _Grid, maps: _Maps, rng: np.random.Generator, substrate: Substrate) -> None:
    ny, nx = grid.shape
    if substrate == "tcps":
        maps.opd += 0.0025 * rng.uniform(0.3, 1.0) * _smooth_noise((ny, nx), rng, rng.uniform(1.5, 4.0) / grid.dx)
        _scratches(grid, maps.opd, rng)
        _debris(grid, maps, rng, per_mm2=rng.uniform(5, 40))
    elif substrate == "hydrogel":
        maps.opd += 0.006 * rng.uniform(0.3, 1.0) * _smooth_noise((ny, nx), rng, rng.uniform(3.0, 10.0) / grid.dx)
        _bubbles(grid, maps, rng, per_mm2=rng.uniform(40, 300), r_range=(2.0, 25.0))
        _debris(grid, maps, rng, per_mm2=rng.uniform(5, 30))
    else:  # pdms: spin-coated waviness, fewer (degassed) bubbles, dust
        maps.opd += 0.012 * rng.uniform(0.3, 1.0) * _smooth_noise((ny, nx), rng, rng.uniform(10.0, 30.0) / grid.dx)
        _bubbles(grid, maps, rng, per_mm2=rng.uniform(15, 120), r_range=(1.5, 15.0))
        _debris(grid, maps, rng, per_mm2=rng.uniform(10, 60))


def _scatter(rng: np.random.Generator, n: int, ly: float, lx: float, p_near: float, spread_um: float) -> np.ndarray:
    """Cell centres: uniform, or (with ``p_near``) next to an earlier cell (colonies)."""
    centres = np.empty((n, 2))
    for i in range(n):
        if i and rng.random() < p_near:
            j = int(rng.integers(0, i))
            centres[i] = centres[j] + rng.normal(0.0, spread_um, 2)
        else:
            centres[i] = rng.uniform(0, ly), rng.uniform(0, lx)
    return centres


def _emission(maps: _Maps, rng: np.random.Generator) -> np.ndarray:
    """Fluorophore density of one staining: a random mix of a nuclear and a cytoplasmic dye
    (cells brighter than the autofluorescent debris), peak ≈ 1."""
    w_nuc, w_cyto = rng.uniform(0.0, 1.0, 2)
    if max(w_nuc, w_cyto) < 0.3:
        w_nuc = 1.0
    em = w_nuc * maps.fl_nuc + 0.5 * w_cyto * maps.fl_cyto + 0.3 * maps.fl_debris
    return np.clip(em, 0.0, None).astype(np.float32)


def random_specimen(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    pixel_size_um: float,
    density: float | None = None,
    substrate: Substrate | None = None,
    cell_type: CellType | None = None,
    wavelength_um: float = 0.55,
    layout: Layout = "spread",
) -> Specimen:
    """A random cell culture on a substrate.

    ``layout`` is how the field is populated (:data:`LAYOUTS`): spread adherent cells (the
    paper's cultures), round suspension cells, clusters (colonies), a confluent monolayer, a
    sparse field (1–5 % confluence), a nearly empty field (substrate and debris only), or
    cells among heavy debris. ``density`` is the confluence of ``spread``: the expected
    fraction of the area covered by cells (0–1; random in 0.05–0.7 when None); the other
    layouts draw their own. ``substrate`` and ``cell_type`` are drawn uniformly when None
    (cell types 2:1:1 endothelial:smooth muscle:fibroblast, as the paper's data set).
    The specimen also carries an emission map (a random nuclear/cytoplasmic stain) for
    fluorescence.
    """
    ny, nx = int(shape[0]), int(shape[1])
    if ny < 16 or nx < 16:
        raise ValueError(f"specimen shape {shape} too small (min 16×16)")
    if pixel_size_um <= 0:
        raise ValueError(f"pixel_size_um={pixel_size_um} must be positive")
    if density is not None and not 0.0 <= density <= 1.0:
        raise ValueError(f"density={density} must be a confluence in [0, 1]")
    if substrate is not None and substrate not in SUBSTRATES:
        raise ValueError(f"substrate={substrate!r} (want one of {SUBSTRATES})")
    if cell_type is not None and cell_type not in CELL_TYPES:
        raise ValueError(f"cell_type={cell_type!r} (want one of {CELL_TYPES})")
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} (want one of {LAYOUTS})")
    substrate = substrate or SUBSTRATES[int(rng.integers(0, 3))]
    cell_type = cell_type or ("endothelial", "endothelial", "smooth_muscle", "fibroblast")[int(rng.integers(0, 4))]
    density = float(rng.uniform(0.05, 0.7)) if density is None else float(density)

    grid = _Grid((ny, nx), float(pixel_size_um))
    ly, lx = ny * grid.dx, nx * grid.dx
    maps = _Maps.empty((ny, nx))
    _substrate(grid, maps, rng, substrate)  # texture under everything
    absorb = float(rng.uniform(0.1, 0.3))  # amplitude optical density per µm of OPD
    fl_rng = rng.spawn(1)[0]  # staining brightness: its own stream, the geometry's is unchanged

    mean_area = {"fibroblast": 480.0, "smooth_muscle": 330.0, "endothelial": 420.0}[cell_type]
    area = ly * lx
    n_cells = 0
    if layout in ("spread", "sparse", "debris"):
        if layout == "sparse":
            density = float(rng.uniform(0.01, 0.05))
        elif layout == "debris":
            density = float(rng.uniform(0.03, 0.3))
        # Cells: count from the confluence and the type's mean footprint; some cluster.
        n_cells = int(rng.poisson(density * area / mean_area))
        if density > 0.0:
            n_cells = max(n_cells, 1)  # a culture at all shows at least one cell in the field
        centres = _scatter(rng, n_cells, ly, lx, 0.35 if layout == "spread" else 0.1, 15.0)
        round_share = 0.5 if layout == "sparse" else 0.0
        for cy, cx in centres:
            gain = float(fl_rng.lognormal(0.0, 0.4))
            cy, cx = float(cy % ly), float(cx % lx)
            if round_share and rng.random() < round_share:
                _round_cell(grid, maps, rng, cy, cx, float(rng.uniform(4.0, 10.0)), absorb, gain)
            else:
                _cell(grid, maps, rng, cy, cx, cell_type, absorb, gain)
        if layout == "debris":  # dead-cell fragments, precipitate, fibres of dust
            _debris(grid, maps, rng, per_mm2=float(rng.uniform(500, 4000)), size_range=(0.4, 4.0))
            for _ in range(int(rng.poisson(area / 2e4))):
                _round_cell(grid, maps, rng, float(rng.uniform(0, ly)), float(rng.uniform(0, lx)),
                            float(rng.uniform(1.5, 4.0)), 3.0 * absorb, float(fl_rng.lognormal(-1.0, 0.5)))
    elif layout == "round":
        density = float(rng.uniform(0.05, 0.5))
        radius = float(rng.uniform(4.0, 9.0))
        n_cells = max(1, int(rng.poisson(density * area / (math.pi * radius**2))))
        for cy, cx in _scatter(rng, n_cells, ly, lx, 0.15, 2.5 * radius):
            _round_cell(grid, maps, rng, float(cy % ly), float(cx % lx), radius * float(rng.uniform(0.75, 1.3)),
                        absorb, float(fl_rng.lognormal(0.0, 0.4)))
    elif layout == "clusters":
        n_clusters = max(1, int(rng.poisson(area / 3e4)))
        round_cells = rng.random() < 0.5
        radius = float(rng.uniform(4.0, 8.0))
        for _ in range(n_clusters):
            k = int(rng.integers(4, 30))
            c0 = rng.uniform(0, ly), rng.uniform(0, lx)
            spread_um = (0.9 * radius if round_cells else 6.0) * math.sqrt(k)
            for dy, dx in rng.normal(0.0, spread_um * 0.5, (k, 2)):
                cy, cx = (c0[0] + dy) % ly, (c0[1] + dx) % lx
                gain = float(fl_rng.lognormal(0.0, 0.4))
                if round_cells:
                    _round_cell(grid, maps, rng, cy, cx, radius * float(rng.uniform(0.8, 1.2)), absorb, gain)
                else:
                    _cell(grid, maps, rng, cy, cx, cell_type, absorb, gain)
            n_cells += k
        density = float(min(1.0, n_cells * mean_area / area))
    elif layout == "monolayer":  # cobblestone: a jittered hexagonal packing at confluence
        spacing = float(rng.uniform(18.0, 28.0))
        rows_n, cols_n = max(1, int(ly / (spacing * 0.866))), max(1, int(lx / spacing))
        for r in range(rows_n):
            for c in range(cols_n):
                cy = (r + 0.5) * ly / rows_n + rng.normal(0.0, 0.15 * spacing)
                cx = (c + 0.5 * (r % 2) + 0.25) * lx / cols_n + rng.normal(0.0, 0.15 * spacing)
                _cell(grid, maps, rng, float(cy % ly), float(cx % lx), "endothelial", absorb,
                      float(fl_rng.lognormal(0.0, 0.3)))
        n_cells = rows_n * cols_n
        density = 1.0
    else:  # empty: substrate, debris and perhaps a few fragments, no cells
        density = 0.0
        _debris(grid, maps, rng, per_mm2=float(rng.uniform(0, 200)), size_range=(0.4, 3.0))
    if maps.spots:
        _splat_spots(grid, maps.opd, maps.od, np.concatenate(maps.spots))

    phase = (2.0 * math.pi / wavelength_um) * maps.opd
    transmission = np.exp(-np.maximum(maps.od, 0.0)) * np.exp(1j * phase)  # passive
    return Specimen(
        transmission=transmission.astype(np.complex64),
        pixel_size_um=float(pixel_size_um),
        wavelength_um=wavelength_um,
        substrate=substrate,
        cell_type=cell_type,
        density=density,
        n_cells=n_cells,
        emission=_emission(maps, fl_rng),
        layout=layout,
    )
