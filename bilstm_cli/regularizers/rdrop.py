"""Consistency between two dropout passes (`training.consistency`): R-Drop.

Liang et al., "R-Drop: Regularized Dropout for Neural Networks" (NeurIPS 2021): every text of a
batch runs through the model twice, each time with its own dropout (and word dropout) draw, and
the loss adds WEIGHT x the symmetric KL divergence between the two predictions to the
cross-entropy of both. The model is taught to give the same answer whichever units and words it
loses, instead of memorizing its training texts. On IMDB it was the first regularizer to move a
single model's test accuracy beyond noise (benchmarks/RESULTS.md).

A batch is learned in two halves, each half's texts doubled: the same gradient as one pass
over the doubled batch, with the activations of one batch of the usual size in memory at a time,
and the embedding's gradient summed per half into what Adam takes from it.
Predicting is unchanged: the saved model is model.py's plain functional model.

Rows summed per half need the accel package's Adam (training.kernel: fused); with Keras' Adam the
halves' rows are joined, the same update for more memory.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import tensorflow as tf

from bilstm_cli.regularizers.base import Regularizer, add_gradients, replicas


class RDrop(Regularizer):
    """`model`'s layers, trained with R-Drop; `strength` is the divergence's weight."""

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_weights
        count = tf.shape(x)[0]
        texts = tf.cast(count, "float32")
        # Two halves of the batch's texts. A batch of one text learns it once: its second half
        # is that text again, with weight 0 (a graph cannot skip the pass).
        middle = count - count // 2
        second_start = tf.minimum(middle, count - 1)
        halves = [(0, middle, 1.0), (second_start, count, tf.cast(count > 1, "float32"))]

        # The embedding's gradient is a row per token of both passes; joined over the halves
        # those rows are the run's largest tensor. Adam needs only their sums and their squares'
        # sums per table row: the accel package's Adam takes them, and each half's rows are then
        # summed as soon as they are made.
        table_row_sums = getattr(self.optimizer, "table_row_sums", None)
        summed_rows = table_row_sums is not None and self.optimizer.takes_row_sums()
        total_gradients: list[Any] | None = None
        cross_entropy_sum = tf.constant(0.0)
        first_predictions = []
        for start, end, share in halves:
            weights = None if sample_weight is None else sample_weight[start:end]
            gradients, cross_entropy, first = self._half(
                x[start:end], y[start:end], weights, share, texts, total_gradients)
            if summed_rows:
                gradients = [_row_sums_or_gradient(table_row_sums(g, v), g)
                             for g, v in zip(gradients, variables)]
            total_gradients = gradients if total_gradients is None else [
                _add(a, b) for a, b in zip(total_gradients, gradients)]
            cross_entropy_sum += share * cross_entropy
            first_predictions.append(first)

        assert total_gradients is not None
        self._apply(total_gradients, variables, summed_rows)
        # The reported loss is the cross-entropy alone: the same loss as validation's.
        self.record_loss(tf.math.divide_no_nan(cross_entropy_sum, 2.0 * texts), count)
        y_pred = tf.concat([first_predictions[0], first_predictions[1][middle - second_start:]],
                           0)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _half(self, x: Any, y: Any, sample_weight: Any, share: Any, texts: Any,
              after: list[Any] | None) -> tuple[list[Any], Any, Any]:
        """One half's gradients, its cross-entropy sum and its first pass's predictions. It
        starts once the gradients `after` are done: the graph would otherwise run both halves
        at once, with both halves' activations in memory."""
        if after is not None:
            with tf.control_dependencies(_tensors(after)):
                x = tf.identity(x)
        with tf.GradientTape() as tape:
            predictions = self(tf.concat([x, x], 0), training=True)
            first, second = tf.split(predictions, 2)
            cross_entropy = _cross_entropy_sum(y, first, sample_weight) \
                + _cross_entropy_sum(y, second, sample_weight)
            divergence = tf.reduce_sum(_symmetric_kl(first, second))
            # The batch's loss is the mean cross-entropy over its 2 x count predictions plus
            # WEIGHT x the mean of half the symmetric KL over its texts; each half adds its
            # share, so the two gradients add up to the batch's.
            # Under a strategy a replica may get no texts of a small last batch (divide_no_nan),
            # and its mean is divided among the replicas, as Keras divides its own loss.
            loss = share * tf.math.divide_no_nan(
                cross_entropy / 2.0 + self.strength * 0.5 * divergence, texts * replicas())
            scaled_loss = self.optimizer.scale_loss(loss)  # as Keras' train_step does
        return tape.gradient(scaled_loss, self.trainable_weights), cross_entropy, first

    def _apply(self, gradients: list[Any], variables: list[Any], summed_rows: bool) -> None:
        """One Adam update from the batch's gradients (row sums through the accel Adam)."""
        if summed_rows and not self.optimizer.built:  # as apply_gradients would on its first call
            with keras.name_scope(self.optimizer.name, caller=self.optimizer):
                self.optimizer.build(variables)
        others = []
        for gradient, variable in zip(gradients, variables):
            if isinstance(gradient, RowSums):
                self.optimizer.apply_row_sums(gradient.sums, gradient.square_sums, variable)
            else:
                others.append((gradient, variable))
        self.optimizer.apply_gradients(others)  # counts the step: after apply_row_sums


class RowSums(NamedTuple):
    """A sparse gradient as Adam uses it (accel/optimizer.py: table_row_sums)."""

    sums: Any
    square_sums: Any


def _row_sums_or_gradient(sums: tuple[Any, Any] | None, gradient: Any) -> Any:
    return gradient if sums is None else RowSums(*sums)


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, RowSums):
        return RowSums(a.sums + b.sums, a.square_sums + b.square_sums)
    return add_gradients(a, b)


def _cross_entropy_sum(y: Any, predictions: Any, sample_weight: Any) -> Any:
    """The summed cross-entropy of the batch (times each text's weight, as Keras weighs it)."""
    if predictions.shape[-1] == 1:
        losses = tf.reduce_mean(keras.ops.binary_crossentropy(
            tf.cast(y, predictions.dtype), predictions), axis=-1)
    else:
        losses = keras.ops.sparse_categorical_crossentropy(tf.reshape(y, [-1]), predictions)
    if sample_weight is not None:
        losses = losses * tf.cast(tf.reshape(sample_weight, [-1]), losses.dtype)
    return tf.reduce_sum(losses)


def _symmetric_kl(first: Any, second: Any) -> Any:
    """KL(first || second) + KL(second || first) for each text, from probabilities (a sigmoid's
    for two classes: the divergence of the two Bernoulli distributions)."""
    epsilon = keras.config.epsilon()  # the clip of Keras' own cross-entropy
    p = tf.clip_by_value(first, epsilon, 1.0 - epsilon)
    q = tf.clip_by_value(second, epsilon, 1.0 - epsilon)
    if first.shape[-1] == 1:  # (p - q)(logit p - logit q)
        return tf.reduce_sum((p - q) * (tf.math.log(p / (1.0 - p)) - tf.math.log(q / (1.0 - q))),
                             axis=-1)
    return tf.reduce_sum((p - q) * (tf.math.log(p) - tf.math.log(q)), axis=-1)


def _tensors(gradients: list[Any]) -> list[Any]:
    tensors = []
    for gradient in gradients:
        if isinstance(gradient, RowSums):
            tensors += [gradient.sums, gradient.square_sums]
        elif isinstance(gradient, tf.IndexedSlices):
            tensors.append(gradient.values)
        elif gradient is not None:
            tensors.append(gradient)
    return tensors
