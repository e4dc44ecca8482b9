"""`bilstm export`: a run -> api.export -> the ONNX files' paths on stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bilstm_cli import api
from bilstm_cli.cli.common import user_errors


def export(
    run: Annotated[str | None, typer.Argument(
        help="A run folder or its model file (default: runs/latest).", show_default=False)]
        = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write the ONNX model (default: RUN/model.onnx).")]
        = None,
    quantize: Annotated[bool, typer.Option(
        "--quantize", help="Also write the model with int8 weights next to it "
        "(model.int8.onnx: about a quarter of the size; predict --engine onnx-int8).")]
        = False,
) -> None:
    """Write the run's model as ONNX (model.onnx), so predict runs without TensorFlow."""
    from bilstm_cli.quantize import int8_path

    with user_errors():
        path = api.export(run, output, quantize)
    sys.stdout.write(f"{path}\n")
    if int8_path(path).is_file():  # written now: asked for, or a twin kept up to date
        sys.stdout.write(f"{int8_path(path)}\n")
