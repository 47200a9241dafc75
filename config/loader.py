"""Load settings from a TOML file with ``REFOCUSD_...`` environment overrides.

Environment variables use ``__`` between nested keys, e.g.
``REFOCUSD_MODELS__DEVICE=cpu`` or ``REFOCUSD_TIMELAPSE__MAX_DELAY_S=30``; they win over
the file. Every problem is reported at once, by dotted key and bad value.
"""

from __future__ import annotations

import json
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from refocusd.config.errors import UsageError
from refocusd.config.settings import (
    DriverSettings,
    HealthSettings,
    LoggingSettings,
    MetricsSettings,
    ModelSettings,
    ReconstructionSettings,
    RefocusSettings,
    ServiceSettings,
    TimelapseSettings,
    PlateSettings,
)

ENV_PREFIX = "REFOCUSD_"
CONFIG_ENV = "REFOCUSD_CONFIG"  # the configuration file's path (CLI --config), not a setting


class ConfigError(UsageError, ValueError):
    """The configuration is invalid. ``problems`` holds one line per bad key."""

    label = "configuration error"

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class Settings(BaseSettings):
    """The whole refocusd configuration (see ``refocusd config example``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    service: ServiceSettings = ServiceSettings()
    driver: DriverSettings = DriverSettings()
    plate: PlateSettings = PlateSettings()
    timelapse: TimelapseSettings = TimelapseSettings()
    models: ModelSettings = ModelSettings()
    refocus: RefocusSettings = RefocusSettings()
    reconstruction: ReconstructionSettings = ReconstructionSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    health: HealthSettings = HealthSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The loader reads REFOCUSD_* itself (environment_overrides): it can name the variable
        # behind every problem and read values written the natural way. Only init kwargs here.
        return (init_settings,)


def example_text() -> str:
    """The annotated example configuration shipped with the package."""
    return resources.files("refocusd.config").joinpath("refocusd.toml").read_text("utf-8")


def load_settings(path: Path | None = None, *, overrides: dict[str, Any] | None = None) -> Settings:
    """Read ``path`` (or only defaults and environment when ``None``) and validate it.

    Relative paths inside the file are resolved against the file's folder.
    """
    source = str(path) if path is not None else "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, ["file not found"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, [f"cannot read: {exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    if overrides:
        data = deep_merge(data, overrides)
    problems = _unknown_environment_sections()
    if problems:
        raise ConfigError("environment", problems)
    from_env, variables, env_problems = environment_overrides()
    if env_problems:
        raise ConfigError("environment", env_problems)
    data = deep_merge(data, from_env)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        file_problems, env_problems = _describe(exc, variables)
        if file_problems:
            raise ConfigError(source, file_problems + env_problems) from None
        raise ConfigError("environment", env_problems) from None
    if path is not None:
        settings = _resolve_paths(settings, Path(path).resolve().parent)
    conflict = writes_into_watched_folder(settings)
    if conflict:
        raise ConfigError(source, [conflict])
    return settings


def writes_into_watched_folder(settings: Settings) -> str | None:
    """A folder refocusd writes to that lies inside the NIS export folder it only reads."""
    if settings.driver.kind != "nis":
        return None
    nis = settings.driver.nis
    root = nis.watch_dir.resolve()
    written = {
        "service.output_root": settings.service.output_root,
        "service.state_dir": settings.service.state_dir,
        "driver.nis.alert_request_dir": nis.alert_request_dir,
    }
    for key, folder in written.items():
        if folder is not None and folder.resolve().is_relative_to(root):
            return f"{key}: {folder} is inside driver.nis.watch_dir {nis.watch_dir}; refocusd never writes there"
    return None


def _unknown_environment_sections() -> list[str]:
    # pydantic-settings silently ignores REFOCUSD_* variables that match no section;
    # a typo there must not go unnoticed.
    sections = set(Settings.model_fields)
    return [
        f"{name}: unknown setting (sections are {', '.join(sorted(sections))})"
        for name in os.environ
        if name.upper().startswith(ENV_PREFIX) and name.upper() != CONFIG_ENV
        and name[len(ENV_PREFIX):].split("__")[0].lower() not in sections
    ]


def environment_overrides() -> tuple[dict[str, Any], dict[tuple[str, ...], str], list[str]]:
    """``REFOCUSD_A__B=value`` variables as nested settings, which variable set which key,
    and the problems found (one line each, naming the variable).

    Values are read the way people write them: a list setting takes JSON (``["*.tif"]``)
    or a comma-separated string (``*.tif,*.nd2``); a table takes JSON; anything else is
    the string itself, converted and checked by the settings models.
    """
    overrides: dict[str, Any] = {}
    variables: dict[tuple[str, ...], str] = {}
    problems: list[str] = []
    for name, raw in sorted(os.environ.items()):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_ENV:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
        if path[0] not in Settings.model_fields:
            continue  # reported by _unknown_environment_sections
        if any(not part for part in path):
            problems.append(f"{name}: empty key between '__' separators")
            continue
        kind = _kind_at(path)
        if kind == "table":
            try:
                # Any: whatever JSON the environment variable holds, checked just below
                value: Any = json.loads(raw)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                problems.append(f"{name}: {'.'.join(path)} is a section, not a value; set one of its keys "
                                f"as {name}__<KEY> (or give the whole table as a JSON object)")
                continue
        elif kind == "list":
            try:
                value = json.loads(raw)
            except ValueError:
                value = [item.strip() for item in raw.split(",") if item.strip()]
            if isinstance(value, str):
                value = [value]
        else:
            value = raw
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value
            variables[path] = name
    return overrides, variables, problems


def _kind_at(path: tuple[str, ...]) -> str:
    """'table', 'list' or 'value': what the setting at ``path`` holds ('value' when unknown)."""
    model: type[BaseModel] | None = Settings
    # Any: a typing annotation (a class, a Union, a generic alias)
    annotation: Any = None
    for part in path:
        if model is None or part not in model.model_fields:
            return "value"
        annotation = model.model_fields[part].annotation
        model = _model_in(annotation)
    if model is not None:
        return "table"
    kinds = {get_origin(a) for a in (annotation, *get_args(annotation))}
    return "list" if kinds & {list, tuple, set} else "value"


# Any: a typing annotation (a class, a Union, a generic alias)
def _model_in(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _describe(exc: ValidationError, variables: dict[tuple[str, ...], str] | None = None) -> tuple[list[str], list[str]]:
    """(problems of the file or defaults, problems of environment variables), one line each."""
    variables = variables or {}
    problems: list[str] = []
    from_env: list[str] = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(loc) or "<root>"
        variable = next((variables[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in variables), None)
        if error["type"] == "extra_forbidden":
            line = f"{key}: unknown key (value {error['input']!r})"
        elif error["type"] == "missing":
            line = f"{key}: required"
        else:
            line = f"{key}: {error['msg']} (got {error['input']!r})"
        if variable is None and error["type"] == "extra_forbidden":
            # An unknown key set by a variable sits under a known section: find its variable.
            variable = next((v for p, v in variables.items() if p == loc), None)
        if variable is not None:
            from_env.append(f"{variable}: {line}")
        else:
            problems.append(line)
    return problems, from_env


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def resolved(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    service = settings.service.model_copy(
        update={
            "state_dir": resolved(settings.service.state_dir),
            "output_root": resolved(settings.service.output_root),
        }
    )
    logging = settings.logging.model_copy(update={"file": resolved(settings.logging.file)})
    simulated = settings.driver.simulated.model_copy(
        update={"data_dir": resolved(settings.driver.simulated.data_dir)}
    )
    nis = settings.driver.nis.model_copy(
        update={
            "watch_dir": resolved(settings.driver.nis.watch_dir),
            "alert_request_dir": resolved(settings.driver.nis.alert_request_dir),
        }
    )
    driver_update: dict[str, Any] = {"simulated": simulated, "nis": nis}
    mm = settings.driver.micromanager
    if mm is not None:
        driver_update["micromanager"] = mm.model_copy(
            update={
                "mm_dir": resolved(mm.mm_dir),
                # a bare .cfg name is looked up in mm_dir by the driver; any other relative path is the user's
                "config_file": mm.config_file if mm.config_file is None or len(mm.config_file.parts) == 1
                else resolved(mm.config_file),
                "plan_file": resolved(mm.plan_file),
                "positions_file": resolved(mm.positions_file),
                "data_dir": resolved(mm.data_dir),
                "follow_dataset": resolved(mm.follow_dataset),
            }
        )
    driver = settings.driver.model_copy(update=driver_update)
    return settings.model_copy(update={"service": service, "logging": logging, "driver": driver})
