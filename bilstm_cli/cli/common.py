"""What the commands share: the choices their options take, and how a user error ends one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

import typer

from bilstm_cli import console as ui
from bilstm_cli.errors import UserError


class OutputFormat(str, Enum):
    label = "label"
    tsv = "tsv"
    jsonl = "jsonl"


class InputFormat(str, Enum):
    text = "text"
    tsv = "tsv"
    jsonl = "jsonl"


class Engine(str, Enum):
    auto = "auto"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"
    tf = "tf"


ENGINE_HELP = ("auto: ONNX Runtime when the run has model.onnx (fast start, no TensorFlow), "
               "else Keras; onnx; onnx-int8: the int8 model (bilstm export --quantize); "
               "tf: force the Keras model.")


class DecodeErrors(str, Enum):
    strict = "strict"
    replace = "replace"


class DataFormat(str, Enum):
    auto = "auto"
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"
    fasttext = "fasttext"
    folder = "folder"
    parquet = "parquet"


class BadRowMode(str, Enum):
    error = "error"
    skip = "skip"


class DatasetName(str, Enum):
    imdb = "imdb"
    sst2 = "sst2"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a UserError into one clear message and exit code 2, with no traceback."""
    try:
        yield
    except UserError as exc:
        ui.error(str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        ui.error("interrupted")
        raise typer.Exit(130) from None


def column(value: str | None) -> str | int | None:
    """A column option: an index when it is all digits, else a name."""
    return int(value) if value is not None and value.isdigit() else value
