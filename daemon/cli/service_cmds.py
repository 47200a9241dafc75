"""``refocusd demo``, ``refocusd run`` and ``refocusd status``."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from refocusd.config import Settings, load_settings
from refocusd.config.loader import CONFIG_ENV, deep_merge
from refocusd.daemon.cli.common import (
    EXIT_UNHEALTHY,
    err_console,
    out_console,
    print_json,
    user_errors,
)
from refocusd.daemon.state.ledger import LEDGER_FILE
from refocusd.daemon.ops.logging import configure_logging
from refocusd.daemon.vocabulary import Outcome

if TYPE_CHECKING:
    from refocusd.daemon.core.runner import FrameOutcome
    from refocusd.daemon.service import RunSummary

# The service modules are imported inside the commands so that `refocusd config ...`
# and `--help` start instantly (the ledger module is light: sqlite3 and the contracts).

DEMO_MARKER = ".refocusd-demo"
# The systemd unit passes the file through REFOCUSD_CONFIG (systemd/refocusd.env).
CONFIG_OPTION = typer.Option(..., "--config", "-c", envvar=CONFIG_ENV, help="TOML configuration file.")


def _configure_logging(settings: Settings, *, console_level: str | None = None) -> None:
    lg = settings.logging
    configure_logging(
        level=lg.level,
        fmt=lg.format,
        file=lg.file,
        file_max_bytes=lg.file_max_bytes,
        file_backups=lg.file_backups,
        console_level=console_level,
    )


def _run_service(
    settings: Settings,
    stop: threading.Event,
    progress: Progress | None,
    label: str,
    *,
    config_path: Path | None = None,
    reload_requested: threading.Event | None = None,
) -> RunSummary:
    total = len(settings.plate.wells or []) * settings.plate.positions_per_well * settings.timelapse.timepoints
    task = progress.add_task(label, total=total or None) if progress is not None else None
    tally = Counter[str]()

    def on_outcome(outcome: FrameOutcome) -> None:
        if progress is None or task is None:
            return
        tally[outcome.outcome] += 1
        progress.update(
            task,
            advance=1,
            description=(
                f"{label}  re-acquired {tally[Outcome.REACQUIRED]}"
                f"  queued {tally[Outcome.RECONSTRUCTION_QUEUED]}"
            ),
        )

    from refocusd.daemon.service import Service

    service = Service(
        settings, stop=stop, on_outcome=on_outcome, config_path=config_path, reload_requested=reload_requested
    )
    try:
        service.start()
        return service.run()
    finally:
        service.close()


def _demo_settings(out: Path, *, wells: int, timepoints: int, seed: int, phase: str) -> Settings:
    rows, cols = 8, 12
    names = [f"{chr(ord('A') + i // cols)}{i % cols + 1}" for i in range(rows * cols)]
    common = {
        "service": {"state_dir": str(out / "state"), "output_root": str(out / "reconstructions")},
        "driver": {"simulated": {"seed": seed, "data_dir": str(out / "data")}},
        "logging": {"file": str(out / "logs" / "refocusd.jsonl")},
    }
    if phase == "plate-scan":
        specific = {
            "service": {"experiment": "demo-plate-scan"},
            "plate": {"name": "plate1", "wells": names[:wells]},
            "timelapse": {"timepoints": 1},
        }
    else:
        # Points 5 minutes apart that must be taken within 0.5 s of schedule (fast
        # dynamics): a z-sweep cannot make it, so defocused points are reconstructed.
        specific = {
            "service": {"experiment": "demo-time-lapse"},
            "plate": {"name": "plate2", "wells": names[: max(1, min(4, wells))], "positions_per_well": 3},
            "timelapse": {"timepoints": timepoints, "interval_s": 300.0, "max_delay_s": 0.5},
            "driver": {"simulated": {"seed": seed + 1, "autofocus_miss_rate": 0.15}},
        }
    return load_settings(None, overrides=deep_merge(common, specific))


def _prepare_demo_dir(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).exists():
            err_console.print(
                f"[bold red]error:[/] {out} is not empty and was not made by `refocusd demo`; "
                "choose another --out"
            )
            raise typer.Exit(2)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by refocusd demo; safe to delete\n")


def demo(
    out: Path = typer.Option(Path("refocusd-demo"), "--out", help="Folder for data, ledger, logs, reconstructions."),
    wells: int = typer.Option(24, min=1, max=96, help="Wells in the plate scan."),
    timepoints: int = typer.Option(4, min=1, max=100, help="Time points in the time-lapse."),
    seed: int = typer.Option(0, help="Seed of the simulated sample and autofocus misses."),
    json_output: bool = typer.Option(False, "--json", help="End with one JSON summary line."),
) -> None:
    """A short plate scan and time-lapse on the simulated microscope."""
    import time

    _prepare_demo_dir(out)
    began = time.perf_counter()
    stop = _install_signal_handlers()
    summaries: list[RunSummary] = []
    with user_errors():
        phases = [
            _demo_settings(out, wells=wells, timepoints=timepoints, seed=seed, phase=p)
            for p in ("plate-scan", "time-lapse")
        ]
        _configure_logging(phases[0], console_level="error")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
            disable=json_output,
        ) as progress:
            for settings in phases:
                if stop.is_set():
                    break
                summaries.append(_run_service(settings, stop, progress, settings.service.experiment))
    totals = _totals(summaries, wall_s=time.perf_counter() - began)
    totals["out"] = str(out)
    if json_output:
        print_json(totals)
        return
    out_console.print(_demo_table(summaries, totals))
    # One path per line: the summary stays readable in an 80-column terminal.
    out_console.print(f"wall time    {totals['wall_s']:.1f} s", highlight=False)
    for name, path in (("ledger", out / "state" / LEDGER_FILE), ("outputs", out / "reconstructions"),
                       ("logs", out / "logs" / "refocusd.jsonl")):
        out_console.print(f"{name:<12} {path}", highlight=False, soft_wrap=True)


#: The demo table's rows: RunSummary field → label.
_DEMO_ROWS = {"frames": "frames", "focused": "focused", "defocused": "defocused", "reacquired": "re-acquired",
              "reconstructed": "reconstructed", "not_improved": "not improved", "quarantined": "quarantined"}


def _demo_table(summaries: list[RunSummary], totals: dict[str, object]) -> Table:
    """One row per count, one column per phase: narrow enough for 80 columns."""
    table = Table(title="refocusd demo", title_justify="left")
    table.add_column("")
    phases = ("plate scan", "time-lapse")[: len(summaries)]
    for name in (*phases, "total"):
        table.add_column(name, justify="right", no_wrap=True)
    rows = [s.as_dict() for s in summaries]
    for key, label in _DEMO_ROWS.items():
        table.add_row(label, *(str(row[key]) for row in rows), str(totals[key]))
    return table


def _totals(summaries: list[RunSummary], *, wall_s: float) -> dict[str, object]:
    keys = ("frames", "focused", "defocused", "reacquired", "reconstructed", "not_improved",
            "reconstruction_failed", "queued", "quarantined")
    rows = [s.as_dict() for s in summaries]
    totals: dict[str, object] = {k: sum(int(row[k]) for row in rows) for k in keys}
    totals["wall_s"] = round(wall_s, 3)
    totals["runs"] = [s.run_id for s in summaries]
    return totals


def _install_signal_handlers() -> threading.Event:
    """SIGTERM/SIGINT only set a flag: the frame in hand is finished, the queue stays."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _install_reload_handler() -> threading.Event:
    """SIGHUP only sets a flag; the supervision thread re-reads the file (daemon/ops/reload.py)."""
    requested = threading.Event()
    signal.signal(signal.SIGHUP, lambda _signum, _frame: requested.set())
    return requested


