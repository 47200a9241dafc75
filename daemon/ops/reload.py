"""SIGHUP: read the configuration file again and apply what can change while running.

Reloadable: ``logging.level``, ``models.threshold`` and the ``[health]`` section. Anything
else that changed is named in the log as needing a restart (the driver, models and paths
are wired at start-up). An invalid file is rejected with every reason logged, and the
running configuration stays in force.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refocusd.config import ConfigError, Settings, load_settings

RELOADABLE_PREFIXES = ("logging.level", "models.threshold", "health.")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    settings: Settings  # the running settings with the reloadable changes applied
    applied: dict[str, tuple[Any, Any]]  # key -> (old, new)
    needs_restart: list[str]


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:  # Any: JSON values of a settings dump
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def plan_reload(path: Path, current: Settings) -> ReloadPlan:
    """Validate ``path`` and split its differences from ``current``. Raises ConfigError."""
    new = load_settings(path)
    old_flat = flatten(current.model_dump(mode="json"))
    new_flat = flatten(new.model_dump(mode="json"))
    changed = sorted(k for k in old_flat.keys() | new_flat.keys() if old_flat.get(k) != new_flat.get(k))
    applied = {k: (old_flat.get(k), new_flat.get(k)) for k in changed if k.startswith(RELOADABLE_PREFIXES)}
    needs_restart = [k for k in changed if k not in applied]
    merged = current.model_copy(
        update={
            "health": new.health,
            "logging": current.logging.model_copy(update={"level": new.logging.level}),
            "models": current.models.model_copy(update={"threshold": new.models.threshold}),
        }
    )
    return ReloadPlan(merged, applied, needs_restart)


__all__ = ["ConfigError", "ReloadPlan", "plan_reload", "RELOADABLE_PREFIXES"]
