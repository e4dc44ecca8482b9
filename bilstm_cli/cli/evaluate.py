"""`bilstm evaluate`: labelled data and a run -> api.evaluate -> report tables (or JSON)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from bilstm_cli import api
from bilstm_cli import console as ui
from bilstm_cli.cli.common import ENGINE_HELP, BadRowMode, DataFormat, Engine, column, user_errors


def evaluate(
    data: Annotated[str, typer.Option(
        "--data", "-d", help="Labelled data: a file (tsv, csv, jsonl, fasttext, parquet), a "
        "folder with one sub-folder per class, - for stdin (with --format), or imdb:test, "
        "sst2:test.")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="A run folder or its model file.",
        show_default="runs/latest")] = None,
    data_format: Annotated[DataFormat, typer.Option(
        "--format", help="The file's format; auto: from its extension, else the run's "
        "data.format.")] = DataFormat.auto,
    text_column: Annotated[str | None, typer.Option(
        help="Text column or key (a name, or an index).",
        show_default="the run's data.text_column")]
        = None,
    label_column: Annotated[str | None, typer.Option(
        help="Label column or key.", show_default="the run's data.label_column")] = None,
    header: Annotated[bool | None, typer.Option(
        "--header/--no-header", help="tsv/csv: whether the first row names the columns.",
        show_default="the run's data.header (auto: when a column is given by name)")] = None,
    on_bad_row: Annotated[BadRowMode | None, typer.Option(
        help="A malformed row: error (list the bad rows and stop) or skip (count and report "
        "them).", show_default="the run's data.on_bad_row")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Write the report as JSON to stdout.")]
        = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per batch.")] = 256,
    engine: Annotated[Engine, typer.Option(help=ENGINE_HELP)] = Engine.auto,
) -> None:
    """Evaluate a trained model on labelled data: accuracy, per-class metrics, confusion matrix."""
    with user_errors():
        report = api.evaluate(data, model, data_format.value, engine.value, batch_size,
                              warn=ui.warn, text_column=column(text_column),
                              label_column=column(label_column), header=header,
                              on_bad_row=on_bad_row.value if on_bad_row else None)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    out = ui.stdout_console()
    for table in ui.report_tables(report, out):
        out.print(table)
