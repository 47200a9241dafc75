"""The report's pictures (matplotlib, Agg): a plate map and a time-lapse timeline.

Plate map: one circle per well, filled with the colour of the well's worst frame
(failed > pending > reconstructed > re-acquired > accepted; light grey: not imaged), with
"n/total" frames of that category inside. The layout is fixed in pixels
(:class:`PlateMapLayout`) so a reader, or a test, can find any well in the PNG.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import matplotlib

matplotlib.use("Agg")  # files only, never a window (and no display on a server)

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Circle, Patch  # noqa: E402

from refocusd.config.wells import row_name, well_place  # noqa: E402
from refocusd.daemon.report.data import CATEGORIES, PlateData, worst  # noqa: E402

#: Colour-blind-safe (Okabe-Ito) fills, as RGB hex.
COLOURS: Final = {
    "accepted": "#009E73",  # green
    "reacquired": "#56B4E9",  # sky blue
    "reconstructed": "#E69F00",  # orange
    "not_improved": "#CC79A7",  # reddish purple: reconstructed, does not look better
    "pending": "#999999",  # grey: queued or under way
    "failed": "#D55E00",  # vermilion
    "not imaged": "#EEEEEE",
}
LABELS: Final = {
    "accepted": "accepted",
    "reacquired": "re-acquired",
    "reconstructed": "reconstructed",
    "not_improved": "reconstructed, not improved",
    "pending": "pending",
    "failed": "failed",
}
_DPI: Final = 100


def well_sort_key(well: str) -> tuple[int, int, str]:
    """Plate order for wells, then the other position names by name."""
    place = well_place(well)
    return (*place, well) if place is not None else (1 << 30, 0, well)


@dataclass(frozen=True, slots=True)
class PlateMapLayout:
    rows: int
    columns: int

    @property
    def cell(self) -> int:
        return max(28, min(64, 1400 // self.columns))

    left: int = 50
    top: int = 80
    right: int = 300
    bottom: int = 20

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the PNG in pixels."""
        return (self.left + self.columns * self.cell + self.right, self.top + self.rows * self.cell + self.bottom)

    def centre_px(self, well: str) -> tuple[int, int]:
        """(x, y) pixel of a well's centre, y counted from the top of the PNG."""
        place = well_place(well)
        if place is None:
            raise ValueError(f"{well!r} is not a plate well")
        row, col = place
        return (round(self.left + (col + 0.5) * self.cell), round(self.top + (row + 0.5) * self.cell))

    @property
    def radius_px(self) -> float:
        return 0.44 * self.cell


def plate_map(plate: PlateData, layout: PlateMapLayout, path: Path) -> Path:
    width, height = layout.size
    fig = plt.figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    ax = fig.add_axes((layout.left / width, layout.bottom / height,
                       layout.columns * layout.cell / width, layout.rows * layout.cell / height))
    ax.set_xlim(-0.5, layout.columns - 0.5)
    ax.set_ylim(layout.rows - 0.5, -0.5)
    ax.set_aspect("equal")
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xticks(range(layout.columns), [str(c + 1) for c in range(layout.columns)])
    ax.set_yticks(range(layout.rows), [row_name(r) for r in range(layout.rows)])
    ax.tick_params(length=0, labeltop=True, labelbottom=False, labelsize=9)
    font = max(5.0, layout.cell * 0.15)
    wells = plate.by_well()
    placed = {w: c for w, c in wells.items() if well_place(w) is not None}
    for well, counts in placed.items():
        row, col = well_place(well)  # type: ignore[misc] - filtered above
        state = worst(counts)
        total = sum(counts.values())
        ax.add_patch(Circle((col, row), 0.44, facecolor=COLOURS[state], edgecolor="none"))
        text = str(total) if state == "accepted" else f"{counts[state]}/{total}"
        ax.text(col, row, text, ha="center", va="center", fontsize=font,
                color="white" if state in ("failed", "accepted") else "black")
    imaged = {well_place(w) for w in placed}
    for row in range(layout.rows):
        for col in range(layout.columns):
            if (row, col) not in imaged:
                ax.add_patch(Circle((col, row), 0.44, facecolor=COLOURS["not imaged"], edgecolor="#CCCCCC"))
    frames = Counter(p.category for p in plate.points)
    by_state = Counter(worst(c) for c in wells.values())
    handles = [
        Patch(facecolor=COLOURS[c], label=f"{LABELS[c]}: {frames[c]} frames, {by_state[c]} wells") for c in CATEGORIES
    ] + [Patch(facecolor=COLOURS["not imaged"], edgecolor="#CCCCCC", label="not imaged")]
    fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(1 - 8 / width, 1 - layout.top / height),
               frameon=False, fontsize=9, title="well colour = its worst frame\nnumber = frames in that state / all",
               title_fontsize=8, alignment="left")
    fig.suptitle(f"{plate.experiment} · {plate.plate}: {len(plate.points)} points in {len(wells)} wells",
                 x=layout.left / width, y=1 - 10 / height, ha="left", va="top", fontsize=12, fontweight="bold")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def timeline(plate: PlateData, path: Path) -> Path:
    """One row per position, one mark per time point; missing points as hollow circles."""
    sites = sorted({p.site for p in plate.points}, key=lambda s: (well_sort_key(s[0]), s[1]))
    index = {site: i for i, site in enumerate(sites)}
    n_t = plate.timepoints
    fig_w = min(20.0, max(8.0, 4.5 + 0.35 * n_t))
    fig_h = 1.6 + 0.28 * len(sites)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=_DPI)
    seen = set()
    for category in reversed(CATEGORIES):
        points = [p for p in plate.points if p.category == category]
        if not points:
            continue
        missed = [p.reason == "missed_timepoint" for p in points]
        ax.scatter([p.t for p in points], [index[p.site] for p in points], s=70, marker="s",
                   c=COLOURS[category], edgecolors=["black" if m else "none" for m in missed], linewidths=1.5)
        seen.update((p.site, p.t) for p in points)
    absent = [(t, index[s]) for s in sites for t in range(n_t) if (s, t) not in seen]
    if absent:
        ax.scatter(*zip(*absent), s=70, marker="o", facecolors="none", edgecolors="#444444")
    ax.set_yticks(range(len(sites)), [f"{w} #{pos}" for w, pos in sites], fontsize=8)
    ax.set_ylim(len(sites) - 0.5, -0.5)
    ax.set_xlabel("time point")
    ax.set_xticks(range(0, n_t, max(1, n_t // 20)))
    ax.set_xlim(-0.7, n_t - 0.3)
    ax.grid(axis="x", color="#EEEEEE")
    ax.set_axisbelow(True)
    counts = Counter(p.category for p in plate.points)
    handles = [Patch(facecolor=COLOURS[c], label=f"{LABELS[c]} ({counts[c]})") for c in CATEGORIES if counts[c]]
    handles.append(Line2D([], [], marker="s", linestyle="none", markerfacecolor="white", markeredgecolor="black",
                          markeredgewidth=1.5, markersize=8, label="black edge: time point missed for re-focus"))
    handles.append(Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor="#444444",
                          markersize=8, label=f"no frame recorded ({len(absent)})"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    ax.set_title(f"{plate.experiment} · {plate.plate}: time-lapse, {len(sites)} positions × {n_t} points",
                 loc="left", fontsize=11, fontweight="bold")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path
