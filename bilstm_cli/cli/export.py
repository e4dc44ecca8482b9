"""`bilstm export`: a run -> api.export -> the ONNX file's path on stdout."""

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
) -> None:
    """Write the run's model as ONNX (model.onnx), so predict runs without TensorFlow."""
    with user_errors():
        path = api.export(run, output)
    sys.stdout.write(f"{path}\n")
