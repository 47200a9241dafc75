"""Validated configuration models. Every section forbids unknown keys."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from refocusd.config.wells import parse_well

#: What ``[driver.nis] alert_command`` may contain, one list for the docs, the check and the alert.
ALERT_PLACEHOLDERS = ("path", "relative_path", "page", "t", "xy", "z", "c", "stage_x_um", "stage_y_um",
                      "stage_z_um", "p_focused", "label", "outcome", "sha256")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceSettings(Section):
    experiment: str = Field("experiment", min_length=1, description="Name carried by every log line.")
    state_dir: Path = Field(Path("refocusd-state"), description="Ledger database and run state.")
    output_root: Path = Field(Path("refocusd-output"), description="Reconstructions are written here.")


class PlateSettings(Section):
    rows: int = Field(8, ge=1, le=32)
    columns: int = Field(12, ge=1, le=48)
    name: str = "plate1"
    wells: list[str] | None = Field(None, description="Wells to image, e.g. ['A1', 'B3']; default all.")
    positions_per_well: int = Field(1, ge=1, le=100)
    well_spacing_um: float = Field(9000.0, gt=0)

    @model_validator(mode="after")
    def _wells_exist(self) -> PlateSettings:
        for well in self.wells or []:
            row, column = parse_well(well)  # ValueError names the bad well
            if row >= self.rows or column >= self.columns:
                raise ValueError(f"well {well!r} is outside a {self.rows}x{self.columns} plate")
        return self


class SimulatedMicroscopeSettings(Section):
    """The embedded default: a simulated automated microscope."""

    seed: int = 0
    data_dir: Path = Field(Path("refocusd-data"), description="Where the microscope saves raw frames.")
    save_raw: bool = Field(True, description="Save every raw frame like a microscope does (false: benchmarks).")
    frame_shape: tuple[int, int] = Field((512, 512), description="Camera frame (rows, columns).")
    camera_pixel_um: float | None = Field(
        None, gt=0, description="Sensor pixel pitch; default the paper's camera (3.70 µm, 0.37 µm/px at 10x)."
    )
    bit_depth: Literal[8, 12, 16] = 16
    objective: Literal["10x", "20x"] = "10x"
    autofocus_miss_rate: float = Field(8 / 120, ge=0, le=1, description="Paper: 8 defocused in 120.")
    autofocus_miss_um: tuple[float, float] = Field((10.0, 40.0), description="|defocus| range of a miss.")
    autofocus_capture_um: float | None = Field(
        None, gt=0, description="The device autofocus searches only ± this around its starting z (None: anywhere)."
    )
    focal_tilt_um_per_mm: tuple[float, float] = (1.5, -0.8)
    focal_drift_um_per_h: float = 2.0
    xy_speed_um_per_s: float = Field(20_000.0, gt=0)
    z_speed_um_per_s: float = Field(1_000.0, gt=0)
    settle_s: float = Field(0.02, ge=0)
    exposure_s: float = Field(0.01, ge=0)
    realtime: bool = Field(False, description="Wait in real time; false runs on a virtual clock.")


class NisSettings(Section):
    """A folder Nikon NIS-Elements exports into (TIFF, ND2); no stage control."""

    watch_dir: Path = Field(Path("nis-export"), description="Export folder (watched recursively, never written).")
    observer: Literal["native", "polling"] = Field(
        "native", description="'polling' for SMB/NFS shares, where native (inotify...) events never fire."
    )
    poll_interval_s: float = Field(1.0, gt=0, le=60, description="Polling observer's interval.")
    settle_s: float = Field(2.0, ge=0, le=600, description="Size and mtime unchanged this long: file complete.")
    give_up_s: float = Field(60.0, gt=0, description="A stable file that still does not parse is quarantined then.")
    rescan_interval_s: float = Field(30.0, gt=0, description="Full rescan: a missed event never means a missed file.")
    heartbeat_s: float = Field(60.0, gt=0, description="Interval of the watcher.heartbeat log line.")
    patterns: list[str] = Field(
        ["*.tif", "*.tiff", "*.nd2"], min_length=1, description="File names taken (case-insensitive)."
    )
    max_frame_mb: float = Field(1024.0, gt=0, description="Frames declaring more are refused, never allocated.")
    exit_when_idle_s: float | None = Field(None, gt=0, description="Stop after this long idle (batch use).")
    alert_command: list[str] | None = Field(
        None, description="Run for each defocused frame; " + " ".join("{" + n + "}" for n in ALERT_PLACEHOLDERS)
        + " are filled in."
    )
    alert_request_dir: Path | None = Field(None, description="Write one JSON request file per defocused frame here.")


    @field_validator("alert_command")
    @classmethod
    def _known_placeholders(cls, argv: list[str] | None) -> list[str] | None:
        for part in argv or []:
            try:
                names = {field for _, field, _, _ in string.Formatter().parse(part) if field is not None}
            except ValueError as exc:
                raise ValueError(f"{part!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
            unknown = sorted(n for n in names if n not in ALERT_PLACEHOLDERS)
            if unknown:
                raise ValueError(f"{part!r}: unknown placeholder {', '.join('{' + n + '}' for n in unknown)} "
                                 f"(known: {', '.join('{' + n + '}' for n in ALERT_PLACEHOLDERS)})")
        return argv


class MicroManagerSettings(Section):
    """Micro-Manager through pycromanager: refocusd runs the plan, or follows a dataset."""

    mode: Literal["run", "follow"] = Field(
        "run", description="run: refocusd runs the acquisition plan; follow: read a dataset Micro-Manager writes."
    )
    backend: Literal["headless", "bridge"] = Field(
        "headless", description="headless: start the core in-process (no Java); bridge: a running Micro-Manager."
    )
    mm_dir: Path | None = Field(None, description="Micro-Manager folder (device adapters); headless only.")
    config_file: Path | None = Field(None, description="Hardware configuration (.cfg); relative to mm_dir if bare.")
    bridge_port: int = Field(4827, ge=1, le=65535)
    camera_properties: dict[str, str] = Field(
        default_factory=dict, description="Camera properties set at start, e.g. {Mode = 'Fluorescent Beads'}."
    )
    plan: dict[str, Any] | None = Field(None, description="The acquisition plan as a useq.MDASequence table.")
    plan_file: Path | None = Field(None, description="Or a useq MDASequence in a YAML/JSON file.")
    positions_file: Path | None = Field(
        None, description="A Micro-Manager position list (.pos); its positions replace the plan's."
    )
    data_dir: Path = Field(Path("refocusd-mm-data"), description="Where run mode writes its NDTiff datasets.")
    dataset_name: str = Field("refocusd", min_length=1)
    autofocus_device: str = Field("", description="Core autofocus device for refocus.strategy='device'.")
    core_retries: int = Field(3, ge=0, le=20, description="Retries of a failing snap, stage move or autofocus.")
    core_backoff_s: float = Field(0.2, ge=0, description="First back-off; doubles on each retry.")
    connect_retries: int = Field(5, ge=0, le=100, description="Retries to reach Micro-Manager at start or after loss.")
    connect_backoff_s: float = Field(1.0, ge=0)
    image_timeout_s: float = Field(
        20.0, gt=0, description="A camera silent this long: the point is marked, not awaited."
    )
    lookahead: int = Field(
        1, ge=0, le=16, description="Events the engine may acquire ahead of the frame being decided (0: lockstep)."
    )
    follow_dataset: Path | None = Field(None, description="follow mode: the NDTiff dataset folder to follow.")
    follow_poll_s: float = Field(0.2, gt=0)
    follow_idle_timeout_s: float | None = Field(
        None, gt=0, description="follow mode: stop after this long without new images (None: follow until finished)."
    )

    @field_validator("plan")
    @classmethod
    def _plan_keys_known(cls, plan: dict[str, Any] | None) -> dict[str, Any] | None:
        # useq ignores unknown keys: a typo (stage_positon) would silently drop the positions.
        if plan is not None:
            import useq

            unknown = _unknown_keys(useq.MDASequence, plan, "plan")
            if unknown:
                raise ValueError("unknown key(s) in the acquisition plan: " + ", ".join(unknown))
        return plan

    @model_validator(mode="after")
    def _mode_has_inputs(self) -> MicroManagerSettings:
        if self.mode == "follow" and self.follow_dataset is None:
            raise ValueError("mode='follow' needs follow_dataset (the NDTiff folder Micro-Manager writes)")
        if self.mode == "run":
            if self.plan is not None and self.plan_file is not None:
                raise ValueError("give either plan or plan_file, not both")
            if self.backend == "headless" and (self.mm_dir is None or self.config_file is None):
                raise ValueError("backend='headless' needs mm_dir and config_file")
        return self


def _unknown_keys(model: type[BaseModel], data: dict[str, Any], prefix: str) -> list[str]:
    """Dotted keys of ``data`` that ``model`` (a pydantic model that ignores extras) does not know."""
    known: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        for key in {name, info.alias, info.validation_alias if isinstance(info.validation_alias, str) else None}:
            if key:
                known[key] = info.annotation
    found = []
    for key, value in data.items():
        if key not in known:
            found.append(f"{prefix}.{key}")
            continue
        submodels = _models_in(known[key])
        items = value if isinstance(value, list | tuple) else [value]
        for i, item in enumerate(items):
            if isinstance(item, dict) and submodels:
                where = f"{prefix}.{key}" + (f"[{i}]" if isinstance(value, list | tuple) else "")
                # A union (time plans): a key is unknown only if no candidate model knows it.
                per_model = [_unknown_keys(m, item, where) for m in submodels]
                found.extend(min(per_model, key=len))
    return found


# Any: a typing annotation (a class, a Union, a generic alias)
def _models_in(annotation: Any) -> list[type[BaseModel]]:
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


class DriverSettings(Section):
    kind: Literal["simulated", "nis", "micromanager"] = "simulated"
    simulated: SimulatedMicroscopeSettings = SimulatedMicroscopeSettings()
    nis: NisSettings = NisSettings()
    micromanager: MicroManagerSettings | None = None

    @model_validator(mode="after")
    def _section_for_kind(self) -> DriverSettings:
        if self.kind == "micromanager" and self.micromanager is None:
            raise ValueError("kind='micromanager' needs a [driver.micromanager] section")
        return self


    @property
    def source_root(self) -> Path | None:
        """The folder the active driver's raw frames live under; reconstructions mirror it."""
        roots: dict[str, Path | None] = {"simulated": self.simulated.data_dir, "nis": self.nis.watch_dir}
        if self.micromanager is not None:
            mm = self.micromanager
            roots["micromanager"] = mm.follow_dataset if mm.mode == "follow" else mm.data_dir
        return roots[self.kind]


