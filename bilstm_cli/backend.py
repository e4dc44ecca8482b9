"""The process's set-up for TensorFlow: `setup()` before it is imported, then the threads.

Importing this module neither imports TensorFlow nor changes anything.

TensorFlow's native code logs start-up chatter ("oneDNN custom operations are on", "Could not
find cuda drivers", ...) straight to file descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL in recent
releases. Our own messages must stay readable on stderr, so native log lines in absl's format are
filtered out of descriptor 2; everything else written there passes through unchanged. Its Python
logger's advice on tf.function retracing is dropped too (`_drop_retracing_advice`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import threading

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


class _RetracingAdvice(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls to <function> triggered tf.function
    retracing" warning. Predicting on texts bucketed by length gives each bucket its own input
    shape, and every ensemble member its own predict function (Keras' make_predict_function), so
    an evaluation on long texts traces a few times per member by design: the warning, advice
    for whoever writes the loop, only reached users as two screens of noise on stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _drop_retracing_advice() -> None:
    """Filter TensorFlow's Python logger ("tensorflow", which exists before TensorFlow is
    imported: tf.get_logger returns it); once only."""
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _RetracingAdvice) for f in logger.filters):
        logger.addFilter(_RetracingAdvice())


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


_done = False


def setup(filter_native_logs: bool = True) -> None:
    """Prepare the process for TensorFlow, before it is imported: quiet its native logs (with
    `filter_native_logs`, also those it writes to file descriptor 2 itself), cap malloc's arenas,
    pool its CPU memory. The CLI calls it as it starts, the Python API (api.py) on first use;
    importing bilstm_cli changes nothing. Later calls do nothing."""
    global _done
    if _done:
        return
    _done = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _drop_retracing_advice()
    if filter_native_logs:
        _filter_native_logs()
    _limit_malloc_arenas()
    _pool_cpu_memory()


def configure_threads(bidirectional: bool, threads: int | None = None) -> None:
    """Set TensorFlow's CPU thread pools before it starts them.

    By default TensorFlow spreads every small LSTM matmul over all cores. A bidirectional layer
    has two independent chains (forward and backward): running them side by side, each on its
    share of the cores, is faster than splitting every step between cores.
    """
    import tensorflow as tf

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
