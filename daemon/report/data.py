"""What the report shows, read from the ledger: one row per acquired point, grouped by plate."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from refocusd.daemon.vocabulary import Category, category_of

#: Report categories, most severe first: a well takes the colour of its worst frame.
CATEGORIES: Final = tuple(c.value for c in Category)


def category(outcome: str) -> str:
    return category_of(outcome).value


def worst(categories: Iterable[str]) -> str:
    present = set(categories)
    return next(c for c in CATEGORIES if c in present)


@dataclass(frozen=True, slots=True)
class PointRow:
    """One acquired point (an original frame; its re-acquisitions are folded in)."""

    experiment: str
    plate: str
    well: str
    position: int
    t: int
    category: str
    outcome: str
    label: str | None
    p_focused: float | None
    reason: str | None
    reacquisitions: int
    acquired_at: str
    source: str

    @property
    def site(self) -> tuple[str, int]:
        return (self.well, self.position)


@dataclass(slots=True)
class PlateData:
    experiment: str
    plate: str
    points: list[PointRow] = field(default_factory=list)

    def by_well(self) -> dict[str, Counter[str]]:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for p in self.points:
            counts[p.well][p.category] += 1
        return dict(counts)

    @property
    def timepoints(self) -> int:
        return 1 + max((p.t for p in self.points), default=0)


def plates_from_frames(frames: Iterable[dict[str, Any]]) -> list[PlateData]:
    """Group the ledger's frame rows by (experiment, plate); re-acquisitions counted on their original."""
    rows = list(frames)
    children = Counter(r["parent_id"] for r in rows if r["parent_id"] is not None)
    plates: dict[tuple[str, str], PlateData] = {}
    for r in rows:
        if r["parent_id"] is not None:
            continue
        key = (r["experiment"], r["plate"])
        plate = plates.setdefault(key, PlateData(*key))
        acquired = r["acquired_at"]
        plate.points.append(
            PointRow(
                experiment=r["experiment"],
                plate=r["plate"],
                well=r["well"],
                position=int(r["position"]),
                t=int(r["t"]),
                category=category(r["outcome"]),
                outcome=r["outcome"],
                label=r["label"],
                p_focused=None if r["p_focused"] is None else round(float(r["p_focused"]), 4),
                reason=r["reason"],
                reacquisitions=children.get(r["id"], 0),
                acquired_at="" if acquired is None else dt.datetime.fromtimestamp(acquired, dt.UTC).isoformat(),
                source=r["source_uri"],
            )
        )
    for plate in plates.values():
        plate.points.sort(key=lambda p: (p.well, p.position, p.t))
    return [plates[k] for k in sorted(plates)]