def run(config: Path = CONFIG_OPTION) -> None:
    """Run the service until its plan completes or SIGTERM/SIGINT; SIGHUP reloads (README)."""
    import os

    from refocusd.daemon.ops.preflight import SERVICE_UMASK, check_writable

    reload_requested = _install_reload_handler()  # first: SIGHUP's default action is to exit
    os.umask(SERVICE_UMASK)  # as the systemd unit's UMask=, also when started by hand
    with user_errors():
        settings = load_settings(config)
        check_writable(settings, source=str(config), create=True)  # before logging and models
        _configure_logging(settings)
        stop = _install_signal_handlers()
        summary = _run_service(
            settings, stop, None, settings.service.experiment,
            config_path=config, reload_requested=reload_requested,
        )
    print_json({"event": "run.summary", **summary.as_dict(), "stopped": stop.is_set()})


def status(
    config: Path = CONFIG_OPTION,
    json_output: bool = typer.Option(False, "--json", help="One JSON object."),
    require_running: bool = typer.Option(
        False, "--require-running", help="Also unhealthy when the daemon is not running (stopped or never started)."
    ),
) -> None:
    """Counts, queue depth, recent errors and health; exit 1 when unhealthy (for monitoring)."""
    from refocusd.daemon.ops import health

    configure_logging(level="warning")  # stdout is the report; library notes stay on stderr
    with user_errors():
        settings = load_settings(config)
        path = settings.service.state_dir / LEDGER_FILE
        snapshot = health.read_health(settings.service.state_dir / health.HEALTH_FILE)
        with _ledger_or_empty(path) as ledger:
            report = {
                "ledger": str(path),
                "counts": ledger.counts(),
                "queue_depth": ledger.queue_depth(),
                "recent_errors": ledger.recent_errors(10),
            }
            oldest_job = ledger.oldest_pending_job_at()
    alive = None
    if snapshot is not None:
        # What status can measure itself is fresher than the daemon's last write.
        snapshot = health.refreshed(
            snapshot,
            disk_free=health.disk_free_bytes(settings.service.output_root),
            queue_depth=report["queue_depth"],
            oldest_pending_job_at=oldest_job,
        )
        alive = health.pid_alive(snapshot.pid) if snapshot.state != "stopped" else None
    # Thresholds from the file, i.e. what the daemon uses after its next SIGHUP.
    problems = health.problems(snapshot, settings.health, require_running=require_running, pid_alive=alive)
    report["health"] = None if snapshot is None else snapshot.as_dict()
    report["healthy"] = not problems
    report["problems"] = problems
    if json_output:
        print_json(report)
    else:
        _print_status(path, report, snapshot)
    if problems:
        raise typer.Exit(EXIT_UNHEALTHY)


