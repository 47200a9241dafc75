"""``refocusd report``: tables and pictures of what happened to every frame."""

from __future__ import annotations

from pathlib import Path

import typer

from refocusd.config import load_settings
from refocusd.daemon.cli.common import out_console, user_errors
from refocusd.daemon.cli.service_cmds import CONFIG_OPTION


def report(
    config: Path = CONFIG_OPTION,
    out: Path = typer.Option(Path("refocusd-report"), "--out", "-o", help="Folder for the CSV files and PNGs."),
) -> None:
    """Per experiment and plate: CSV, a plate map PNG and, for time-lapses, a timeline PNG."""
    from refocusd.daemon.report import write_report
    from refocusd.daemon.state.ledger import LEDGER_FILE, Ledger

    with user_errors():
        settings = load_settings(config)
        path = settings.service.state_dir / LEDGER_FILE
        with Ledger.open(path, read_only=True) as ledger:
            reports = write_report(ledger, out, rows=settings.plate.rows, columns=settings.plate.columns)
    if not reports:
        out_console.print(f"no frames in {path} yet", highlight=False)
    for r in reports:
        out_console.print(f"{r.experiment} · {r.plate}: {r.points} points in {r.wells} wells → {r.folder}",
                          highlight=False)
        for file in r.files:
            out_console.print(f"  {file}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
