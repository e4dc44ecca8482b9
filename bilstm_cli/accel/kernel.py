"""The fused CPU LSTM kernel (kernels/lstm_cpu.cc): built once per machine, loaded on demand.

Keras runs an LSTM on a CPU as a graph loop of small ops; on this tool's models their overhead
and the memory passes between them cost as much as the arithmetic. The kernel does a whole
direction in two ops (forward pass, backward pass). A third op sums rows by id, for the first
layer's table lookup (lstm_over_table) and for Adam's sparse updates (optimizer.py). A BiLSTM
training step runs about 2x faster than through Keras' loop (unmasked), 2.2x than Keras' masked
LSTM (benchmarks/lstm_step.py).

It is C++ against TensorFlow's headers, so it is compiled here, with the machine's C++ compiler,
the first time `bilstm train` runs (about 30 s), into a cache folder keyed by the source, the
TensorFlow version and the CPU. Without a compiler, or if the build fails, training runs
Keras' own loop: the same numbers, only slower. BILSTM_FUSED_LSTM=0 turns the kernel off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from bilstm_cli.data import download

SOURCE = Path(__file__).parent / "kernels" / "lstm_cpu.cc"
# Tried in order. -march=native: the machine's vector units (the library is built where it
# runs). TensorFlow's Eigen headers do not compile with AVX512-FP16 on; older compilers do not
# know the flag that turns it off, hence the second set. NDEBUG drops Eigen's bounds checks.
FLAG_SETS = (
    ["-O3", "-DNDEBUG", "-march=native", "-mno-avx512fp16"],
    ["-O3", "-DNDEBUG", "-march=native"],
    ["-O3", "-DNDEBUG"],
)

_loaded: dict[str, Any] = {}


def enabled() -> bool:
    return os.environ.get("BILSTM_FUSED_LSTM", "1") != "0"


def cache_dir() -> Path:
    """Where built kernels are kept: $BILSTM_CACHE_DIR, else the data sets' cache folder."""
    override = os.environ.get("BILSTM_CACHE_DIR")
    return (Path(override).expanduser() if override else download.cache_dir()) / "kernels"


def _cpu_id() -> str:
    """What -march=native depends on: a library built for one CPU may not run on another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def library_path() -> Path:
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), tf.__version__.encode(), _cpu_id().encode(),
                 repr(FLAG_SETS).encode()):
        key.update(part)
    return cache_dir() / f"lstm_cpu-{key.hexdigest()[:16]}.so"


def ops() -> Any | None:
    """The kernel's ops if this machine has them built (never builds); None otherwise."""
    if "ops" not in _loaded and enabled() and library_path().is_file():
        _loaded["ops"] = tf.load_op_library(str(library_path()))
    return _loaded.get("ops")


def prepare(log: Callable[[str], None]) -> bool:
    """Build the kernel if this machine has not yet (once), then load it. True if loaded."""
    if not enabled():
        log("fused LSTM kernel: off (BILSTM_FUSED_LSTM=0); Keras' loop runs instead")
        return False
    if ops() is not None:
        return True
    path = library_path()
    failed = path.with_suffix(".failed")
    if failed.is_file():
        return False  # reported when it failed; delete the .failed file to try again
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        log("fused LSTM kernel: no C++ compiler (g++) found; training uses Keras' slower loop")
        return False
    log(f"building the fused LSTM kernel with {compiler} (once for this machine, about 30 s)")
    try:
        error = _build(compiler, path)
    except OSError as exc:  # e.g. a cache folder that cannot be written
        log(f"fused LSTM kernel: cannot build it in {path.parent} ({exc.strerror or exc}); "
            "training uses Keras' slower loop (set BILSTM_CACHE_DIR to a writable folder)")
        return False
    if error is not None:
        try:
            failed.write_text(error)
            where = f"log: {failed}"
        except OSError:
            where = f"its log could not be written: {error.splitlines()[-1] if error else ''}"
        log(f"fused LSTM kernel: the build failed ({where}); training uses Keras' loop")
        return False
    return ops() is not None


