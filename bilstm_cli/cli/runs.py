"""`bilstm runs`: a folder of run folders -> api.runs -> a table (terminal), TSV or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from bilstm_cli import api
from bilstm_cli import console as ui
from bilstm_cli.cli.common import user_errors


def list_runs(
    folder: Annotated[Path, typer.Argument(help="The folder holding run folders.")]
        = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Write the list as JSON to stdout.")]
        = False,
) -> None:
    """List run folders: data set, uni/bi, epochs, best validation and test accuracy, state.

    The state is running, finished, interrupted or failed; * marks `latest`."""
    with user_errors():
        runs = api.runs(folder)
    if as_json:
        sys.stdout.write(json.dumps(runs, indent=2) + "\n")
        return
    out = ui.stdout_console()
    if not runs:
        ui.info(f"no run folders in {folder}")
    elif out.is_terminal:
        out.print(ui.runs_table(runs, out))
    else:
        sys.stdout.write(ui.runs_tsv(runs))
