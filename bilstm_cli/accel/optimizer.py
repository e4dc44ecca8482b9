"""Keras' Adam, with an embedding's sparse gradient summed into rows by the fused kernel.

An embedding's gradient is one row per token of the batch (IndexedSlices). Keras' Adam sums it
into a dense table twice a step: the gradient for the first moment, and its square, per token,
for the second (squaring per occurrence, not the summed gradient: that trains IMDB about 1.5
points better than textbook Adam, benchmarks/RESULTS.md). Both sums are TensorFlow's segment
sum, single-threaded, about 10% of a BiLSTM training step on this tool's CPU. The kernel's
scatter op does both in one pass over the rows, on all of the op's threads, and gives the same
numbers bit for bit; everything else is Keras' Adam as it is. `apply_row_sums` takes the two
sums instead of the rows, for a gradient gathered in parts (R-Drop's two halves of a batch).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from bilstm_cli.accel import kernel

ops = keras.ops


@keras.saving.register_keras_serializable(package="bilstm")
class Adam(keras.optimizers.Adam):
    """keras.optimizers.Adam (same arguments, variables and results), faster on embeddings."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if (kernel.ops() is None or self.amsgrad or not is_table_gradient(gradient, variable)
                or tf.config.list_logical_devices("GPU")):
            return super().update_step(gradient, variable, learning_rate)
        sums, square_sums = row_sums(gradient, tf.shape(variable)[0])
        self._update_from_row_sums(sums, square_sums, variable, learning_rate)
        return None

    def takes_row_sums(self) -> bool:
        """Whether `apply_row_sums` does for this optimizer what `apply_gradients` would."""
        return not (self.amsgrad or self.global_clipnorm or self.clipvalue
                    or self.gradient_accumulation_steps or self.loss_scale_factor is not None
                    or tf.distribute.has_strategy())

    def table_row_sums(self, gradient: Any, variable: Any) -> tuple[Any, Any] | None:
        """`row_sums` of an embedding's sparse gradient when `apply_row_sums` can take them in
        place of the gradient (R-Drop sums each half's rows as soon as they are made); None for
        any other gradient, or where this optimizer's settings need the rows themselves."""
        if not self.takes_row_sums() or not is_table_gradient(gradient, variable):
            return None
        return row_sums(gradient, tf.shape(variable)[0])

    def apply_row_sums(self, sums: Any, square_sums: Any, variable: Any) -> None:
        """This step's update of an embedding from its gradient's rows summed per table row and
        their squares summed (`row_sums`), for a gradient gathered in parts whose rows would
        take too much memory joined (consistency.py): what `apply_gradients` does with the
        rows, clipnorm and weight decay included. Call it before `apply_gradients` for the
        step's other variables, which counts the step and updates the moving averages."""
        if self.clipnorm:
            # tf.clip_by_norm of the rows scales each by clipnorm / max(norm, clipnorm), with
            # the norm over every row: their squares' sum is square_sums' sum.
            norm = tf.sqrt(tf.reduce_sum(square_sums))
            scale = self.clipnorm / tf.maximum(norm, self.clipnorm)
            sums, square_sums = sums * scale, square_sums * tf.square(scale)
        if self.weight_decay and self._use_weight_decay(variable):
            variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype)
                                * tf.cast(self.learning_rate, variable.dtype))
        self._update_from_row_sums(sums, square_sums, variable, self.learning_rate)
        if variable.constraint is not None:
            variable.assign(variable.constraint(variable))

    def _update_from_row_sums(self, sums: Any, square_sums: Any, variable: Any,
                              learning_rate: Any) -> None:
        # keras.optimizers.Adam.update_step with the two sums in place of `gradient` and
        # `ops.square(gradient)`, op for op.
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


def is_table_gradient(gradient: Any, variable: Any) -> bool:
    """A float32 table's sparse gradient (an embedding's): what the row sums are for."""
    return (isinstance(gradient, tf.IndexedSlices) and variable.dtype == "float32"
            and len(variable.shape) == 2)


def row_sums(gradient: Any, rows: Any) -> tuple[Any, Any]:
    """A sparse gradient's rows (one per token) summed per table row, and their squares summed:
    all that Adam takes from it. The kernel's scatter op where it is built, else TensorFlow's
    segment sums."""
    values = tf.cast(gradient.values, tf.float32)
    indices = tf.cast(gradient.indices, tf.int32)
    kernel_ops = kernel.ops()
    if kernel_ops is not None and not tf.config.list_logical_devices("GPU"):
        sums, square_sums = kernel_ops.bilstm_scatter_add_rows(values, indices, rows,
                                                               squares=True)
        return sums, square_sums
    return (tf.math.unsorted_segment_sum(values, indices, rows),
            tf.math.unsorted_segment_sum(tf.square(values), indices, rows))
