"""The simulated microscope end to end: plan, timing, files, autofocus misses, stage control,
re-acquisition, determinism, resume, caches. Real optics renders, real TIFFs, virtual clock.

Each optics render costs ~0.5 s on 2 cores, so the plans are small and a few tests share
one module-scoped run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocusd.config.settings import PlateSettings, SimulatedMicroscopeSettings, TimelapseSettings
from refocusd.drivers.base import Capabilities, Coordinates, DriverError, Frame, Microscope, StageControl
from refocusd.drivers.clock import SimulatedClock
from refocusd.drivers.simulated import SimulatedMicroscope
from refocusd.drivers.simulated.camera import SimulatedCamera
from refocusd.drivers.simulated.microscope import PLAN_FILE
from refocusd.drivers.simulated.stage import AUTOFOCUS_PRECISION_UM

SHAPE = (256, 256)
START = 1_000.0


def settings(**kw: object) -> SimulatedMicroscopeSettings:
    return SimulatedMicroscopeSettings(**{"frame_shape": SHAPE, "autofocus_miss_rate": 0.0, **kw})


def microscope(
    tmp: Path,
    *,
    wells: list[str],
    positions: int = 1,
    timepoints: int = 1,
    interval_s: float = 600.0,
    max_delay_s: float = 60.0,
    experiment: str = "exp",
    clock: SimulatedClock | None = None,
    **kw: object,
) -> SimulatedMicroscope:
    return SimulatedMicroscope(
        settings(**kw),
        PlateSettings(name="P1", wells=wells, positions_per_well=positions),
        TimelapseSettings(timepoints=timepoints, interval_s=interval_s, max_delay_s=max_delay_s),
        clock=clock or SimulatedClock(start=START),
        data_dir=tmp,
        experiment=experiment,
    )


def gradient_energy(pixels: np.ndarray) -> float:
    gy, gx = np.gradient(pixels.astype(np.float64))
    return float(np.mean(gx**2 + gy**2))


def description(path: str) -> dict:
    with tifffile.TiffFile(path) as tif:
        return json.loads(tif.pages[0].description)


@pytest.fixture(scope="module")
def timelapse(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatedMicroscope, list[Frame], Path]:
    """2 wells × 2 fields × 3 time points, autofocus never misses."""
    tmp = tmp_path_factory.mktemp("timelapse")
    mic = microscope(tmp, wells=["B2", "A1"], positions=2, timepoints=3, interval_s=300.0, max_delay_s=60.0)
    frames = list(mic.frames())
    return mic, frames, tmp


def test_it_is_a_microscope_with_stage_control(timelapse) -> None:
    mic, _, _ = timelapse
    assert isinstance(mic, Microscope) and isinstance(mic, StageControl)
    assert mic.capabilities == Capabilities(move_stage=True, autofocus=True, reacquire=True)
    assert mic.capabilities.can_refocus


def test_frames_follow_the_plan(timelapse) -> None:
    mic, frames, _ = timelapse
    assert len(frames) == mic.frame_count == 2 * 2 * 3
    got = [(f.coords.well, f.coords.position, f.coords.t) for f in frames]
    assert got == [(w, p, t) for t in range(3) for w in ("A1", "B2") for p in (0, 1)]
    for f in frames:
        assert f.coords.plate == "P1" and f.coords.channel == "phase" and f.experiment == "exp"
        assert f.retry == 0 and f.pixels.shape == SHAPE and f.pixels.dtype == np.uint16


def test_schedule_and_deadlines(timelapse) -> None:
    mic, frames, _ = timelapse
    offsets = mic.schedule_offsets_s
    # Fields are due one after another within a pass: the same offsets at every point.
    assert offsets[0] == 0.0 and offsets == sorted(offsets) and len(set(offsets)) == 4
    assert offsets[2] - offsets[1] > 9000.0 / 20_000.0  # A1 → B2 is a 9 mm stage move
    for i, f in enumerate(frames):
        t = f.coords.t
        assert f.scheduled_at == pytest.approx(START + 300.0 * t + offsets[i % 4])
        assert f.deadline == pytest.approx(f.scheduled_at + 60.0)
        assert f.scheduled_at <= f.acquired_at < f.deadline  # moves + autofocus + exposure
    acquired = [f.acquired_at for f in frames]
    assert acquired == sorted(acquired) and len(set(acquired)) == len(acquired)


def test_deadline_is_the_next_point_when_that_comes_first(tmp_path: Path) -> None:
    mic = microscope(tmp_path, wells=["A1"], timepoints=2, interval_s=30.0, max_delay_s=120.0)
    first, second = list(mic.frames())
    assert first.deadline == pytest.approx(second.scheduled_at) == pytest.approx(START + 30.0)
    assert second.deadline == pytest.approx(START + 30.0 + 120.0)  # last point: max delay


def test_a_single_plate_scan_has_no_deadline(tmp_path: Path) -> None:
    (frame,) = list(microscope(tmp_path, wells=["C3"]).frames())
    assert frame.deadline is None and frame.scheduled_at == pytest.approx(START)


def test_raw_frames_are_written_like_an_acquisition(timelapse) -> None:
    _, frames, tmp = timelapse
    for f in frames:
        path = Path(f.source.uri)
        assert path == tmp / "exp" / "P1" / f.coords.well / f"p{f.coords.position:03d}" / f"t{f.coords.t:04d}_r0.tif"
        np.testing.assert_array_equal(tifffile.imread(path), f.pixels)
        info = description(f.source.uri)
        assert (info["well"], info["position"], info["t"], info["retry"]) == (
            f.coords.well, f.coords.position, f.coords.t, 0,
        )
        assert info["z_um"] == f.z_um and info["metadata"]["true_defocus_um"] == f.metadata["true_defocus_um"]
    plan = json.loads((tmp / "exp" / "P1" / PLAN_FILE).read_text())
    assert plan["started_at"] == START and plan["seed"] == 0
    assert not list(tmp.rglob("*.tmp"))  # written through a temporary name, renamed


def test_autofocus_that_never_misses_lands_in_focus(timelapse) -> None:
    _, frames, _ = timelapse
    for f in frames:
        assert abs(f.metadata["true_defocus_um"]) <= AUTOFOCUS_PRECISION_UM + 1e-3
        assert f.metadata["autofocus_missed"] is False
        assert f.z_um == pytest.approx(f.metadata["true_focus_z_um"] + f.metadata["true_defocus_um"], abs=1e-3)
    # The focal surface differs between wells (tilt, relief) and the stage follows it.
    assert len({round(f.metadata["true_focus_z_um"], 1) for f in frames}) > 2


def test_fields_of_a_well_show_different_cells(timelapse) -> None:
    _, frames, _ = timelapse
    a, b = frames[0].pixels.astype(float), frames[1].pixels.astype(float)
    assert frames[0].coords.position != frames[1].coords.position
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.5


def test_autofocus_that_always_misses_lands_in_the_miss_range(tmp_path: Path) -> None:
    mic = microscope(tmp_path, wells=["A1", "A2", "A3"], autofocus_miss_rate=1.0, autofocus_miss_um=(10.0, 40.0))
    frames = list(mic.frames())
    for f in frames:
        assert 10.0 - 1e-3 <= abs(f.metadata["true_defocus_um"]) <= 40.0 + 1e-3
        assert f.metadata["autofocus_missed"] is True


def test_same_seed_same_misses_and_pixels(tmp_path: Path) -> None:
    wells = ["A1", "A2"]
    runs = [
        list(microscope(tmp_path / name, wells=wells, seed=7, autofocus_miss_rate=0.5).frames())
        for name in ("one", "two")
    ]
    assert [f.metadata["autofocus_missed"] for f in runs[0]] == [False, True]  # seed 7: one of each
    for a, b in zip(*runs, strict=True):
        assert a.metadata == b.metadata and a.z_um == b.z_um
        np.testing.assert_array_equal(a.pixels, b.pixels)
    other = next(microscope(tmp_path / "three", wells=wells, seed=8, autofocus_miss_rate=0.5).frames())
    assert not np.array_equal(other.pixels, runs[0][0].pixels)


def test_refocus_sharpens_the_image_and_reacquire_links_a_new_file(tmp_path: Path) -> None:
    clock = SimulatedClock(start=START)
    mic = microscope(
        tmp_path, wells=["D4"], timepoints=2, clock=clock, autofocus_miss_rate=1.0, autofocus_miss_um=(20.0, 30.0)
    )
    frames = mic.frames()
    missed = next(frames)
    assert abs(missed.metadata["true_defocus_um"]) >= 20.0
    assert mic.current_z() == missed.z_um

    # Move to the true focus (ground truth, as a perfect sweep would find it).
    target = missed.metadata["true_focus_z_um"]
    before = clock.now()
    mic.move_z(target)
    dz = abs(target - missed.z_um)
    assert clock.now() - before == pytest.approx(dz / 1000.0 + 0.02, rel=1e-6)  # z speed + settle
    before = clock.now()
    sharp = mic.snap()
    assert clock.now() - before == pytest.approx(0.01)  # exposure
    blurred_energy = gradient_energy(missed.pixels)
    assert gradient_energy(sharp) > 1.5 * blurred_energy

    again = mic.reacquire(missed, 1)
    assert again.retry == 1 and again.coords == missed.coords
    assert (again.scheduled_at, again.deadline) == (missed.scheduled_at, missed.deadline)
    assert again.acquired_at > missed.acquired_at and again.z_um == pytest.approx(target)
    assert abs(again.metadata["true_defocus_um"]) < 0.05
    assert again.metadata["parent_source"] == missed.source.uri
    assert again.metadata["culture"] == missed.metadata["culture"]
    assert again.source.uri.endswith("t0000_r1.tif") and Path(again.source.uri).exists()
    assert description(again.source.uri)["retry"] == 1
    np.testing.assert_array_equal(tifffile.imread(missed.source.uri), missed.pixels)  # raw kept
    assert gradient_energy(again.pixels) > 1.5 * blurred_energy

    with pytest.raises(DriverError, match="overwrite"):
        mic.reacquire(again, 1)
    # The device autofocus misses again at this rate, and says where it went.
    z = mic.autofocus()
    assert z == mic.current_z() and 20.0 <= abs(z - target) <= 30.0 + 1.0

    nxt = next(frames)
    with pytest.raises(DriverError, match="cannot re-acquire"):
        mic.reacquire(missed, 2)  # the stage has moved on to the next time point
    assert nxt.coords.t == 1


def test_stage_control_needs_a_frame_in_hand(tmp_path: Path) -> None:
    mic = microscope(tmp_path, wells=["A1"])
    assert mic.current_z() > 0
    for call in (lambda: mic.move_z(1000.0), mic.snap, mic.autofocus):
        with pytest.raises(DriverError, match="frame in hand"):
            call()
    mic.close()
    with pytest.raises(DriverError, match="closed"):
        mic.frames()


def test_reacquire_refuses_bad_retries_and_foreign_frames(tmp_path: Path) -> None:
    mic = microscope(tmp_path, wells=["A1"])
    frames = mic.frames()
    frame = next(frames)
    with pytest.raises(DriverError, match="≥ 1"):
        mic.reacquire(frame, 0)
    foreign = Frame(
        pixels=frame.pixels, coords=Coordinates(plate="P1", well="H12"), source=frame.source, acquired_at=0.0
    )
    with pytest.raises(DriverError, match="cannot re-acquire"):
        mic.reacquire(foreign, 1)
    with pytest.raises(DriverError, match="outside the drive's range"):
        mic.move_z(-5.0)
    assert list(frames) == []  # the plan is done; nothing is held any more
    with pytest.raises(DriverError, match="frame in hand"):
        mic.reacquire(frame, 1)


def test_restart_resumes_without_overwriting_raw_frames(tmp_path: Path) -> None:
    wells = ["A1", "A2"]
    first = microscope(tmp_path, wells=wells, timepoints=2, interval_s=60.0)
    it = first.frames()
    early = [next(it), next(it)]  # t = 0 done, then the process "dies"
    stamps = {f.source.uri: os.stat(f.source.uri).st_mtime_ns for f in early}

    second = microscope(tmp_path, wells=wells, timepoints=2, interval_s=60.0)
    frames = list(second.frames())
    assert [f.source.uri for f in frames[:2]] == [f.source.uri for f in early]
    for old, new in zip(early, frames[:2], strict=True):
        assert new.metadata["resumed"] is True and new.acquired_at == old.acquired_at
        np.testing.assert_array_equal(new.pixels, old.pixels)
        assert os.stat(new.source.uri).st_mtime_ns == stamps[new.source.uri]
    assert all("resumed" not in f.metadata for f in frames[2:])
    assert frames[2].scheduled_at == pytest.approx(START + 60.0)  # the original schedule

    with pytest.raises(DriverError, match="different acquisition"):
        next(microscope(tmp_path, wells=["B1"], timepoints=2, interval_s=60.0).frames())


def test_without_save_raw_nothing_is_written(tmp_path: Path) -> None:
    mic = microscope(tmp_path, wells=["A1"], save_raw=False)
    (frame,) = list(mic.frames())
    assert frame.source.uri == "sim://exp/P1/A1/p000/t0000_r0.tif"
    assert not any(tmp_path.iterdir())


def test_every_snap_has_fresh_noise_of_the_sensor(tmp_path: Path) -> None:
    cam = SimulatedCamera(settings(), clock=SimulatedClock())
    a = cam.snap((0, 0, 0), 0.0, noise_key=(0, 1)).astype(np.int64)
    b = cam.snap((0, 0, 0), 0.0, noise_key=(0, 2)).astype(np.int64)
    clean = cam.expected((0, 0, 0), 0.0).astype(np.int64)
    assert cam.cache_info().misses == 1  # one render, three frames
    diff = a - b
    # Shot + read noise at the background (8000 e⁻ at 0.31 e⁻/ADU): σ ≈ 290 ADU per frame.
    assert 250 < diff.std() / np.sqrt(2) < 340 and abs(diff.mean()) < 10
    assert abs(float(np.corrcoef((a - clean).ravel(), (b - clean).ravel())[0, 1])) < 0.05
    np.testing.assert_array_equal(cam.snap((0, 0, 0), 0.0, noise_key=(0, 1)), a)  # seeded


def test_render_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    entry = SHAPE[0] * SHAPE[1] * 2
    cam = SimulatedCamera(settings(), clock=SimulatedClock(), render_cache_bytes=2 * entry, specimen_cache=1)
    for d in (0.0, 10.0, 20.0, 20.1, 0.0):
        cam.snap((0, 0, 0), d, noise_key=(0,))
    info = cam.cache_info()
    assert info.entries == 2 and info.bytes == 2 * entry <= info.max_bytes
    assert (info.hits, info.misses) == (1, 4)  # 20.1 rounds to 20's render; 0.0 was evicted
    assert info.specimens == 1
    cam.close()
    assert cam.cache_info().entries == 0 and cam.cache_info().bytes == 0


def test_frames_resample_to_the_camera_shape(tmp_path: Path) -> None:
    cam = SimulatedCamera(settings(frame_shape=(600, 400), bit_depth=12), clock=SimulatedClock())
    frame = cam.snap((1, 2, 0), 0.0, noise_key=(0,))
    assert frame.shape == (600, 400) and frame.dtype == np.uint16 and frame.max() <= 4095
    # The paper's camera: 3.70 µm sensor pitch behind the 10x objective → 0.37 µm/px.
    assert max(cam.grid_shape) <= 512 and cam.pixel_size_um == pytest.approx(0.37, abs=0.001)
    assert cam.field_of_view_um == pytest.approx(600 * cam.pixel_size_um)
