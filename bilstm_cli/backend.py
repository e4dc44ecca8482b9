"""TensorFlow and Keras, imported quietly and configured for the machine.

Importing this module imports TensorFlow (seconds): only commands that run a model import it.
TensorFlow's native code logs start-up chatter ("oneDNN custom operations are on", "Could not
find cuda drivers", ...) straight to file descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL in recent
releases. Our own messages must stay readable on stderr, so native log lines in absl's format are
filtered out of descriptor 2; everything else written there passes through unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import threading
from collections.abc import Iterator

_NATIVE_LOG = re.compile(
    rb"^([IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]|WARNING: All log messages before absl"
    rb"|To enable the following instructions: AVX)"
)


def _filter_native_logs() -> None:
    """Route fd 2 through a pipe that drops absl log lines; Python's stderr keeps the real fd."""
    if os.environ.get("BILSTM_NATIVE_LOGS") == "1" or not hasattr(os, "pipe"):
        return
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr.flush()
    sys.stderr = open(real_stderr, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                      errors="backslashreplace", closefd=False)

    def pump() -> None:
        with open(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = b"".join(line + b"\n" for line in lines if not _NATIVE_LOG.match(line))
                if kept:
                    os.write(real_stderr, kept)
            if pending and not _NATIVE_LOG.match(pending):
                os.write(real_stderr, pending)

    threading.Thread(target=pump, name="native-log-filter", daemon=True).start()


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before TensorFlow starts its thread pools.

    glibc gives threads that contend for the heap arenas of their own (up to 8 per core), and
    TensorFlow's pools then keep freed tensors spread over many of them: training RSS on IMDB
    crept from 2.75 to 3.1 GB over five epochs with the default, and stayed near 2.2 GB with two
    arenas, at the same speed (benchmarks/RESULTS.md). MALLOC_ARENA_MAX, if set, wins.
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc


def _pool_cpu_memory() -> None:
    """Have TensorFlow keep its CPU memory in its own pool (the BFC allocator) instead of malloc.

    A training step frees and reallocates hundreds of MB of activations. From malloc, every
    block that big is a fresh mmap that the kernel zero-fills page by page when touched: on an
    IMDB epoch of 6,000 reviews here, 11 million page faults and a third of the CPU time spent in
    the kernel. From the pool: 0.8 million, and the epoch took 40 s instead of 64-72 s, for
    0.2-0.4 GB more peak memory (benchmarks/RESULTS.md). TF_CPU_ALLOCATOR_USE_BFC, if set, wins.
    """
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_filter_native_logs()
_limit_malloc_arenas()
_pool_cpu_memory()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["configure_threads", "forgetting_custom_gradients", "keras", "tf"]


def configure_threads(bidirectional: bool, threads: int | None = None) -> None:
    """Set TensorFlow's CPU thread pools before it starts them.

    By default TensorFlow spreads every small LSTM matmul over all cores. A bidirectional layer
    has two independent chains (forward and backward): running them side by side, each on its
    share of the cores, is faster than splitting every step between cores.
    """
    if tf.config.list_physical_devices("GPU"):
        return
    cores = threads or os.cpu_count() or 1
    try:
        if bidirectional and cores >= 2:
            tf.config.threading.set_inter_op_parallelism_threads(2)
            tf.config.threading.set_intra_op_parallelism_threads(max(1, cores // 2))
        else:
            tf.config.threading.set_inter_op_parallelism_threads(min(2, cores))
            tf.config.threading.set_intra_op_parallelism_threads(cores)
    except RuntimeError:
        pass  # TensorFlow already started in this process (tests): keep its settings


@contextlib.contextmanager
def forgetting_custom_gradients() -> Iterator[None]:
    """Unregister the gradient functions that `tf.custom_gradient` registers in this block.

    Inside a tf.function every call of a custom-gradient function (the fused kernel's, and
    model.py's step permutation) registers its gradient in TensorFlow's global registry under a
    new name, and nothing ever removes it. The gradient closes over the traced graph, and the
    graph over the model's variables: a model trained and dropped stayed in memory with its
    optimizer's slots (0.25 GB per IMDB ensemble member, benchmarks/RESULTS.md). A registered
    gradient is only called while a function is being traced, so the ones registered while a
    model trained can go once its training functions are built.
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
