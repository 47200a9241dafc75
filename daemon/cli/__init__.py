"""The ``refocusd`` command line. Only this package prints."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

import typer

from refocusd.daemon.cli import (
    calibrate_cmds,
    config_cmds,
    model_cmds,
    report_cmds,
    service_cmds,
    synth_cmds,
    tail_cmds,
    train_cmds,
)

app = typer.Typer(
    name="refocusd",
    help="Keep unattended microscopy usable: classify every frame, re-focus or reconstruct.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text prints as written: "[driver.micromanager]" is not markup
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"refocusd {version('refocusd')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """refocusd: focus watchdog and defocus reconstruction for automated microscopes."""


for module in (service_cmds, config_cmds, model_cmds, train_cmds, synth_cmds, tail_cmds, report_cmds, calibrate_cmds):
    module.register(app)


def main() -> None:
    app()
