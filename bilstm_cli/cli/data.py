"""`bilstm data list` and `bilstm data get`: the built-in data sets (api.datasets, api.download)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bilstm_cli import api
from bilstm_cli import console as ui
from bilstm_cli.cli.common import DatasetName, user_errors

data_app = typer.Typer(
    help="The built-in data sets (imdb, sst2): where they are, and downloading them.",
    no_args_is_help=True,
)


@data_app.command("list")
def data_list() -> None:
    """Show the built-in data sets, whether each is here (and where), or where it comes from."""
    rows = [(d["name"], d["status"], d["where"], d["description"])
            for d in api.datasets(warn=ui.warn)]
    out = ui.stdout_console()
    table = ui.datasets_table(rows, out)
    if isinstance(table, str):
        sys.stdout.write(table + "\n")  # tabs kept as tabs, for scripts
    else:
        out.print(table)


@data_app.command("get")
def data_get(
    name: Annotated[DatasetName, typer.Argument(help="The data set: imdb or sst2.")],
) -> None:
    """Download a built-in data set into the cache now (checksum verified); print its path."""
    with user_errors():
        path = api.download(name.value, log=ui.info, warn=ui.warn)
    sys.stdout.write(f"{path}\n")
