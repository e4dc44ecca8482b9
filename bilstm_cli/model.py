"""The Keras model: embedding, a stack of (bi)LSTM layers, pooling, dropout, a dense head.

It takes right-padded integer ids (0 = padding). The embedding's mask tells every LSTM to skip
padding, so the backward direction starts at each text's last real token, and right padding
plus masking is the layout the cuDNN kernel accepts on a GPU (with recurrent_dropout 0).

Two layers are ours, with Keras' weights and config (a saved model loads as Keras' own would,
and export.py reads them alike): RightPaddedLSTM runs the fused CPU kernel, and TokenEmbedding
hands the first LSTM its table and ids so the kernel can multiply the table by the input kernel
once instead of every token by it (when the batch has more tokens than the table has rows).
"""

from __future__ import annotations

import numpy as np

from bilstm_cli import fused_lstm
from bilstm_cli.backend import keras, tf  # first: it quiets TensorFlow's start-up logs
from bilstm_cli.config import ModelConfig
from bilstm_cli.text import PAD_ID, UNK_ID
from bilstm_cli.word_vectors import initial_table

# Keras' generic RNN loop, the one keras.layers.LSTM itself runs on a CPU (not in the public
# API; tests/test_model.py checks our use of it against keras.layers.LSTM).
keras_backend = keras.src.backend

layers, ops = keras.layers, keras.ops


# The attribute by which a TokenEmbedding's output tells the LSTM reading it what it looked up
# (as Keras itself attaches a layer's mask to its output tensor).
LOOKUP_ATTRIBUTE = "_bilstm_lookup"


@keras.saving.register_keras_serializable(package="bilstm")
class WordDropout(layers.Layer):
    """While training, replaces each real token's id by [UNK]'s with probability `rate`.

    Dropout on whole words: the model cannot lean on any one word of a text, and learns what to
    do with words it has not seen. Padding stays padding, so the mask is unchanged.
    """

    def __init__(self, rate: float, unknown_id: int = UNK_ID, seed: int | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate, self.unknown_id, self.seed = rate, unknown_id, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, ids, training=None):
        if not training or not self.rate:
            return ids
        dropped = keras.random.uniform(ops.shape(ids), seed=self.seed_generator) < self.rate
        return ops.where(ops.logical_and(dropped, ids != PAD_ID),
                         ops.cast(self.unknown_id, ids.dtype), ids)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "unknown_id": self.unknown_id,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="bilstm")
class TokenEmbedding(layers.Embedding):
    """Keras' Embedding (same weights and config) whose output carries its table and ids.

    The first LSTM multiplies every token's embedding by its input kernel; when it knows the
    table and the ids it can multiply the table once instead (RightPaddedLSTM._lookup_loop).

    With `normalize` (model.normalize_embeddings), each dimension is standardized over the
    vocabulary, words weighted by their frequency in the training texts (`frequencies`, a
    weight kept in the model), as Miyato et al. (2017) do for adversarial training: the
    embeddings cannot grow to make a perturbation of fixed size (training.adversarial) small.
    The statistics are constants for the gradient, so it stays one row per token.
    """

    # A tensor the shape of the output, added to it while set (adversarial.py sets it for one
    # call in training); the table lookup is then off, as the sum is no longer a table row.
    perturbation = None

    def __init__(self, *args, normalize: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.normalize = normalize

    def build(self, input_shape=None):
        if self.built:
            return
        super().build(input_shape)
        if getattr(self, "normalize", False):  # Embedding(weights=...) builds in __init__
            self.frequencies = self.add_weight(
                shape=(self.input_dim,), initializer="ones", trainable=False,
                name="frequencies")

    @property
    def variable_serialization_spec(self):
        """Keras' Embedding saves its table alone; the frequencies are saved after it."""
        spec = dict(super().variable_serialization_spec)
        if self.normalize:
            spec[None] = [*spec[None], "frequencies"]
        return spec

    def statistics(self):
        """The frequency-weighted mean and 1/standard deviation per dimension ([dim] each)."""
        table = tf.stop_gradient(tf.convert_to_tensor(self.embeddings))
        weights = tf.convert_to_tensor(self.frequencies)
        weights = weights / tf.maximum(tf.reduce_sum(weights), 1e-12)
        mean = tf.linalg.matvec(table, weights, transpose_a=True)
        variance = tf.linalg.matvec(tf.square(table - mean), weights, transpose_a=True)
        return mean, tf.math.rsqrt(variance + 1e-6)

    def call(self, inputs):
        outputs = super().call(inputs)
        if self.normalize:
            mean, inverse_std = self.statistics()
            outputs = (outputs - mean) * inverse_std
        if self.perturbation is not None:
            return outputs + self.perturbation
        if self.compute_dtype == "float32" and not self.quantization_mode:
            table = tf.convert_to_tensor(self.embeddings)
            if self.normalize:  # the table the outputs are rows of
                table = (table - mean) * inverse_std
            setattr(outputs, LOOKUP_ATTRIBUTE, (table, ops.cast(inputs, "int32")))
        return outputs

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}


