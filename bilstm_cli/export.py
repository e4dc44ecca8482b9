"""The trained Keras model as an ONNX graph, so `predict` can run on ONNX Runtime without
TensorFlow (whose import alone takes seconds).

The graph is built by hand from the model's weights with the `onnx` package (tf2onnx does not
follow Keras 3). It follows the model's architecture (architecture.py), as `model.build_model`
does, and reads the Keras weights by layer name:

  ids [batch, time] (int32, 0 = padding)
  -> lengths = count of ids != 0 per row  (the Keras mask; padding is always on the right)
  -> Gather(embedding)                    [time, batch, dim]
  -> ONNX LSTM per layer, with sequence_lens = lengths, forward or bidirectional
       (steps past a row's length are skipped; the reverse direction starts at its last real
       token, exactly like Keras' masked go_backwards), directions merged as concat/sum/ave/mul
  -> pooling: last (Y_h: the forward state after the last real token, the backward state after
       reading back to the first), or max / mean over the real steps
  -> dense head with sigmoid (two classes) or softmax.
Dropout is the identity at inference and has no node. An ensemble (model.ensemble) is one such
chain per member from the same ids, and the Mean of their probabilities.

Importing this module does not import TensorFlow; `export_run` does (it loads the Keras model).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bilstm_cli.architecture import EMBEDDING, OUTPUT, Architecture
from bilstm_cli.errors import UserError

# Opset 18: every reduction takes its axes as an input; ONNX Runtime has supported it since 1.14.
OPSET = 18
INPUT_NAME = "ids"
OUTPUT_NAME = "probabilities"
# Keras packs LSTM gates as [input, forget, cell, output]; ONNX wants [input, output, forget, cell].
_KERAS_TO_ONNX_GATES = (0, 3, 1, 2)


@dataclass
class ModelSpec:
    """One model's weights, as the ONNX graph takes them, and its architecture."""

    arch: Architecture
    embedding: np.ndarray
    # Per recurrent layer, per direction: Keras' (kernel, recurrent_kernel, bias).
    recurrent: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=list)
    dense_kernel: np.ndarray | None = None
    dense_bias: np.ndarray | None = None