@contextmanager
def _ledger_or_empty(path: Path) -> Iterator[Any]:
    """The ledger read-only; where none was ever made, an empty one (all counts zero) made
    aside in a temporary folder, so that status never writes into the state folder."""
    from refocusd.daemon.state.ledger import Ledger

    if path.exists():
        with Ledger.open(path, read_only=True) as ledger:
            yield ledger
        return
    empty = tempfile.TemporaryDirectory(prefix="refocusd-status-")
    with empty as folder, Ledger.open(Path(folder) / path.name) as ledger:
        yield ledger


def _print_status(path: Path, report: dict, snapshot) -> None:
    import datetime as dt

    table = Table(title=f"refocusd status — {path}")
    table.add_column("count")
    table.add_column("value", justify="right")
    for key, value in report["counts"].items():
        table.add_row(key, str(value))
    table.add_row("queue depth", str(report["queue_depth"]))
    out_console.print(table)
    if snapshot is None:
        out_console.print("daemon: no health file (never run with this state folder)")
    else:
        written = dt.datetime.fromtimestamp(snapshot.written_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        driver = {True: "up", False: "DOWN", None: "not reported"}[snapshot.driver_up]
        out_console.print(
            f"daemon: {snapshot.state} (pid {snapshot.pid}, health written {written}) · device {snapshot.device} · "
            f"driver {driver} · frames this run {snapshot.frames_processed}"
            + (f" · metrics {snapshot.metrics_url}" if snapshot.metrics_url else ""),
            highlight=False,
        )
    if report["problems"]:
        for problem in report["problems"]:
            out_console.print(f"[bold red]unhealthy[/] {problem}", highlight=False)
    else:
        out_console.print("[green]healthy[/]")
    for error in report["recent_errors"]:
        out_console.print(f"[red]error[/] {error}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("run")(run)
    app.command("status")(status)
