"""``refocusd config check|example``."""

from __future__ import annotations

from pathlib import Path

import typer

from refocusd.config import example_text, load_settings
from refocusd.daemon.cli.common import out_console, user_errors

config_app = typer.Typer(help="Validate or print configuration files.", no_args_is_help=True)


@config_app.command("check")
def check(file: Path = typer.Argument(..., help="TOML configuration file.")) -> None:
    """Validate FILE (and REFOCUSD_* environment overrides); exit 2 naming every problem."""
    from refocusd.daemon.ops.preflight import check_writable

    with user_errors():
        settings = load_settings(file)
        check_writable(settings, source=str(file), create=False)  # creates nothing
    out_console.print(f"{file}: OK")


@config_app.command("example")
def example() -> None:
    """Print the annotated example configuration."""
    typer.echo(example_text(), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
