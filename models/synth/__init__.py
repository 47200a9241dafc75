"""Physical optics simulator: random cell cultures, microscope image formation, camera.

    specimen = random_specimen((512, 512), rng, pixel_size_um=600 / 512, layout="round")
    intensity = render(specimen, z_um=10.0, optics=OBJECTIVES["10x"], out_shape=(2048, 2048))
    frame = Camera(bit_depth=16).expose(intensity * lamp, rng)
    # or, in one call: acquire_frame(specimen, 10.0, OBJECTIVES["10x"], camera, rng, (2048, 2048))

``z_um > 0`` puts the focal plane ``z`` µm past the specimen along the light path. Imaging
modes and specimen layouts are named domains (:mod:`refocusd.models.synth.domains`);
``refocusd synth`` draws them per frame (:mod:`refocusd.models.synth.dataset`).
Numpy/scipy only: no TensorFlow here.
"""

from refocusd.models.synth.camera import Camera, acquire_frame, dust_field, illumination_field, specimen_grid
from refocusd.models.synth.dataset import SynthError, SynthRequest, generate_dataset
from refocusd.models.synth.domains import (
    DOMAINS,
    MODES,
    SPECIMENS,
    DomainError,
    draw_optics,
    optics_from_record,
    optics_record,
    select_domains,
)
from refocusd.models.synth.optics import MODALITIES, OBJECTIVES, Optics, propagate, render
from refocusd.models.synth.specimen import CELL_TYPES, LAYOUTS, SUBSTRATES, Specimen, random_specimen

__all__ = [
    "CELL_TYPES",
    "DOMAINS",
    "LAYOUTS",
    "MODALITIES",
    "MODES",
    "OBJECTIVES",
    "SPECIMENS",
    "SUBSTRATES",
    "Camera",
    "DomainError",
    "Optics",
    "Specimen",
    "SynthError",
    "SynthRequest",
    "acquire_frame",
    "draw_optics",
    "dust_field",
    "generate_dataset",
    "illumination_field",
    "optics_from_record",
    "optics_record",
    "propagate",
    "random_specimen",
    "render",
    "select_domains",
    "specimen_grid",
]