def _build(compiler: str, path: Path) -> str | None:
    """Compile SOURCE into `path` (written under a temporary name, then renamed); the error
    output of the last attempt if every flag set failed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tf_flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    error = ""
    for flags in FLAG_SETS:
        command = [compiler, "-shared", "-fPIC", "-w", *flags, str(SOURCE), "-o", str(partial),
                   *tf_flags]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            os.replace(partial, path)
            return None
        error = f"$ {' '.join(command)}\n{result.stderr[-4000:]}"
    partial.unlink(missing_ok=True)
    return error


def usable(cell: Any, training: bool) -> bool:
    """Whether the kernel computes exactly what this Keras LSTMCell would."""
    activations = keras.activations
    return (
        ops() is not None
        and activations.serialize(cell.activation) == "tanh"
        and activations.serialize(cell.recurrent_activation) == "sigmoid"
        and cell.compute_dtype == "float32"
        and not (training and cell.dropout)
    )


def lstm(x_proj, bias, recurrent_kernel, h0, c0, lengths, reverse: bool, training: bool = True):
    """One LSTM direction over a right-padded batch: (outputs in Keras' order, last output).

    `x_proj` ([B, T, 4U]) is the inputs times the input kernel, without the bias. The gradient
    is the kernel's backward op. Outside training the forward op keeps none of the state the
    backward op needs (at 800 tokens and batch 256, about 300 MB a direction); a gradient asked
    for there anyway (saliency, a custom loop) reruns the forward pass to get it.
    """
    # lengths is an argument, not a closure: inside tf.cond or tf.switch_case branches the
    # gradient has to use the branch's own capture of it.
    @tf.custom_gradient
    def run(x_proj, bias, recurrent_kernel, h0, c0, lengths):
        step = _Direction(x_proj, None, bias, recurrent_kernel, h0, c0, lengths, reverse,
                          training)

        def gradient(d_outputs, d_last):
            d_x_proj, *rest = step.backward(d_outputs, d_last)
            return [d_x_proj, *rest, None]

        return step.result, gradient

    return run(x_proj, bias, recurrent_kernel, h0, c0, lengths)


def lstm_over_table(inputs, embeddings, kernel, ids, bias, recurrent_kernel, h0, c0, lengths,
                    reverse: bool, training: bool = True):
    """`lstm` for a layer reading an embedding lookup, `inputs = embeddings[ids]`.

    Multiplying the table by the input kernel costs V rows instead of B x T: fewer when the batch
    holds more tokens than the table has words. The kernel reads each step's row by its id, so
    no [B, T, 4U] copy is made. The input kernel's gradient goes through the table as well
    (embeddings' transpose times the rows' summed gradients: V rows again).

    The embedding's own gradient is left to `inputs` (per token, through Keras' lookup, as
    IndexedSlices) and none is returned for `embeddings`: Keras' Adam squares a sparse gradient
    per occurrence of a word before summing, a dense one after, and on IMDB the dense one
    (textbook Adam) cost about 1.5 points of test accuracy (benchmarks/RESULTS.md).
    """
    kernel_ops = ops()

    # ids and lengths are arguments, not closures, as in lstm().
    @tf.custom_gradient
    def run(inputs, embeddings, kernel, ids, bias, recurrent_kernel, h0, c0, lengths):
        step = _Direction(tf.matmul(embeddings, kernel), ids, bias, recurrent_kernel, h0, c0,
                          lengths, reverse, training)

        def gradient(d_outputs, d_last):
            d_x_proj, *rest = step.backward(d_outputs, d_last)
            d_table = kernel_ops.bilstm_scatter_add_rows(d_x_proj, ids,
                                                       tf.shape(embeddings)[0]).sums
            d_kernel = tf.matmul(embeddings, d_table, transpose_a=True)
            d_inputs = tf.einsum("btg,dg->btd", d_x_proj, kernel)
            return [d_inputs, None, d_kernel, None, *rest, None]

        return step.result, gradient

    return run(inputs, embeddings, kernel, ids, bias, recurrent_kernel, h0, c0, lengths)


class _Direction:
    """The forward op of one direction, and its backward op for a gradient.

    With `ids`, `x_proj` is a table [V, 4U] whose rows the steps read; else [B, T, 4U].
    """

    def __init__(self, x_proj, ids, bias, recurrent_kernel, h0, c0, lengths, reverse: bool,
                 training: bool) -> None:
        self.kernel_ops = ops()
        lookup = ids is not None
        ids = ids if lookup else tf.zeros([0, 0], tf.int32)
        self.forward_inputs = (x_proj, bias, recurrent_kernel, h0, c0, lengths, ids)
        self.options = {"reverse": reverse, "lookup": lookup}
        outputs, last, *state = self.kernel_ops.bilstm_lstm(
            *self.forward_inputs, save_state=training, **self.options)
        self.result = (outputs, last)
        self.state = state if training else None

    def backward(self, d_outputs, d_last):
        """[d_x_proj ([B, T, 4U], per token), d_bias, d_recurrent_kernel, d_h0, d_c0]."""
        outputs, last = self.result
        d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs
        d_last = tf.zeros_like(last) if d_last is None else d_last
        h_prev, cells, gates = self.state or self.kernel_ops.bilstm_lstm(
            *self.forward_inputs, save_state=True, **self.options)[2:]
        _, _, recurrent_kernel, _, c0, lengths, _ = self.forward_inputs
        return list(self.kernel_ops.bilstm_lstm_grad(
            recurrent_kernel, c0, lengths, h_prev, cells, gates, d_outputs, d_last,
            reverse=self.options["reverse"]))


@contextlib.contextmanager
def forgetting_custom_gradients() -> Iterator[None]:
    """Unregister the gradient functions that `tf.custom_gradient` registers in this block.

    Inside a tf.function every call of a custom-gradient function (this kernel's) registers its
    gradient in TensorFlow's global registry under a new name, and nothing ever removes it. The
    gradient closes over the traced graph, and the graph over the model's variables: a model
    trained and dropped stayed in memory with its optimizer's slots (0.25 GB per IMDB ensemble
    member, benchmarks/HISTORY.md). A registered gradient is only called while a function is
    being traced, so the ones registered while a model trained can go once its training
    functions are built. Private API: see the package docstring.
    """
    from tensorflow.python.framework import ops as framework_ops

    registry = getattr(getattr(framework_ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for name in [name for name in registry if name not in before
                         and name.startswith("CustomGradient-")]:
                del registry[name]
