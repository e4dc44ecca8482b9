"""The Keras model: embedding, a stack of (bi)LSTM layers, pooling, dropout, a dense head.

It takes right-padded integer ids (0 = padding). The embedding's mask tells every LSTM to skip
padding, so the backward direction starts at each text's last real token, and right padding
plus masking is the layout the cuDNN kernel accepts on a GPU (with recurrent_dropout 0).
"""

from __future__ import annotations

from bilstm_cli.backend import keras
from bilstm_cli.config import ModelConfig

layers, ops = keras.layers, keras.ops


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


def build_model(config: ModelConfig, vocab_size: int, num_classes: int) -> keras.Model:
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = layers.Embedding(vocab_size, config.embedding_dim, mask_zero=True, name="embedding")(ids)
    if config.embedding_dropout:
        # Drops whole embedding channels for a text (all its time steps alike); keeps the mask.
        x = layers.SpatialDropout1D(config.embedding_dropout, name="embedding_dropout")(x)
    for index in range(config.layers):
        last_layer = index == config.layers - 1
        lstm = layers.LSTM(
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
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    if num_classes == 2:
        outputs = layers.Dense(1, activation="sigmoid", name="output")(x)
    else:
        outputs = layers.Dense(num_classes, activation="softmax", name="output")(x)
    name = "bilstm" if config.bidirectional else "lstm"
    return keras.Model(ids, outputs, name=name)


def lstm_parameter_count(model: keras.Model) -> int:
    """Parameters in the recurrent layers alone (a bidirectional stack has twice as many)."""
    return sum(
        layer.count_params() for layer in model.layers
        if isinstance(layer, (layers.LSTM, layers.Bidirectional))
    )