@keras.saving.register_keras_serializable(package="bilstm")
class RightPaddedLSTM(layers.LSTM):
    """A Keras LSTM that runs right-padded batches on a CPU without masking every step.

    Keras' generic loop applies the mask inside every time step (a select per state, forward
    and backward pass): about 18% of a BiLSTM training step on this CPU. Right padding makes that
    unnecessary. The forward direction reads each text's tokens before any padding, so the
    outputs that count never see it; the backward direction first reverses each text within its
    length, as the cuDNN kernel does. Outputs at padded steps are zeroed (as cuDNN leaves them)
    and the last output is taken at each text's length: the same numbers as the masked loop.

    That unmasked loop is the fused C++ kernel (fused_lstm.py: one op per direction for the
    forward pass, one for the backward pass) where it is built and computes exactly what the
    cell would (tanh/sigmoid, float32, no input dropout in training); else Keras' own loop.

    Same weights and config as `keras.layers.LSTM`. Keras' own path is kept on a GPU (cuDNN),
    and for anything else: a mask that is not right padding or masks a whole text, recurrent
    dropout, unroll, stateful, or return_state (the unmasked loop's final states would include
    the padding).
    """

    # False runs Keras' loop unmasked instead of the fused kernel (benchmarks compare the two).
    use_fused_kernel = True

    def inner_loop(self, sequences, initial_state, mask, training=False):
        keras_loop = super().inner_loop
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if (mask is None or self.recurrent_dropout or self.unroll or self.stateful
                or self.return_state or tf.config.list_logical_devices("GPU")):
            return keras_loop(sequences, initial_state, mask=mask, training=training)
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
        right_padded = ops.all(ops.equal(
            ops.cast(mask, "bool"), tf.sequence_mask(lengths, ops.shape(mask)[1])))
        usable = ops.logical_and(right_padded, ops.all(lengths > 0))
        lookup = getattr(sequences, LOOKUP_ATTRIBUTE, None)
        if lookup is not None and self.use_fused_kernel and fused_lstm.usable(self.cell, training):
            return self._lookup_loop(sequences, lookup, initial_state, mask, lengths, usable,
                                     training)
        return tf.cond(
            usable,
            lambda: self._unmasked_loop(sequences, initial_state, mask, lengths, training),
            lambda: keras_loop(sequences, initial_state, mask=mask, training=training),
        )

    def _lookup_loop(self, sequences, lookup, initial_state, mask, lengths, usable, training):
        """The fused kernel for a layer reading a TokenEmbedding: a batch with more tokens than
        the table has rows multiplies the table by the input kernel and looks the products up
        (fused_lstm.lstm_over_table: the same numbers and gradients for fewer multiply-adds).

        One switch_case, not a cond inside `_unmasked_loop`'s: TensorFlow cannot differentiate a
        custom gradient inside nested conds.
        """
        embeddings, ids = lookup
        cell = self.cell
        kernel = tf.convert_to_tensor(cell.kernel)

        def keras_branch():
            return super(RightPaddedLSTM, self).inner_loop(
                sequences, initial_state, mask=mask, training=training)

        def token_branch():
            return self._unmasked_loop(sequences, initial_state, mask, lengths, training)

        def table_branch():
            h0, c0 = initial_state
            outputs, last_output = fused_lstm.lstm_over_table(
                sequences, embeddings, kernel, ids, self._bias(),
                tf.convert_to_tensor(cell.recurrent_kernel), h0, c0, lengths,
                reverse=self.go_backwards, training=bool(training))
            return self._fused_result(outputs, last_output, initial_state)

        more_tokens = tf.size(ids) > tf.shape(embeddings)[0]
        branch = tf.where(usable, tf.where(more_tokens, 2, 1), 0)
        return tf.switch_case(branch, [keras_branch, token_branch, table_branch])

    def _unmasked_loop(self, sequences, initial_state, mask, lengths, training):
        if self.use_fused_kernel and fused_lstm.usable(self.cell, training):
            x_proj = tf.einsum("btd,dg->btg", sequences, self.cell.kernel)
            return self._fused_loop(x_proj, initial_state, lengths, training)
        steps = ops.shape(sequences)[1]
        if self.go_backwards:
            reverse = _reversed_within_lengths(lengths, steps)
            sequences = _permute_steps(sequences, reverse, reverse)

        def step(inputs, states):
            output, new_states = self.cell(inputs, states, training=training)
            return output, list(new_states)

        _, outputs, states = keras_backend.rnn(
            step, sequences, list(initial_state), mask=None,
            input_length=sequences.shape[1], return_all_outputs=True,
        )
        outputs = outputs * ops.expand_dims(ops.cast(mask, outputs.dtype), -1)
        last_output = tf.gather(outputs, lengths - 1, axis=1, batch_dims=1)
        if not self.return_sequences:
            outputs = ops.expand_dims(last_output, 1)
        elif self.go_backwards:
            # Keras' go_backwards order: output step j is the text's step T-1-j, so the text's
            # last token's output comes last and the padding first.
            padding = ops.expand_dims(steps - lengths, 1)
            t = ops.expand_dims(ops.arange(steps), 0)
            keras_order = ops.where(t >= padding, t - padding, steps - 1 - t)
            back = ops.where(t < ops.expand_dims(lengths, 1), t + padding, steps - 1 - t)
            outputs = _permute_steps(outputs, keras_order, back)
        # Unused (return_state is off): the states after the padding, for the shape only.
        return last_output, outputs, states

    def _fused_loop(self, x_proj, initial_state, lengths, training):
        """The fused C++ kernel (fused_lstm.py): the same outputs and gradients, faster.

        `x_proj` is the inputs times the input kernel, without the bias.
        """
        h0, c0 = initial_state
        outputs, last_output = fused_lstm.lstm(
            x_proj, self._bias(), tf.convert_to_tensor(self.cell.recurrent_kernel), h0, c0,
            lengths, reverse=self.go_backwards, training=bool(training))
        return self._fused_result(outputs, last_output, initial_state)

    def _bias(self):
        cell = self.cell
        return tf.convert_to_tensor(cell.bias) if cell.use_bias else tf.zeros([4 * self.units])

    def _fused_result(self, outputs, last_output, initial_state):
        """What Keras' inner_loop returns; the states are unused (return_state is off) and only
        their shape counts, so they are the initial ones."""
        if not self.return_sequences:
            outputs = ops.expand_dims(last_output, 1)
        return last_output, outputs, tuple(initial_state)