def _lstm_weights(layer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An LSTM's weights; only the standard cell has a matching ONNX op."""
    activation = getattr(layer.activation, "__name__", str(layer.activation))
    recurrent = getattr(layer.recurrent_activation, "__name__", str(layer.recurrent_activation))
    if activation != "tanh" or recurrent != "sigmoid" or not layer.use_bias:
        raise UserError(
            f"layer {layer.name}: ONNX export supports LSTMs with tanh, sigmoid and a bias only"
        )
    kernel, recurrent_kernel, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
    return kernel, recurrent_kernel, bias


def spec_from_keras(model: Any, arch: Architecture) -> ModelSpec:
    """The weights of a model of `arch` (model.build_model), read by layer name."""
    try:
        embedding = model.get_layer(EMBEDDING)
        spec = ModelSpec(arch, np.asarray(embedding.embeddings, dtype=np.float32))
        for recurrent in arch.recurrent:
            layer = model.get_layer(recurrent.name)
            directions = [layer.forward_layer, layer.backward_layer] \
                if recurrent.bidirectional else [layer]
            spec.recurrent.append([_lstm_weights(direction) for direction in directions])
        kernel, bias = model.get_layer(OUTPUT).get_weights()
    except ValueError as exc:  # Keras: no layer of that name
        raise UserError(f"the model does not match its config.yaml ({exc})") from None
    spec.dense_kernel = np.asarray(kernel, dtype=np.float32)
    spec.dense_bias = np.asarray(bias, dtype=np.float32)
    return spec


def _onnx_gates(matrix: np.ndarray) -> np.ndarray:
    """Keras (in, 4*units) with gate blocks i,f,c,o -> ONNX (4*units, in) with blocks i,o,f,c."""
    blocks = np.split(matrix.T, 4, axis=0)
    return np.concatenate([blocks[g] for g in _KERAS_TO_ONNX_GATES], axis=0)


def _onnx_lstm_tensors(
    directions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [dirs, 4h, in], R [dirs, 4h, h], B [dirs, 8h] (input bias, then a zero recurrent bias)."""
    w = np.stack([_onnx_gates(kernel) for kernel, _, _ in directions])
    r = np.stack([_onnx_gates(recurrent) for _, recurrent, _ in directions])
    b = np.stack([
        np.concatenate([_onnx_gates(bias[None, :])[:, 0], np.zeros_like(bias)])
        for _, _, bias in directions
    ])
    return w.astype(np.float32), r.astype(np.float32), b.astype(np.float32)


class _Graph:
    """Names nodes and initializers as they are added, straight into the model's graph: each
    weight is copied into the proto once, not again into a graph and a model around it (an
    ensemble's export sets the peak memory of its run)."""

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.proto.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None,
           outputs: int = 1, **attributes: Any) -> Any:
        from onnx import helper

        names = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.proto.node.append(helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names


def _merge(graph: _Graph, states: str, axis: int, merge_mode: str | None, units: int) -> str:
    """Combine the direction axis of Y ([T, dirs, B, h], axis 1) or Y_h ([dirs, B, h], axis 0)."""
    if merge_mode is None:
        return graph.op("Squeeze", [states, graph.const("axes", np.array([axis], np.int64))])
    if merge_mode == "concat":
        # Move the direction axis next to the features and fold it in: [fwd units, bwd units].
        perm = [0, 2, 1, 3] if axis == 1 else [1, 0, 2]
        moved = graph.op("Transpose", [states], perm=perm)
        shape = [0, 0, 2 * units] if axis == 1 else [0, 2 * units]
        return graph.op("Reshape", [moved, graph.const("shape", np.array(shape, np.int64))])
    reduce = {"sum": "ReduceSum", "ave": "ReduceMean", "mul": "ReduceProd"}[merge_mode]
    return graph.op(reduce, [states, graph.const("axes", np.array([axis], np.int64))], keepdims=0)


def specs_from_keras(model: Any, arch: Architecture) -> Iterator[ModelSpec]:
    """One spec per member of an ensemble (`ensemble.average`: members averaged), or the
    model's own; made one at a time, so only one member's weights are copied out at once."""
    from bilstm_cli.ensemble import members_of

    for member in members_of(model):
        yield spec_from_keras(member, arch)


def _member_probabilities(graph: _Graph, spec: ModelSpec, ids: str, mask: str,
                          lengths: str) -> str:
    """One model's nodes, from the shared ids, mask and lengths to its probabilities (the last
    node added)."""
    from onnx import TensorProto

    time_major = graph.op("Transpose", [ids], perm=[1, 0])  # [T, B]
    x = graph.op("Gather", [graph.const("embedding", spec.embedding), time_major], axis=0)

    arch = spec.arch
    for index, (layer, directions) in enumerate(zip(arch.recurrent, spec.recurrent)):
        w, r, b = _onnx_lstm_tensors(directions)
        bidirectional = layer.bidirectional
        merge_mode = layer.merge_mode if bidirectional else None
        y, y_h = graph.op(
            "LSTM",
            [x, graph.const(f"W{index + 1}", w), graph.const(f"R{index + 1}", r),
             graph.const(f"B{index + 1}", b), lengths],
            hint=f"lstm{index + 1}", outputs=2, hidden_size=layer.units,
            direction="bidirectional" if bidirectional else "forward",
        )
        if layer.return_sequences:
            x = _merge(graph, y, 1, merge_mode, layer.units)  # [T, B, features]
        else:
            x = _merge(graph, y_h, 0, merge_mode, layer.units)  # [B, features]

    if arch.pooling != "last":
        time_axis = graph.const("axis0", np.array([0], np.int64))
        step_mask = graph.op("Unsqueeze", [graph.op("Transpose", [mask], perm=[1, 0]),
                                           graph.const("axis2", np.array([2], np.int64))])
        pooled = []
        if arch.pooling in ("max", "max_mean"):
            lowest = graph.const("lowest", np.array(-3.0e38, dtype=np.float32))
            masked = graph.op("Where", [step_mask, x, lowest])
            pooled.append(graph.op("ReduceMax", [masked, time_axis], keepdims=0))
        if arch.pooling in ("mean", "max_mean"):
            weights = graph.op("Cast", [step_mask], to=TensorProto.FLOAT)
            total = graph.op("ReduceSum", [graph.op("Mul", [x, weights]), time_axis], keepdims=0)
            count = graph.op("ReduceSum", [weights, time_axis], keepdims=0)
            pooled.append(graph.op("Div", [total, count]))
        x = pooled[0] if len(pooled) == 1 else graph.op("Concat", pooled, axis=1)

    logits = graph.op("Add", [
        graph.op("MatMul", [x, graph.const("dense_kernel", spec.dense_kernel)]),
        graph.const("dense_bias", spec.dense_bias),
    ])
    if arch.activation == "sigmoid":
        return graph.op("Sigmoid", [logits], hint="probabilities")
    return graph.op("Softmax", [logits], hint="probabilities", axis=-1)


def build_onnx(specs: ModelSpec | Iterable[ModelSpec], check: bool = True) -> Any:
    """The ONNX model for a `ModelSpec`, or for an ensemble of them (the mean of their
    probabilities): input `ids` int32 [batch, time], output probabilities. `specs` is read once,
    in order, so it may make each spec as it is needed."""
    from onnx import ModelProto, TensorProto, checker, helper

    specs = [specs] if isinstance(specs, ModelSpec) else specs
    model = ModelProto()
    graph = _Graph(model.graph)
    graph.proto.name = "bilstm"
    ids = INPUT_NAME
    zero = graph.const("zero", np.array(0, dtype=np.int32))
    mask = graph.op("Not", [graph.op("Equal", [ids, zero])], hint="mask")  # [B, T] bool
    lengths = graph.op("ReduceSum", [graph.op("Cast", [mask], to=TensorProto.INT32),
                                     graph.const("time_axis", np.array([1], np.int64))],
                       hint="lengths", keepdims=0)  # [B] int32
    members: list[str] = []
    classes: set[int] = set()
    for spec in specs:
        if spec.dense_kernel is not None:
            classes.add(int(spec.dense_kernel.shape[1]))
        members.append(_member_probabilities(graph, spec, ids, mask, lengths))
        del spec  # before the next member's weights are copied out
    if len(classes) != 1:
        raise UserError("the ensemble's members do not have the same outputs")
    if len(members) == 1:
        graph.proto.node[-1].output[0] = OUTPUT_NAME  # the one model's probabilities
    else:
        graph.proto.node.append(helper.make_node("Mean", members, [OUTPUT_NAME]))

    graph.proto.input.append(
        helper.make_tensor_value_info(INPUT_NAME, TensorProto.INT32, ["batch", "time"]))
    graph.proto.output.append(
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", classes.pop()]))
    model.producer_name = "bilstm"
    model.opset_import.append(helper.make_opsetid("", OPSET))
    model.ir_version = 8  # readable by every ONNX Runtime that supports opset 18
    if check:
        checker.check_model(model)
    return model


def export_model(model: Any, arch: Architecture, path: Path) -> Path:
    """Write the Keras model's ONNX twin to `path` (atomically). The proto is dropped once
    serialized, and the bytes once written, before the checker reads the file back: besides
    Keras' own, at most two copies of the weights are held at once."""
    from onnx import checker

    from bilstm_cli.runs import write_atomic

    proto = build_onnx(specs_from_keras(model, arch), check=False)
    serialized = [proto.SerializeToString()]
    del proto

    def write(tmp: Path) -> None:
        tmp.write_bytes(serialized.pop())
        checker.check_model(str(tmp))  # a str: older onnx releases may not take a Path

    write_atomic(path, write)
    return path


def export_run(run_dir: Path, output: Path | None = None, quantize: bool = False) -> Path:
    """Load a run's `model.keras` (imports TensorFlow) and write `model.onnx` (or `output`).
    With `quantize`, or when its int8 twin (quantize.int8_path) is already there, that is
    (re)written too, so the two never hold different models. Returns the float model's path."""
    from bilstm_cli.model import architecture_of
    from bilstm_cli.predict import load_run_model
    from bilstm_cli.quantize import int8_path, quantize_model
    from bilstm_cli.runs import ONNX_FILE, read_config

    config = read_config(run_dir)
    model = load_run_model(run_dir)
    path = export_model(model, architecture_of(model, config.model), output or run_dir / ONNX_FILE)
    if quantize or int8_path(path).is_file():
        quantize_model(path)
    return path
