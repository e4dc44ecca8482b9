"""The Keras model of an `Architecture` (architecture.py): stock Keras layers, as in the keras-io
bidirectional LSTM example, plus two small layers of ours (word dropout, masked max pooling).

The embedding masks the padding (mask_zero), so every LSTM skips it: the backward direction
starts at each text's last real token, and right padding with a mask is the layout the cuDNN
kernel takes on a GPU. `build_model` takes the layer classes to build with (accel.select): Keras'
own by default; the accel package's have the same weights and run faster on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from bilstm_cli import accel
from bilstm_cli.architecture import EMBEDDING, OUTPUT, POOLING_LAYERS, Architecture, describe
from bilstm_cli.config import ModelConfig
from bilstm_cli.ensemble import members_of
from bilstm_cli.errors import UserError
from bilstm_cli.text import PAD_ID, UNK_ID
from bilstm_cli.word_vectors import initial_table

layers, ops = keras.layers, keras.ops


@keras.saving.register_keras_serializable(package="bilstm")
class WordDropout(layers.Layer):
    """While training, replaces real tokens' ids by [UNK]'s: each with probability `rate`
    (`by="uniform"`), or `rate * r / (r + FREQUENT_RANK)` for the token of id r (`"frequency"`).

    Dropout on whole words: the model cannot lean on any one word of a text, and learns what to
    do with words it has not seen. The word tokenizer numbers its words by frequency (text.py),
    so by frequency the commonest words (`the`, `how`, `who`) are almost never dropped and rare
    ones nearly at `rate`: Kiperwasser and Goldberg's alpha / (alpha + count), with Zipf's law
    standing in for the counts. Padding stays padding, so the mask is unchanged.
    """

    FREQUENT_RANK = 100

    def __init__(self, rate: float, unknown_id: int = UNK_ID, seed: int | None = None,
                 by: str = "uniform", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate, self.unknown_id, self.seed, self.by = rate, unknown_id, seed, by
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, ids: Any, training: bool | None = None) -> Any:
        if not training or not self.rate:
            return ids
        rate: Any = self.rate
        if self.by == "frequency":
            rank = ops.cast(ids, "float32")
            rate = self.rate * rank / (rank + self.FREQUENT_RANK)
        dropped = keras.random.uniform(ops.shape(ids), seed=self.seed_generator) < rate
        return ops.where(ops.logical_and(dropped, ids != PAD_ID),
                         ops.cast(self.unknown_id, ids.dtype), ids)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "unknown_id": self.unknown_id,
                "seed": self.seed, "by": self.by}


@keras.saving.register_keras_serializable(package="bilstm")
class MaskedGlobalMaxPooling1D(layers.Layer):
    """Max over time of the unmasked steps (Keras' GlobalMaxPooling1D ignores the mask)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs: Any, mask: Any = None) -> Any:
        if mask is not None:
            lowest = ops.cast(ops.full_like(inputs, -3.0e38), inputs.dtype)
            inputs = ops.where(ops.expand_dims(mask, -1), inputs, lowest)
        return ops.max(inputs, axis=1)

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[2])


def make_layers(arch: Architecture, kinds: accel.Layers) -> list[layers.Layer]:
    """Every layer of the architecture, named as architecture.py says, in order."""
    made: list[layers.Layer] = []
    if arch.word_dropout:
        made.append(WordDropout(arch.word_dropout, by=arch.word_dropout_by,
                                name="word_dropout"))
    made.append(kinds.embedding(arch.vocab_size, arch.embedding_dim, mask_zero=True,
                                name=EMBEDDING))
    if arch.embedding_dropout:
        # Drops whole embedding channels for a text (all its time steps alike); keeps the mask.
        made.append(layers.SpatialDropout1D(arch.embedding_dropout, name="embedding_dropout"))
    for index, recurrent in enumerate(arch.recurrent):
        lstm = kinds.lstm(recurrent.units, return_sequences=recurrent.return_sequences,
                          recurrent_dropout=arch.recurrent_dropout, name=recurrent.lstm_name)
        if recurrent.bidirectional:
            lstm = layers.Bidirectional(lstm, merge_mode=recurrent.merge_mode,
                                        name=recurrent.name)
        made.append(lstm)
        if recurrent.dropout:
            made.append(layers.Dropout(recurrent.dropout, name=f"dropout_{index + 1}"))
    if arch.pooling in ("max", "max_mean"):
        made.append(MaskedGlobalMaxPooling1D(name=POOLING_LAYERS["max"]))
    if arch.pooling in ("mean", "max_mean"):
        made.append(layers.GlobalAveragePooling1D(name=POOLING_LAYERS["mean"]))
    if arch.pooling == "max_mean":
        made.append(layers.Concatenate(name=POOLING_LAYERS["max_mean"]))
    if arch.dropout:
        made.append(layers.Dropout(arch.dropout, name="dropout"))
    made.append(layers.Dense(arch.outputs, activation=arch.activation, name=OUTPUT))
    return made