class TimelapseSettings(Section):
    timepoints: int = Field(1, ge=1)
    interval_s: float = Field(600.0, gt=0)
    max_delay_s: float = Field(60.0, ge=0, description="A re-acquisition later than this misses the point.")


class ModelSettings(Section):
    classifier: str = Field(
        "default", description="'default', a model folder, a .keras path, or a focus-measure calibration .json."
    )
    reconstructor: str = "default"
    threshold: float = Field(0.5, gt=0, lt=1, description="p_focused below this is defocused.")
    device: Literal["auto", "cpu", "gpu"] = "auto"
    mixed_precision: bool = False
    batch_size: int = Field(16, ge=1, le=256)
    calibrate: Literal["off", "on_start"] = Field(
        "off", description="on_start: fine-tune the classifier on z-series of this sample before the plan "
        "(drivers with stage control)."
    )
    calibrate_positions: int = Field(3, ge=2, le=20, description="Positions of the plan the z-series are taken at.")
    calibrate_range_um: float = Field(10.0, gt=0, description="± µm of each z-series around the position's z.")
    calibrate_step_um: float = Field(1.0, gt=0, description="µm between the z-series' planes.")
    calibrate_tolerance_um: float = Field(1.5, gt=0, description="Planes this close to the focus peak are focused.")
    calibrate_epochs: int = Field(8, ge=1, le=200)
    pixel_size_um: float | None = Field(
        None, gt=0, le=1000,
        description="µm per pixel of frames whose source does not state it (the source's own "
        "value wins). Unknown: the classifier works in native pixels.",
    )
    crops: int | None = Field(
        None, ge=1, le=64, description="Crops per frame for crop classifiers (default: the model's)."
    )


