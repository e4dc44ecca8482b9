"""Keras' Adam, with an embedding's sparse gradient summed into rows by the fused kernel.

An embedding's gradient is one row per token of the batch (IndexedSlices). Keras' Adam sums it
into a dense table twice a step: the gradient for the first moment, and its square, per token,
for the second (squaring per occurrence, not the summed gradient: that trains IMDB about 1.5
points better than textbook Adam, benchmarks/RESULTS.md). Both sums are TensorFlow's segment
sum, single-threaded, about 10% of a BiLSTM training step on this tool's CPU. The kernel's
scatter op does both in one pass over the rows, on all of the op's threads, and gives the same
numbers bit for bit; everything else is Keras' Adam as it is.

With `use_ema` (training.ema_momentum) the optimizer also keeps Keras' moving average of every
trainable weight. Keras' fit copies the averages into the model at the end of every `fit` call;
the training loop here calls `fit` once per epoch, so this Adam leaves that to `AveragedWeights`,
which puts them in only while validating and saving.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import numpy as np

from bilstm_cli import fused_lstm
from bilstm_cli.backend import keras, tf

ops = keras.ops


@keras.saving.register_keras_serializable(package="bilstm")
class Adam(keras.optimizers.Adam):
    """keras.optimizers.Adam (same arguments, variables and results), faster on embeddings."""

    def finalize_variable_values(self, var_list: Any) -> None:
        """Training goes on after `fit` returns (one call per epoch): keep the trained weights."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        kernel_ops = fused_lstm.ops()
        if (kernel_ops is None or self.amsgrad or not isinstance(gradient, tf.IndexedSlices)
                or variable.dtype != "float32" or len(variable.shape) != 2
                or tf.config.list_logical_devices("GPU")):
            return super().update_step(gradient, variable, learning_rate)
        sums, square_sums = kernel_ops.bilstm_scatter_add_rows(
            tf.cast(gradient.values, tf.float32), tf.cast(gradient.indices, tf.int32),
            tf.shape(variable)[0], squares=True)

        # From here on, keras.optimizers.Adam.update_step with the two sums in place of
        # `gradient` and `ops.square(gradient)`, op for op.
        lr = ops.cast(learning_rate, variable.dtype)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        self.assign_add(m, ops.multiply(ops.subtract(sums, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(square_sums, v), 1 - self.beta_2))
        self.assign_sub(
            variable,
            ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), self.epsilon)))
        return None


class AveragedWeights:
    """While inside, the model's trainable weights are the optimizer's moving averages; on the
    way out the trained weights come back and the averages stay as they were."""

    def __init__(self, optimizer: keras.optimizers.Optimizer) -> None:
        self.pairs = list(zip(optimizer._trainable_variables,
                              optimizer._model_variables_moving_average, strict=True))
        self.trained: list[np.ndarray] | None = None

    def __enter__(self) -> AveragedWeights:
        if self.trained is None:  # not already inside
            self.trained = [variable.numpy() for variable, _ in self.pairs]
            for variable, average in self.pairs:
                variable.assign(average)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.trained is not None:
            for (variable, _), value in zip(self.pairs, self.trained, strict=True):
                variable.assign(value)
            self.trained = None
