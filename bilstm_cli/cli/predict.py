"""`bilstm predict`: texts from arguments, stdin and files -> api.load's classifier -> one
output line per input line on stdout, in order, a batch at a time."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from bilstm_cli import api
from bilstm_cli import console as ui
from bilstm_cli.cli.common import (
    ENGINE_HELP,
    DecodeErrors,
    Engine,
    InputFormat,
    OutputFormat,
    user_errors,
)
from bilstm_cli.errors import UserError


def predict(
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to classify; - reads one text per line from stdin.", show_default=False)]
        = None,
    input_files: Annotated[list[Path] | None, typer.Option(
        "--input", "-i", help="A file with one text per line (- for stdin). Repeatable.")]
        = None,
    input_format: Annotated[InputFormat, typer.Option(
        "--input-format", help="Lines of stdin and --input files: text (the line is the text), "
        "tsv (tab-separated fields, a header when a column is a name) or jsonl.")]
        = InputFormat.text,
    text_column: Annotated[str, typer.Option(
        help="tsv/jsonl: the text's column name (jsonl: nested keys with dots, "
        "meta.review), or 0-based index (tsv without header).")]
        = "text",
    id_column: Annotated[str | None, typer.Option(
        help="tsv/jsonl: a column passed through to the output (first field; jsonl: \"id\").")]
        = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="A run folder or its model file.",
        show_default="runs/latest")] = None,
    output_format: Annotated[OutputFormat, typer.Option(
        "--format", "-f", help="label: the label (with --top-k, K labels, tab-separated); "
        "tsv: label<TAB>probability; jsonl: a record with all probabilities.")]
        = OutputFormat.tsv,
    top_k: Annotated[int, typer.Option(min=1, help="Show the K most probable labels.")] = 1,
    threshold: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Two classes: predict the second label when its probability "
        "is at least T.")] = None,
    probabilities: Annotated[bool, typer.Option(
        "--probabilities", help="label/tsv: append every class's probability, in the model's "
        "label order.")] = False,
    engine: Annotated[Engine, typer.Option(help=ENGINE_HELP)] = Engine.auto,
    batch_size: Annotated[int, typer.Option(
        min=1, help="Texts read per batch (at most): the model runs them grouped by length; a "
        "batch goes out as soon as no more input is waiting.")] = 1024,
    errors: Annotated[DecodeErrors, typer.Option(
        help="Invalid UTF-8 in the input: strict (an error naming the line) or replace.")]
        = DecodeErrors.strict,
) -> None:
    """Predict labels: one output line per input line, in order, on stdout."""
    from bilstm_cli.predict import predict_lines

    with user_errors():
        if id_column is not None and input_format == InputFormat.text:
            raise UserError("--id-column needs --input-format tsv or jsonl")
        sources = _prediction_sources(texts or [], input_files or [], batch_size, errors.value,
                                      input_format.value, text_column, id_column)
        classifier = api.load(model, engine.value, warn=ui.warn)
        if top_k > len(classifier.labels):
            ui.warn(f"--top-k {top_k}: the model has {len(classifier.labels)} labels, so each "
                    f"answer lists all {len(classifier.labels)}")
        outputs = predict_lines(classifier, sources, output_format.value, top_k, threshold,
                                probabilities, with_id=id_column is not None)
        _write_lines(outputs)


def _prediction_sources(
    texts: list[str], files: list[Path], batch_size: int, errors: str,
    input_format: str = "text", text_column: str = "text", id_column: str | None = None,
) -> Iterator[list[tuple[Any, str]]]:
    """Record batches from the arguments (in their order, `-` = stdin), then the files."""
    from bilstm_cli.predict import file_line_batches, line_batches, parse_records

    if not texts and not files:
        if sys.stdin.isatty():
            raise UserError("nothing to predict: give texts, - for stdin, or --input FILE")
        texts = ["-"]
    for path in files:  # checked before the model loads; a pipe (<(...), /dev/stdin) is fine
        if str(path) != "-" and not path.exists():
            raise UserError(f"input file not found: {path}")
        if path.is_dir():
            raise UserError(f"--input {path} is a folder: give a file with one text per line")

    def records(source: str) -> Iterator[list[tuple[Any, str]]]:
        stream = (line_batches(sys.stdin.fileno(), batch_size, "<stdin>", errors)
                  if source == "-" else file_line_batches(source, batch_size, errors))
        name = "<stdin>" if source == "-" else source
        return parse_records(stream, input_format, text_column, id_column, name)

    def batches() -> Iterator[list[tuple[Any, str]]]:
        literal: list[tuple[Any, str]] = []
        for text in texts:
            if text != "-":
                literal.append((None, text))
                if len(literal) < batch_size:
                    continue
            if literal:
                yield literal
                literal = []
            if text == "-":
                yield from records("-")
        if literal:
            yield literal
        for path in files:
            yield from records(str(path))

    return batches()


def _write_lines(batches: Iterator[list[str]]) -> None:
    """Write each batch of output lines and flush, ending quietly if the reader goes away."""
    try:
        for lines in batches:
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
    except BrokenPipeError:
        # `| head -1` closed the pipe: stop without a traceback, as a SIGPIPE'd tool would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(141) from None