class RefocusSettings(Section):
    strategy: Literal["predict", "sweep", "device"] = Field(
        "predict",
        description="predict: move by the classifier's defocus estimate (sweep as fallback); "
        "sweep: software z-sweep; device: the driver's own autofocus.",
    )
    max_retries: int = Field(2, ge=0, le=10)
    sweep_range_um: float = Field(50.0, gt=0, description="± range of the sweep; also the longest predicted move.")
    sweep_step_um: float = Field(10.0, gt=0, description="Coarse step of the sweep.")
    sweep_fine_step_um: float | None = Field(
        2.5, gt=0, description="Fine step around the best coarse plane (None: one pass at sweep_step_um)."
    )
    scorer: Literal[
        "classifier", "normalized_variance", "brenner", "vollath_f4", "gradient_energy"
    ] = "normalized_variance"
    predict_confident_sigma_um: float = Field(
        2.0, ge=0, description="An estimate this sure is trusted without a look (the re-acquisition checks it)."
    )
    predict_probe_um: float = Field(
        10.0, gt=0, description="Sign probe distance when the classifier gives no magnitude either."
    )
    predict_refine_planes: int = Field(2, ge=0, le=5, description="Planes spent refining before the sweep.")
    focus_memory: bool = Field(
        True, description="Learn the plate's focal surface (tilt, drift) from found foci; drivers that allow it "
        "start each field's focusing from it."
    )

    @model_validator(mode="after")
    def _step_fits_range(self) -> RefocusSettings:
        if self.sweep_step_um > self.sweep_range_um:
            raise ValueError(
                f"sweep_step_um={self.sweep_step_um} is larger than sweep_range_um={self.sweep_range_um}"
            )
        return self


