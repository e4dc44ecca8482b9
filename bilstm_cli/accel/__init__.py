"""Speed-ups: everything in bilstm that exists only to make training faster.

The model (model.py) is stock Keras: Embedding(mask_zero=True) -> (Bidirectional) LSTM ->
pooling -> Dense, trained by keras.optimizers.Adam and `model.fit`. `select` is the one seam: it
gives the layer and optimizer classes to build with for `training.kernel`, either Keras' own or
this package's, which have Keras' weights, config and results (tests/test_accel.py holds each
against Keras: outputs, gradients and Adam's updates).

- kernel.py, kernels/lstm_cpu.cc: a fused C++ LSTM kernel, compiled on first use; one op per
  direction forward and one backward instead of Keras' loop of small ops.
- layers.py: `RightPaddedLSTM` (the kernel in a keras.layers.LSTM; training promises it
  right-padded batches) and `TokenEmbedding` (the first LSTM multiplies the embedding table by
  its input kernel once per batch).
- optimizer.py: keras.optimizers.Adam with an embedding's sparse gradient summed by the kernel.
Together about 2.2x the training steps per second of Keras' masked LSTM and Adam on a 2-core CPU
(benchmarks/lstm_step.py). A GPU runs Keras' layers (cuDNN).

Private TensorFlow/Keras API, used only here (checked on TensorFlow 2.21.0 with Keras 3.15.1;
tests/test_accel.py::test_private_api_is_there fails loudly when an upgrade removes one):
- `keras.optimizers.Adam._momentums`, `._velocities`, `._get_variable_index`,
  `._use_weight_decay` (optimizer.py): Adam's slots of a variable, updated from row sums.
- `tensorflow.python.framework.ops._gradient_registry._registry` (kernel.py,
  `forgetting_custom_gradients`): the kernel's custom gradients, dropped once a model's
  training functions are built (else every trained model stays in memory).
- a Python attribute set on a tensor (layers.py, `LOOKUP_ATTRIBUTE`): the embedding's table and
  ids, for the LSTM reading it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KERNELS = ("auto", "keras", "fused")


@dataclass(frozen=True)
class Layers:
    """The classes a model is built and trained with."""

    name: str  # "keras" or "fused"
    embedding: Callable[..., Any]
    lstm: Callable[..., Any]
    adam: Callable[..., Any]
    # A context for building and training a model: the fused kernel's releases its custom
    # gradients on the way out.
    tracing: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext


def keras_layers() -> Layers:
    """Keras' own: the plain path (and a GPU's, through cuDNN)."""
    import keras

    return Layers("keras", keras.layers.Embedding, keras.layers.LSTM, keras.optimizers.Adam)


def select(kernel: str, log: Callable[[str], None]) -> Layers:
    """The layers for `training.kernel`: `keras`, Keras' own; `fused`, this package's (an
    error where they cannot run); `auto`, this package's where they can (a CPU, no
    distribution strategy, the kernel built), else Keras'. Builds the kernel on first use."""
    import tensorflow as tf

    from bilstm_cli.errors import UserError

    if kernel not in KERNELS:
        raise UserError(f"training.kernel: {kernel!r} is not one of {', '.join(KERNELS)}")
    if kernel == "keras":
        return keras_layers()
    why = None
    if tf.config.list_physical_devices("GPU"):
        why = "a GPU runs Keras' LSTM (cuDNN)"
    elif tf.distribute.has_strategy():
        why = "it does not run under a tf.distribute strategy"
    elif os.environ.get("BILSTM_FUSED_LSTM", "1") == "0":
        why = "BILSTM_FUSED_LSTM=0"
    if why is None:
        from bilstm_cli.accel import kernel as fused

        if fused.prepare(log):
            return fused_layers()
        if kernel == "fused":
            raise UserError("training.kernel: fused, but the fused CPU kernel could not be "
                            "built (see above). Use --set training.kernel=auto (or keras)")
        return keras_layers()  # prepare() said why
    if kernel == "fused":
        raise UserError(f"training.kernel: fused, but the fused CPU kernel is unusable here: "
                        f"{why}. Use --set training.kernel=auto (or keras)")
    log(f"fused LSTM kernel: off ({why}); training runs Keras' layers")
    return keras_layers()


def fused_layers() -> Layers:
    """This package's layers and Adam (the kernel must be loaded: kernel.prepare)."""
    from bilstm_cli.accel.kernel import forgetting_custom_gradients
    from bilstm_cli.accel.layers import RightPaddedLSTM, TokenEmbedding
    from bilstm_cli.accel.optimizer import Adam

    # bilstm's batches are right-padded without an empty row (layers.py: right_padded_inputs).
    lstm = functools.partial(RightPaddedLSTM, right_padded_inputs=True)
    return Layers("fused", TokenEmbedding, lstm, Adam, forgetting_custom_gradients)