def forward(arch: Architecture, layer: Callable[[str], Any], ids: Any,
            perturbation: Any = None) -> Any:
    """The architecture's graph from `ids`, with the layers `layer(name)` gives. With a
    `perturbation` (a tensor the embedding output's shape), the layer "perturb" takes the
    embedding's output and it: adversarial training (regularizers/adversarial.py)."""
    x = layer("word_dropout")(ids) if arch.word_dropout else ids
    x = layer(EMBEDDING)(x)
    if perturbation is not None:
        x = layer("perturb")([x, perturbation])
    if arch.embedding_dropout:
        x = layer("embedding_dropout")(x)
    for index, recurrent in enumerate(arch.recurrent):
        x = layer(recurrent.name)(x)
        if recurrent.dropout:
            x = layer(f"dropout_{index + 1}")(x)
    if arch.pooling == "max_mean":
        x = layer(POOLING_LAYERS["max_mean"])([layer(POOLING_LAYERS["max"])(x),
                                               layer(POOLING_LAYERS["mean"])(x)])
    elif arch.pooling != "last":
        x = layer(POOLING_LAYERS[arch.pooling])(x)
    if arch.dropout:
        x = layer("dropout")(x)
    return layer(OUTPUT)(x)


def build_model(arch: Architecture, kinds: accel.Layers | None = None,
                word_vectors: np.ndarray | None = None,
                word_vector_scale: float = 4.0) -> keras.Model:
    """The Keras model, from Keras' own layers unless `kinds` says otherwise. `word_vectors`:
    the embedding's initial rows for `model.embedding_init: cooccurrence` (word_vectors.py),
    scaled by `word_vector_scale`; without them the table starts random."""
    made = {layer.name: layer for layer in make_layers(arch, kinds or accel.keras_layers())}
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    model = keras.Model(ids, forward(arch, made.__getitem__, ids), name=arch.name)
    if word_vectors is not None:
        embedding = model.get_layer(EMBEDDING)
        embedding.embeddings.assign(initial_table(
            np.asarray(embedding.embeddings), word_vectors, word_vector_scale))
    return model


def keras_copy(model: keras.Model, arch: Architecture) -> keras.Model:
    """`model` rebuilt from Keras' own layers with its weights (what model.keras holds)."""
    copy = build_model(arch)
    copy.set_weights(model.get_weights())
    return copy


def architecture_of(model: keras.Model, config: ModelConfig) -> Architecture:
    """The architecture of a trained model of `config` (its run's): the vocabulary and the
    classes are read from its weights."""
    member = members_of(model)[0]
    try:
        vocab_size = member.get_layer(EMBEDDING).input_dim
        outputs = member.get_layer(OUTPUT).units
    except ValueError as exc:  # Keras: no layer of that name
        raise UserError(f"the model does not match its config.yaml ({exc})") from None
    return describe(config, vocab_size, 2 if outputs == 1 else outputs)


def lstm_parameter_count(model: keras.Model) -> int:
    """Parameters in the recurrent layers alone (a bidirectional stack has twice as many; an
    ensemble counts every member's)."""
    return sum(
        layer.count_params() for member in members_of(model) for layer in member.layers
        if isinstance(layer, (layers.LSTM, layers.Bidirectional))
    )
