"""Keras' Embedding and LSTM, made faster on a CPU by the fused kernel (kernel.py).

Both keep Keras' weights and config; training builds with them (accel.select), and what is saved
is the same model built from Keras' own layers with these weights (model.keras loads anywhere).

- `RightPaddedLSTM` runs a right-padded, masked batch through the fused kernel: one op per
  direction forward, one backward, instead of Keras' loop of small ops that applies the mask in
  every step. With right padding the mask is not needed inside the loop: the forward direction
  reads each text's tokens before any padding, and the kernel's backward direction reverses each
  text within its length, as the cuDNN kernel does. Outputs at padded steps are zero and the
  last output is taken at each text's length: the numbers of Keras' masked loop.
- `TokenEmbedding` tells the first LSTM its table and the ids it looked up (an attribute on its
  output tensor, as Keras itself attaches a mask), so a batch with more tokens than the table has
  rows multiplies the table by the LSTM's input kernel once instead of every token by it.

- Training builds the LSTM with `right_padded_inputs=True` (accel.fused_layers): bilstm's own
  batches (text.encode, text.pad) are right-padded and no row is empty, so Keras' loop is not
  traced beside the kernel as a fallback for other masks; a batch that breaks the promise stops
  with an error instead. This halves the tracing of the first training step (benchmarks/
  first_step.py), which a user waits for at every start.

Anything the kernel does not compute exactly (another activation, dropout on the inputs in
training, float16, a mask that is not right padding or masks a whole text, recurrent dropout,
unroll, stateful, return_state, a GPU) runs Keras' own loop.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from bilstm_cli.accel import kernel

ops = keras.ops

# The attribute by which a TokenEmbedding's output tells the LSTM reading it what it looked up.
LOOKUP_ATTRIBUTE = "_bilstm_lookup"


@keras.saving.register_keras_serializable(package="bilstm")
class TokenEmbedding(keras.layers.Embedding):
    """Keras' Embedding (same weights and config) whose output carries its table and ids."""

    def __init__(self, *args: Any, normalize: bool = False, **kwargs: Any) -> None:
        # `normalize` is in the config of models saved before 2026-12-05, when
        # model.normalize_embeddings (tried, not kept) was removed.
        if normalize:
            raise ValueError("this model normalizes its embeddings (model.normalize_embeddings), "
                             "which bilstm no longer supports: train it again")
        super().__init__(*args, **kwargs)

    def call(self, inputs: Any) -> Any:
        outputs = super().call(inputs)
        if self.compute_dtype == "float32" and not self.quantization_mode:
            lookup = (tf.convert_to_tensor(self.embeddings), ops.cast(inputs, "int32"))
            setattr(outputs, LOOKUP_ATTRIBUTE, lookup)
        return outputs


@keras.saving.register_keras_serializable(package="bilstm")
class RightPaddedLSTM(keras.layers.LSTM):
    """keras.layers.LSTM (same weights and config), through the fused kernel where it can.
    `right_padded_inputs`: the caller promises right-padded masks without an empty row; Keras'
    loop is then not built for other masks, and a mask that breaks the promise is an error."""

    def __init__(self, *args: Any, right_padded_inputs: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.right_padded_inputs = right_padded_inputs

    def get_config(self) -> dict[str, Any]:  # Bidirectional builds its backward copy from it
        return {**super().get_config(), "right_padded_inputs": self.right_padded_inputs}

    def inner_loop(self, sequences: Any, initial_state: Any, mask: Any,
                   training: bool = False) -> Any:
        keras_loop = super().inner_loop
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if (mask is None or not kernel.usable(self.cell, training) or self.recurrent_dropout
                or self.unroll or self.stateful or self.return_state
                or tf.config.list_logical_devices("GPU")):
            return keras_loop(sequences, initial_state, mask=mask, training=training)
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
        right_padded = ops.all(ops.equal(
            ops.cast(mask, "bool"), tf.sequence_mask(lengths, ops.shape(mask)[1])))
        usable = ops.logical_and(right_padded, ops.all(lengths > 0))
        if self.right_padded_inputs:
            check = tf.debugging.Assert(usable, [
                "RightPaddedLSTM(right_padded_inputs=True) got a mask that is not right padding "
                "or masks a whole row"])
            with tf.control_dependencies([check]):
                lengths = tf.identity(lengths)
        lookup = getattr(sequences, LOOKUP_ATTRIBUTE, None)
        if lookup is not None:
            return self._lookup_loop(sequences, lookup, initial_state, mask, lengths, usable,
                                     training)
        if self.right_padded_inputs:
            return self._token_loop(sequences, initial_state, lengths, training)
        return tf.cond(
            usable,
            lambda: self._token_loop(sequences, initial_state, lengths, training),
            lambda: keras_loop(sequences, initial_state, mask=mask, training=training),
        )

    def _lookup_loop(self, sequences: Any, lookup: Any, initial_state: Any, mask: Any,
                     lengths: Any, usable: Any, training: bool) -> Any:
        """For a layer reading a TokenEmbedding: a batch with more tokens than the table has rows
        multiplies the table by the input kernel and looks the products up
        (kernel.lstm_over_table: the same numbers and gradients for fewer multiply-adds).

        One switch_case, not a cond inside `_token_loop`'s: TensorFlow cannot differentiate a
        custom gradient inside nested conds.
        """
        embeddings, ids = lookup
        cell = self.cell

        def keras_branch() -> Any:
            return super(RightPaddedLSTM, self).inner_loop(
                sequences, initial_state, mask=mask, training=training)

        def token_branch() -> Any:
            return self._token_loop(sequences, initial_state, lengths, training)

        def table_branch() -> Any:
            h0, c0 = initial_state
            outputs, last_output = kernel.lstm_over_table(
                sequences, embeddings, tf.convert_to_tensor(cell.kernel), ids, self._bias(),
                tf.convert_to_tensor(cell.recurrent_kernel), h0, c0, lengths,
                reverse=self.go_backwards, training=bool(training))
            return self._result(outputs, last_output, initial_state)

        more_tokens = tf.size(ids) > tf.shape(embeddings)[0]
        if self.right_padded_inputs:  # no Keras loop to trace beside the kernel
            return tf.cond(more_tokens, table_branch, token_branch)
        branch = tf.where(usable, tf.where(more_tokens, 2, 1), 0)
        return tf.switch_case(branch, [keras_branch, token_branch, table_branch])

    def _token_loop(self, sequences: Any, initial_state: Any, lengths: Any,
                    training: bool) -> Any:
        """The kernel over the inputs times the input kernel (without the bias)."""
        x_proj = tf.einsum("btd,dg->btg", sequences, self.cell.kernel)
        h0, c0 = initial_state
        outputs, last_output = kernel.lstm(
            x_proj, self._bias(), tf.convert_to_tensor(self.cell.recurrent_kernel), h0, c0,
            lengths, reverse=self.go_backwards, training=bool(training))
        return self._result(outputs, last_output, initial_state)

    def _bias(self) -> Any:
        cell = self.cell
        return tf.convert_to_tensor(cell.bias) if cell.use_bias else tf.zeros([4 * self.units])

    def _result(self, outputs: Any, last_output: Any, initial_state: Any) -> Any:
        """What Keras' inner_loop returns; the states are unused (return_state is off) and only
        their shape counts, so they are the initial ones."""
        if not self.return_sequences:
            outputs = ops.expand_dims(last_output, 1)
        return last_output, outputs, tuple(initial_state)
