"""TensorFlow and Keras, imported quietly and configured for the machine.

Importing this module imports TensorFlow (seconds): only commands that run a model import it.
TensorFlow's native code logs start-up chatter ("oneDNN custom operations are on", "Could not
find cuda drivers", ...) straight to file descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL in recent
releases. Our own messages must stay readable on stderr, so native log lines in absl's format are
filtered out of descriptor 2; everything else written there passes through unchanged.
"""

from __future__ import annotations

import ctypes
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


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_filter_native_logs()
_limit_malloc_arenas()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["configure_threads", "keras", "tf"]


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
