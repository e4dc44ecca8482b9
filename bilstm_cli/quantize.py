"""The run's ONNX model with 8-bit weights (`bilstm export --quantize`, `output.quantize`).

ONNX Runtime's own dynamic quantization (`onnxruntime.quantization.quantize_dynamic`): the
weights of the embedding (Gather), the LSTMs and the dense head (MatMul) are stored as int8 with
one scale per tensor, and the activations that feed the LSTM and MatMul are quantized per batch
while the model runs (DynamicQuantizeLSTM, MatMulInteger). The file is about a quarter of
`model.onnx`'s size; it is written next to it as `model.int8.onnx` and `predict --engine
onnx-int8` (or `--model RUN/model.int8.onnx`) runs it. Importing this module imports neither
ONNX Runtime nor TensorFlow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bilstm_cli.errors import UserError

INT8_SUFFIX = ".int8.onnx"
# Every weight the model has: Gather (the embedding: most of the file), LSTM, MatMul (the head).
QUANTIZED_OPS = ("Gather", "LSTM", "MatMul")


def int8_path(onnx_path: Path) -> Path:
    """Where the int8 twin of an ONNX file goes: model.onnx -> model.int8.onnx."""
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + INT8_SUFFIX)


def is_int8_file(path: Path) -> bool:
    return path.name.endswith(INT8_SUFFIX)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantizer warns through the root logger about every tensor it leaves in float (the
    ids, the mask): expected here, and noise to a user. Restored on the way out."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_model(source: Path, output: Path | None = None) -> Path:
    """Write the int8 twin of the ONNX model `source` to `output` (default: `int8_path`),
    atomically; returns its path."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bilstm_cli.runs import write_atomic

    output = output or int8_path(source)
    if not source.is_file():
        raise UserError(f"{source} is missing: write it with `bilstm export {source.parent}`")

    def write(tmp: Path) -> None:
        try:
            with _quiet_root_logger():
                quantize_dynamic(source, tmp, op_types_to_quantize=list(QUANTIZED_OPS),
                                 per_channel=False, weight_type=QuantType.QInt8)
        except OSError:
            raise
        except Exception as exc:  # onnx and onnxruntime raise their own error types
            raise UserError(f"{source}: cannot quantize the ONNX model ({exc}); re-create it "
                            f"with `bilstm export {source.parent} --quantize`") from None

    write_atomic(output, write)
    return output