class ReconstructionSettings(Section):
    backend: Literal["local", "dask"] = Field(
        "local", description="local: in this process; dask: on the Dask scheduler at dask_scheduler."
    )
    dask_scheduler: str | None = Field(None, description="e.g. tcp://10.0.0.5:8786 (backend = dask).")
    max_attempts: int = Field(3, ge=1, le=20)
    disk_full_retry_s: float = Field(
        30.0, gt=0, description="With the output volume full, jobs stay queued; retry this often."
    )
    workers: int | None = Field(
        None, ge=1, le=256,
        description="Jobs run at once. Default: 1 (local), the cluster's thread count (dask).",
    )
    write_not_improved: bool = Field(
        True,
        description="Write reconstructions whose quality score says they do not look better "
        "than their input (quality = not_improved). Recorded in the ledger and the log either way.",
    )
    min_logit_gain: float = Field(
        1.0, ge=0, le=20,
        description="Quality score: the classifier's log-odds of 'focused' must rise by this "
        "(or its verdict turn to focused).",
    )
    min_p_focused: float = Field(
        0.0, ge=0, le=1,
        description="Quality score: optional floor for the reconstruction's p_focused (0: off).",
    )
    min_sharpness_gain: float = Field(
        0.9, gt=0, le=10,
        description="Quality score: fine-detail sharpness after / before must reach this.",
    )
    defocus_tolerance_um: float = Field(
        1.0, ge=0, le=1000,
        description="Quality score: the classifier's defocus estimate may grow by this (or its sigma) at most.",
    )
    min_input_structure: float = Field(
        0.008, ge=0, le=1,
        description="Quality score: inputs with less contrast than this (empty fields) are not_improved.",
    )

    @model_validator(mode="after")
    def _dask_needs_a_scheduler(self) -> ReconstructionSettings:
        if self.backend == "dask" and not self.dask_scheduler:
            raise ValueError("backend = 'dask' needs dask_scheduler (e.g. 'tcp://HOST:8786')")
        return self


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    file: Path | None = Field(None, description="Optional rotating JSON log file.")
    file_max_bytes: int = Field(20_000_000, ge=10_000)
    file_backups: int = Field(5, ge=0)


class MetricsSettings(Section):
    """Prometheus endpoint. Loopback by default: the numbers say what the lab is imaging."""

    bind: str = Field("127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(0, ge=0, le=65535, description="0 disables the endpoint (e.g. 9464).")


class HealthSettings(Section):
    """When `refocusd status` calls the service unhealthy (reloadable with SIGHUP)."""

    interval_s: float = Field(10.0, gt=0, le=3600, description="How often the daemon writes health.json.")
    queue_stuck_after_s: float = Field(
        1800.0, gt=0, description="A queued reconstruction older than this means the queue is stuck."
    )
    min_free_gb: float = Field(2.0, ge=0, description="Free space on the output root below this is unhealthy.")
