"""The `bilstm` command line: one module per command, each parsing its options, calling the
Python API (bilstm_cli.api) and printing.

TensorFlow is imported only by the commands that run a model, so `--help`, `--version` and
config errors answer at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from bilstm_cli import __version__
from bilstm_cli.cli.compare import compare
from bilstm_cli.cli.data import data_app
from bilstm_cli.cli.evaluate import evaluate
from bilstm_cli.cli.export import export
from bilstm_cli.cli.predict import predict
from bilstm_cli.cli.runs import list_runs
from bilstm_cli.cli.train import train

app = typer.Typer(
    name="bilstm",
    help="Text classification with uni- and bi-directional LSTMs: train, predict, evaluate, "
    "compare.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bilstm {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Text classification with uni- and bi-directional LSTMs: train, predict, evaluate."""


app.command()(train)
app.command()(predict)
app.command()(evaluate)
app.command()(export)
app.command()(compare)
app.add_typer(data_app, name="data")
app.command("runs")(list_runs)


def main() -> None:
    from bilstm_cli import backend

    backend.setup()  # before anything imports TensorFlow
    app()
