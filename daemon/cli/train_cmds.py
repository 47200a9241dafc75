"""(placeholder: commands are added by the owner of this module)"""

import typer


def register(app: typer.Typer) -> None:
    pass
