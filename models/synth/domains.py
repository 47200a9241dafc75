"""The named domains of simulated data: imaging modes × specimens, and their optics.

Every frame belongs to one imaging mode and one specimen layout; both names go into the
manifest, and a data set can be restricted to, or leave out, any of them
(``refocusd synth --domain negative_phase --exclude-domain fluorescence``). The objective
(magnification, NA) and the pixel size are drawn per frame from :data:`OBJECTIVE_BANDS`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from refocusd.models.synth.optics import Optics
from refocusd.models.synth.specimen import LAYOUTS, Layout

MODES: tuple[str, ...] = ("positive_phase", "negative_phase", "brightfield", "fluorescence", "dic", "oblique")
SPECIMENS: tuple[str, ...] = ("spread_cells", "round_cells", "clusters", "monolayer", "sparse", "empty", "debris")
DOMAINS: tuple[str, ...] = MODES + SPECIMENS
LAYOUT_OF: dict[str, Layout] = dict(zip(SPECIMENS, LAYOUTS))

DOMAIN_HELP: dict[str, str] = {
    "positive_phase": "phase contrast, ring advances the direct light by 0.35–0.65 π (dark cells, bright halos); "
                      "ring T 0.1–0.4, annulus 0.45–0.65 NA; 40 % apodised (side bands T 0.2–0.6)",
    "negative_phase": "phase contrast, ring retards the direct light by 0.35–0.65 π (bright cells, dark halos); "
                      "same ring ranges",
    "brightfield": "transmitted bright field, condenser NA 0.2–0.9 × objective NA (defocus contrast of phase objects)",
    "fluorescence": "incoherent emitters (random nuclear/cytoplasmic stain), emission λ 0.45–0.67 µm, dark "
                    "background (autofluorescence 0.5–5 % of a stained nucleus); defocus blur symmetric in z",
    "dic": "ideal Nomarski DIC: shear 0.3–0.8 × λ/(2NA), bias ±(0.1–0.5) π, any shear direction, "
           "condenser 0.4–0.9 × NA",
    "oblique": "oblique bright field: condenser disc of 0.1–0.3 × NA decentred by 0.5–1.0 × NA",
    "spread_cells": "adherent fibroblast / smooth-muscle / endothelial cells, confluence 5–70 %",
    "round_cells": "suspension cells: refractive spheres of radius 3–12 µm, confluence 5–50 %",
    "clusters": "colonies of 4–30 round or spread cells",
    "monolayer": "confluent cobblestone monolayer (hexagonal packing, 18–28 µm spacing)",
    "sparse": "1–5 % confluence, spread or round cells: mostly background",
    "empty": "no cells: substrate texture, bubbles, 0–200 debris particles / mm²",
    "debris": "cells (3–30 % confluence) among heavy debris and dead-cell fragments",
}

# Magnification → NA band and the camera band of pixel sizes at the specimen (µm): 3–13 µm
# sensor pitch (binning included) behind the magnification, within 0.1–2 µm.
OBJECTIVE_BANDS: dict[str, tuple[float, tuple[float, float]]] = {
    "4x": (4.0, (0.10, 0.16)),
    "10x": (10.0, (0.25, 0.32)),
    "20x": (20.0, (0.40, 0.50)),
    "40x": (40.0, (0.55, 0.75)),
}
PIXEL_SIZE_RANGE_UM = (0.1, 2.0)
SENSOR_PITCH_RANGE_UM = (3.0, 13.0)
TRANSMITTED_WAVELENGTH_UM = (0.48, 0.62)
EMISSION_WAVELENGTH_UM = (0.45, 0.67)


class DomainError(ValueError):
    """An unknown domain name, or a selection that leaves nothing to render."""


@dataclass(frozen=True)
class DomainSelection:
    modes: tuple[str, ...] = MODES
    specimens: tuple[str, ...] = SPECIMENS

    def as_dict(self) -> dict[str, list[str]]:
        return {"modes": list(self.modes), "specimens": list(self.specimens)}


def select_domains(include: Iterable[str] = (), exclude: Iterable[str] = ()) -> DomainSelection:
    """Domains named in ``include`` restrict their axis (modes or specimens; an axis not
    named keeps all), then ``exclude`` removes names. Unknown names raise DomainError."""
    include, exclude = list(include), list(exclude)
    unknown = sorted({d for d in include + exclude if d not in DOMAINS})
    if unknown:
        raise DomainError(f"unknown domain(s) {', '.join(unknown)}; known: {', '.join(DOMAINS)}")
    axes = []
    for axis in (MODES, SPECIMENS):
        chosen = [d for d in axis if d in include] or list(axis)
        kept = tuple(d for d in chosen if d not in exclude)
        if not kept:
            raise DomainError(f"the selection leaves no {'imaging mode' if axis is MODES else 'specimen'} "
                              f"(include {include or 'all'}, exclude {exclude})")
        axes.append(kept)
    return DomainSelection(*axes)


def optics_record(optics: Optics) -> dict[str, Any]:
    """The manifest's record of ``optics``: its modality and every field that differs from
    the :class:`Optics` defaults, at full precision (:func:`optics_from_record` inverts it)."""
    defaults = Optics()
    record: dict[str, Any] = {"modality": optics.modality}
    # getattr: each dataclass field by name, to record only what differs from the defaults
    for f in dataclasses.fields(Optics):
        value = getattr(optics, f.name)
        if value != getattr(defaults, f.name):
            record[f.name] = list(value) if isinstance(value, tuple) else value
    return record


def optics_from_record(record: dict[str, Any]) -> Optics:
    """The exact :class:`Optics` of a manifest item's ``optics`` record (for physics-aware
    baselines that need the true transfer function of a frame)."""
    fields = {f.name for f in dataclasses.fields(Optics)}
    unknown = sorted(set(record) - fields)
    if unknown:
        raise ValueError(f"not Optics fields: {', '.join(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
    return Optics(**kwargs)


def draw_optics(mode: str, magnification: float, na: float, rng: np.random.Generator,
                field_of_view_um: float) -> Optics:
    """A microscope for ``mode`` with this objective, its free parameters drawn from ``rng``."""
    base: dict[str, Any] = {"na": na, "magnification": magnification, "field_of_view_um": field_of_view_um}
    if mode == "fluorescence":
        lam_em = float(rng.uniform(*EMISSION_WAVELENGTH_UM))
        return Optics(**base, modality="fluorescence", wavelength_um=lam_em, emission_wavelength_um=lam_em)
    lam = float(rng.uniform(*TRANSMITTED_WAVELENGTH_UM))
    base["wavelength_um"] = lam
    if mode in ("positive_phase", "negative_phase"):
        outer = na * float(rng.uniform(0.45, 0.65))
        inner = max(0.0, outer - na * float(rng.uniform(0.08, 0.15)))
        shift = float(rng.uniform(0.35, 0.65)) * math.pi * (1.0 if mode == "positive_phase" else -1.0)
        transmission = float(rng.uniform(0.1, 0.4))
        apodised = bool(rng.random() < 0.4)
        apod_t = float(rng.uniform(0.2, 0.6)) if apodised else 1.0
        apod_w = na * float(rng.uniform(0.05, 0.12)) if apodised else 0.0
        return Optics(**base, modality="phase_contrast", condenser_annulus_na=(inner, outer),
                      phase_ring_shift_rad=shift, phase_ring_transmission=transmission,
                      phase_ring_apodization_transmission=apod_t, phase_ring_apodization_width_na=apod_w)
    if mode == "brightfield":
        return Optics(**base, modality="brightfield", brightfield_condenser_na=na * float(rng.uniform(0.2, 0.9)))
    if mode == "dic":
        nac = na * float(rng.uniform(0.4, 0.9))
        shear = float(rng.uniform(0.3, 0.8)) * lam / (2.0 * na)
        bias = float(rng.uniform(0.1, 0.5)) * math.pi * (1.0 if rng.random() < 0.5 else -1.0)
        return Optics(**base, modality="dic", brightfield_condenser_na=nac, dic_shear_um=shear,
                      dic_bias_rad=bias, dic_angle_rad=float(rng.uniform(0.0, math.pi)))
    if mode == "oblique":
        nac = na * float(rng.uniform(0.1, 0.3))
        offset = na * float(rng.uniform(0.5, 1.0))
        return Optics(**base, modality="oblique", brightfield_condenser_na=nac, oblique_offset_na=offset,
                      oblique_angle_rad=float(rng.uniform(0.0, 2.0 * math.pi)))
    raise DomainError(f"unknown imaging mode {mode!r}")


def specimen_sampling_um(optics: Optics) -> float:
    """Coarsest specimen sampling that holds every frequency the optics can pass: the
    field's band (NA + condenser NA)/λ, or the OTF's 2·NA/λ in fluorescence (10 % margin)."""
    if optics.modality == "fluorescence":
        return 0.9 * (optics.emission_wavelength_um or optics.wavelength_um) / (4.0 * optics.na)
    if optics.modality == "phase_contrast":
        reach = optics.condenser_annulus_na[1] + optics.phase_ring_margin_na
    elif optics.modality == "oblique":
        reach = optics.oblique_offset_na + optics.brightfield_condenser_na
    else:
        reach = optics.brightfield_condenser_na
    return 0.9 * optics.wavelength_um / (2.0 * (optics.na + reach))
