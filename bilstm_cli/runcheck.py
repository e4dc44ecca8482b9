"""Whether a run folder's parts fit together, checked when a model is loaded.

A run folder's model, `labels.json` and `tokenizer.json` are made together; a copied-in file from
another run makes them disagree, and a model then answers with the wrong number of classes or
looks up the wrong words. `check_fits` compares what the model takes and gives (`ModelShape`: read
from the ONNX file or the loaded Keras model) with the labels and the tokenizer, for both engines.
`check_keras_file` looks into a `model.keras` (a zip file) before Keras loads it: a damaged file
and a model holding code (a Lambda layer) are refused without importing TensorFlow.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bilstm_cli.errors import UserError

KERAS_MEMBERS = ("config.json", "model.weights.h5")
BEST_MODEL = Path("checkpoints") / "best" / "model.keras"


@dataclass
class ModelShape:
    """What a model file takes and gives: None where the file does not say."""

    file: Path
    outputs: int | None = None  # probabilities per text: 1 for a two-class (sigmoid) model
    embedding_rows: list[int] = field(default_factory=list)  # one per ensemble member
    input_rank: int | None = None  # 2: a batch of token-id sequences


def expected_outputs(labels: int) -> int:
    """A two-class model gives P(second label) alone; more classes give one column each."""
    return 1 if labels == 2 else labels


def _outputs_text(outputs: int) -> str:
    return "1 output (a two-class model)" if outputs == 1 else f"{outputs} outputs"


def check_fits(run_dir: Path, shape: ModelShape, labels: list[str], vocab_size: int) -> None:
    """Refuse a model that does not fit the run's labels.json and tokenizer.json."""
    from bilstm_cli.runs import LABELS_FILE, TOKENIZER_FILE

    advice = ("the run folder's files come from different runs: restore the run's own files, "
              "or train again")
    if shape.input_rank is not None and shape.input_rank != 2:
        raise UserError(f"{shape.file} takes inputs of rank {shape.input_rank}, not a batch of "
                        "token ids: it is not a model made by `bilstm train`")
    if shape.outputs is not None and shape.outputs != expected_outputs(len(labels)):
        raise UserError(
            f"{run_dir / LABELS_FILE} has {len(labels)} labels ({', '.join(labels)}) but "
            f"{shape.file} gives {_outputs_text(shape.outputs)}, which fits "
            f"{shape.outputs if shape.outputs > 1 else 2} labels: {advice}")
    for rows in sorted(set(shape.embedding_rows)):
        if rows != vocab_size:
            raise UserError(
                f"{run_dir / TOKENIZER_FILE} has a vocabulary of {vocab_size} tokens but the "
                f"embedding of {shape.file} has {rows} rows: {advice}")


def keras_shape(model: Any, path: Path) -> ModelShape:
    """A loaded Keras model's shape (an ensemble: every member's embedding)."""
    import keras

    from bilstm_cli.ensemble import members_of

    rows = [int(layer.input_dim) for member in members_of(model)
            for layer in member.layers if isinstance(layer, keras.layers.Embedding)]
    output = tuple(model.outputs[0].shape)
    return ModelShape(path, int(output[-1]) if output[-1] is not None else None, rows,
                      len(tuple(model.inputs[0].shape)))