def _reversed_within_lengths(lengths, steps):
    """Per text, the time index that reverses its first `length` steps and leaves the rest."""
    t = ops.expand_dims(ops.arange(steps), 0)
    lengths = ops.expand_dims(lengths, 1)
    return ops.where(t < lengths, lengths - 1 - t, t)


@tf.custom_gradient
def _permute_steps(sequences, order, inverse):
    """Reorder time steps per text (a gather; TensorFlow's reverse_sequence is slower on a CPU).

    The gradient is the inverse permutation, again a gather, instead of the generic gather
    gradient (a scatter-add).
    """

    def gradient(upstream):
        return tf.gather(upstream, inverse, batch_dims=1), None, None

    return tf.gather(sequences, order, batch_dims=1), gradient


@keras.saving.register_keras_serializable(package="bilstm")
class MaskedGlobalMaxPooling1D(layers.Layer):
    """Max over time of the unmasked steps (Keras' GlobalMaxPooling1D ignores the mask)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            lowest = ops.cast(ops.full_like(inputs, -3.0e38), inputs.dtype)
            inputs = ops.where(ops.expand_dims(mask, -1), inputs, lowest)
        return ops.max(inputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def build_model(config: ModelConfig, vocab_size: int, num_classes: int,
                token_counts: np.ndarray | None = None,
                word_vectors: np.ndarray | None = None) -> keras.Model:
    """`token_counts`: how often each id occurs in the training texts (for
    `normalize_embeddings`; without them every word weighs the same). `word_vectors`: the
    embedding's initial rows for `embedding_init: cooccurrence` (word_vectors.py), scaled by
    `embedding_init_scale`; without them the table starts random."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = ids
    if config.word_dropout:
        x = WordDropout(config.word_dropout, name="word_dropout")(x)
    embedding = TokenEmbedding(vocab_size, config.embedding_dim, mask_zero=True,
                               normalize=config.normalize_embeddings, name="embedding")
    x = embedding(x)
    if word_vectors is not None:
        embedding.embeddings.assign(initial_table(
            np.asarray(embedding.embeddings), word_vectors, config.embedding_init_scale))
    if config.normalize_embeddings and token_counts is not None:
        embedding.frequencies.assign(np.asarray(token_counts, dtype="float32"))
    if config.embedding_dropout:
        # Drops whole embedding channels for a text (all its time steps alike); keeps the mask.
        x = layers.SpatialDropout1D(config.embedding_dropout, name="embedding_dropout")(x)
    for index in range(config.layers):
        last_layer = index == config.layers - 1
        lstm = RightPaddedLSTM(
            config.units,
            return_sequences=not (last_layer and config.pooling == "last"),
            recurrent_dropout=config.recurrent_dropout,
            name=f"lstm_{index + 1}",
        )
        if config.bidirectional:
            lstm = layers.Bidirectional(lstm, merge_mode=config.merge_mode,
                                        name=f"bidirectional_{index + 1}")
        x = lstm(x)
        if not last_layer and config.dropout:
            x = layers.Dropout(config.dropout, name=f"dropout_{index + 1}")(x)
    if config.pooling == "max":
        x = MaskedGlobalMaxPooling1D(name="max_pooling")(x)
    elif config.pooling == "mean":
        x = layers.GlobalAveragePooling1D(name="mean_pooling")(x)
    elif config.pooling == "max_mean":
        x = layers.Concatenate(name="max_mean_pooling")([
            MaskedGlobalMaxPooling1D(name="max_pooling")(x),
            layers.GlobalAveragePooling1D(name="mean_pooling")(x)])
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    if num_classes == 2:
        outputs = layers.Dense(1, activation="sigmoid", name="output")(x)
    else:
        outputs = layers.Dense(num_classes, activation="softmax", name="output")(x)
    name = "bilstm" if config.bidirectional else "lstm"
    return keras.Model(ids, outputs, name=name)


def ensemble_model(members: list[keras.Model]) -> keras.Model:
    """One model whose output is the mean of the members' probabilities (model.ensemble). It is
    what an ensemble's model.keras holds, so predict, evaluate and export take it like any other
    model. The members are renamed member_1, member_2, ... (a model's layer names must differ)."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    for index, member in enumerate(members):
        member.name = f"member_{index + 1}"
    outputs = layers.Average(name="average")([member(ids) for member in members])
    return keras.Model(ids, outputs, name="ensemble")


def ensemble_members(model: keras.Model) -> list[keras.Model]:
    """The members of an `ensemble_model` (nested models and their Average, nothing else), or
    [model] for a single one."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    others = [layer for layer in model.layers
              if not isinstance(layer, (keras.Model, layers.InputLayer))]
    is_ensemble = nested and len(others) == 1 and isinstance(others[0], layers.Average)
    return nested if is_ensemble else [model]


def lstm_parameter_count(model: keras.Model) -> int:
    """Parameters in the recurrent layers alone (a bidirectional stack has twice as many; an
    ensemble counts every member's)."""
    return sum(
        layer.count_params() for member in ensemble_members(model) for layer in member.layers
        if isinstance(layer, (layers.LSTM, layers.Bidirectional))
    )

