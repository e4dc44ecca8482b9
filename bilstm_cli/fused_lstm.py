"""The fused CPU LSTM kernel (kernels/lstm_cpu.cc): built once per machine, loaded on demand.

Keras runs an LSTM on a CPU as a graph loop of small ops; on this tool's models their overhead
and the memory passes between them cost as much as the arithmetic. The kernel does a whole
direction in two ops (forward pass, backward pass): a BiLSTM training step runs about 1.6x faster
than through Keras' loop (unmasked), 1.8x than Keras' masked LSTM (benchmarks/lstm_step.py).

It is C++ against TensorFlow's headers, so it is compiled here, with the machine's C++ compiler,
the first time `bilstm train` runs (about 30 s), into a cache folder keyed by the source, the
TensorFlow version and the CPU. Without a compiler, or if the build fails, training runs
Keras' own loop: the same numbers, only slower. BILSTM_FUSED_LSTM=0 turns the kernel off.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bilstm_cli.backend import keras, tf
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
    error = _build(compiler, path)
    if error is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        failed.write_text(error)
        log(f"fused LSTM kernel: the build failed (log: {failed}); training uses Keras' loop")
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


def lstm(x_proj, bias, recurrent_kernel, h0, c0, lengths, reverse: bool, training: bool = True,
         ids=None):
    """One LSTM direction over a right-padded batch: (outputs in Keras' order, last output).

    `x_proj` is the inputs times the input kernel, without the bias: [B, T, 4U], or with `ids`
    ([B, T]) a table [V, 4U] whose rows the steps read, so it is never copied out per token.
    The gradient is the kernel's backward op (for a table, summed into its rows by the scatter
    op). Outside training the forward op keeps none of the state the backward op needs (at 800
    tokens and batch 256, about 300 MB a direction); a gradient asked for there anyway
    (saliency, a custom loop) reruns the forward pass to get it.
    """
    kernel_ops = ops()
    lookup = ids is not None

    # lengths and ids are arguments, not closures: inside tf.cond or tf.switch_case branches
    # the gradient has to use the branch's own captures of them.
    @tf.custom_gradient
    def run(x_proj, bias, recurrent_kernel, h0, c0, lengths, ids):
        def forward(save_state):
            return kernel_ops.bilstm_lstm(x_proj, bias, recurrent_kernel, h0, c0, lengths, ids,
                                          reverse=reverse, save_state=save_state, lookup=lookup)

        outputs, last, *state = forward(save_state=training)

        def gradient(d_outputs, d_last):
            d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs
            d_last = tf.zeros_like(last) if d_last is None else d_last
            h_prev, cells, gates = state if training else forward(save_state=True)[2:]
            d_x_proj, *rest = kernel_ops.bilstm_lstm_grad(
                recurrent_kernel, c0, lengths, h_prev, cells, gates, d_outputs, d_last,
                reverse=reverse)
            if lookup:
                d_x_proj = kernel_ops.bilstm_scatter_add_rows(d_x_proj, ids, tf.shape(x_proj)[0])
            return [d_x_proj, *rest, None, None]

        return (outputs, last), gradient

    return run(x_proj, bias, recurrent_kernel, h0, c0, lengths,
               ids if lookup else tf.zeros([0, 0], tf.int32))


def gather_rows(table, ids):
    """`table[ids]` whose gradient is a dense table summed by the kernel's scatter op.

    TensorFlow's gather gradient is IndexedSlices (one row per id); the optimizer (and clipnorm,
    again) turns it into a dense table with a single-threaded segment sum that cost more than
    the lookup saved.
    """
    kernel_ops = ops()

    # ids is an argument, not a closure, as in lstm().
    @tf.custom_gradient
    def run(table, ids):
        def gradient(upstream):
            return kernel_ops.bilstm_scatter_add_rows(upstream, ids, tf.shape(table)[0]), None

        return tf.gather(table, ids), gradient

    return run(table, ids)