def onnx_shape(session: Any, path: Path) -> ModelShape:
    """An ONNX Runtime session's shape; the embedding rows from the file's graph (the tables
    its Gather nodes look ids up in), read without the onnx package."""
    inputs, outputs = session.get_inputs()[0].shape, session.get_outputs()[0].shape
    last = outputs[-1] if outputs else None
    try:
        rows = _onnx_embedding_rows(path.read_bytes())
    except (OSError, ValueError, IndexError) as exc:
        raise UserError(f"{path}: cannot read the ONNX graph ({exc}); re-create it with "
                        f"`bilstm export {path.parent}`") from None
    return ModelShape(path, last if isinstance(last, int) else None, rows, len(inputs))


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _fields(buffer: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of a protobuf message: varints as ints, length-delimited fields as
    views (no copy); fixed-width fields are skipped."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(buffer, position)
            yield number, value
        elif wire == 2:
            size, position = _varint(buffer, position)
            yield number, buffer[position:position + size]
            position += size
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    if position != len(buffer):
        raise ValueError("the file ends inside a field")


def _onnx_embedding_rows(data: bytes) -> list[int]:
    """Rows of each table a Gather node looks up (ModelProto.graph = 7; GraphProto.node = 1,
    .initializer = 5; NodeProto.input = 1, .op_type = 4; TensorProto.dims = 1, .name = 8)."""
    graph = next((v for n, v in _fields(memoryview(data)) if n == 7), None)
    if not isinstance(graph, memoryview):
        raise ValueError("no graph")
    looked_up: list[str] = []
    dims: dict[str, list[int]] = {}
    for number, value in _fields(graph):
        if number == 1 and isinstance(value, memoryview):
            node = list(_fields(value))
            inputs = [bytes(v).decode() for n, v in node if n == 1 and isinstance(v, memoryview)]
            if any(n == 4 and bytes(v) == b"Gather" for n, v in node
                   if isinstance(v, memoryview)) and inputs:
                looked_up.append(inputs[0])
        elif number == 5 and isinstance(value, memoryview):
            name, shape = "", []
            for n, v in _fields(value):
                if n == 8 and isinstance(v, memoryview):
                    name = bytes(v).decode()
                elif n == 1 and isinstance(v, int):
                    shape.append(v)
                elif n == 1:  # packed dims
                    shape.extend(int(d) for _, d in _fields_packed(v))
            dims[name] = shape
    return [dims[name][0] for name in looked_up if len(dims.get(name, [])) == 2]


def _fields_packed(buffer: memoryview) -> Iterator[tuple[int, int]]:
    position = 0
    while position < len(buffer):
        value, position = _varint(buffer, position)
        yield 1, value


def check_keras_file(path: Path) -> None:
    """Refuse a `model.keras` that is not a complete Keras model file, or that holds code
    (a Lambda layer: Keras' safe mode refuses it; so does bilstm, before importing TensorFlow)."""
    try:
        with zipfile.ZipFile(path) as archive:
            missing = [name for name in KERAS_MEMBERS if name not in archive.namelist()]
            if missing:
                raise UserError(damaged_model_message(path, f"it lacks {', '.join(missing)}"))
            broken = archive.testzip()
            if broken is not None:
                raise UserError(damaged_model_message(path, f"{broken} fails its checksum"))
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UserError(damaged_model_message(path, str(exc) or type(exc).__name__)) from None
    code = next(_code_layers(config), None)
    if code is not None:
        raise UserError(
            f"{path} holds code ({code}), which bilstm will not load: running a model file's "
            "code could do anything (Keras' safe mode). Use a model made by `bilstm train`")


def _code_layers(config: Any) -> Iterator[str]:
    """What in a Keras config is Python code: Lambda layers and serialized lambda functions."""
    if isinstance(config, dict):
        name = config.get("class_name")
        if name == "Lambda":
            inner = config.get("config")
            layer = inner.get("name") if isinstance(inner, dict) else None
            yield f"a Lambda layer{f' {layer!r}' if layer else ''}"
        elif name == "__lambda__":
            yield "a Python lambda function"
        for value in config.values():
            yield from _code_layers(value)
    elif isinstance(config, list):
        for value in config:
            yield from _code_layers(value)


def damaged_model_message(path: Path, why: str) -> str:
    """A damaged model.keras: what is wrong, and what the run folder still has to restore."""
    message = (f"{path} is damaged: not a complete Keras model file ({why}); it was truncated "
               "or overwritten.")
    best = path.parent / BEST_MODEL
    if path.name == "model.keras" and best.is_file():
        if os.path.samefile(best, path):
            return (f"{message} {best} is the same file (a hard link), damaged too: train "
                    f"again (bilstm train --resume {path.parent} --force)")
        try:
            with zipfile.ZipFile(best) as archive:
                intact = archive.testzip() is None
        except (zipfile.BadZipFile, OSError, EOFError):
            intact = False
        if intact:
            return (f"{message} The best checkpoint is intact: restore it with "
                    f"`cp {best} {path}`, or train again")
    return f"{message} Train again, or restore the file from a copy of the run"
