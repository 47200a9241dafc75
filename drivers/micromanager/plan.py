"""The acquisition plan: a ``useq.MDASequence`` turned into pycromanager events.

Each step is one image: its pycromanager event (axes ``time``/``position``/``z``/``channel``,
stage x/y/z, channel preset, exposure, earliest start), its coordinates for the ledger,
and when it is due, so the runner can tell whether a re-acquisition still counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import useq

from refocusd.config.settings import MicroManagerSettings, TimelapseSettings
from refocusd.drivers.base import Coordinates, DriverError
from refocusd.drivers.micromanager.position_list import read_position_list

RETRY_AXIS = "retry"


class PlanError(DriverError):
    """The acquisition plan is missing or invalid."""


@dataclass(frozen=True, slots=True)
class PlanStep:
    event: dict[str, Any]
    coords: Coordinates
    due_s: float  # seconds after the acquisition's start when this image is due
    deadline_s: float | None  # seconds after start by which a re-acquisition still counts

    @property
    def axes(self) -> dict[str, Any]:
        return self.event["axes"]

    def retry_event(self, retry: int, z_um: float | None) -> dict[str, Any]:
        """The same image again, tagged on the retry axis, at the re-focused z."""
        event = {k: v for k, v in self.event.items() if k != "min_start_time"}
        event["axes"] = {**self.axes, RETRY_AXIS: retry}
        if z_um is not None:
            event["z"] = float(z_um)
        return event


def load_sequence(settings: MicroManagerSettings) -> useq.MDASequence:
    """The plan; a Micro-Manager position list (``positions_file``) replaces its positions."""
    try:
        if settings.plan_file is not None:
            sequence = useq.MDASequence.from_file(Path(settings.plan_file))
        elif settings.plan is not None:
            sequence = useq.MDASequence.model_validate(settings.plan)
        elif settings.positions_file is not None:
            sequence = useq.MDASequence()
        else:
            raise PlanError(
                "run mode needs an acquisition plan: [driver.micromanager] plan, plan_file or positions_file"
            )
    except (OSError, ValueError) as exc:
        raise PlanError(f"invalid acquisition plan: {exc}") from exc
    if settings.positions_file is not None:
        positions = read_position_list(settings.positions_file)
        sequence = sequence.model_copy(update={"stage_positions": tuple(positions)})
    return sequence


def plan_steps(sequence: useq.MDASequence, timelapse: TimelapseSettings, *, plate: str = "") -> list[PlanStep]:
    """One step per image, in acquisition order.

    The deadline of a time-lapse point is ``max_delay_s`` after it is due, and never later
    than the next time point; a single pass (one time point) has none.
    """
    events = list(sequence.iter_events())
    loops = 1 + max((e.index.get("t", 0) for e in events), default=0)
    interval = _interval_s(sequence)
    steps = []
    for event in events:
        t = event.index.get("t", 0)
        due = float(event.min_start_time or 0.0)
        deadline = None
        if loops > 1:
            deadline = due + timelapse.max_delay_s
            if t + 1 < loops and interval:
                deadline = min(deadline, due + interval)
        steps.append(
            PlanStep(event=_pycromanager_event(event), coords=_coords(event, plate), due_s=due, deadline_s=deadline)
        )
    return steps


def _interval_s(sequence: useq.MDASequence) -> float | None:
    plan = sequence.time_plan
    interval = getattr(plan, "interval", None)  # getattr: only useq's interval time plans have one
    return None if interval is None else interval.total_seconds()


def _pycromanager_event(event: useq.MDAEvent) -> dict[str, Any]:
    axes: dict[str, Any] = {"time": event.index.get("t", 0), "position": event.index.get("p", 0)}
    if "z" in event.index:
        axes["z"] = event.index["z"]
    if "c" in event.index:
        axes["channel"] = event.channel.config if event.channel else event.index["c"]
    out: dict[str, Any] = {"axes": axes}
    if event.x_pos is not None and event.y_pos is not None:
        out["x"], out["y"] = float(event.x_pos), float(event.y_pos)
    if event.z_pos is not None:
        out["z"] = float(event.z_pos)
    if event.channel is not None:
        out["config_group"] = [event.channel.group, event.channel.config]
    if event.exposure is not None:
        out["exposure"] = float(event.exposure)
    if event.min_start_time:
        out["min_start_time"] = float(event.min_start_time)
    return out


def _coords(event: useq.MDAEvent, plate: str) -> Coordinates:
    p = event.index.get("p", 0)
    return Coordinates(
        plate=plate,
        well=event.pos_name or f"p{p}",
        position=p,
        t=event.index.get("t", 0),
        z_index=event.index.get("z", 0),
        channel=event.channel.config if event.channel else "",
    )


def axes_key(axes: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Hashable identity of an image in the dataset (the retry axis included)."""
    return tuple(sorted((k, v) for k, v in axes.items() if not (k == RETRY_AXIS and v == 0)))


__all__ = ["PlanError", "PlanStep", "RETRY_AXIS", "axes_key", "load_sequence", "plan_steps"]
