"""The model, described once: model.py builds it in Keras, export.py in ONNX, from this.

  ids [batch, time] (int32; 0 = padding, always on the right)
  -> word dropout (training only: a real word becomes [UNK])
  -> embedding "embedding", masking the padding -> embedding dropout (training only)
  -> per layer i: "lstm_i", or "bidirectional_i" (an LSTM per direction, merged by merge_mode);
     dropout "dropout_i" between layers
  -> pooling: the last state, or max / mean / max and mean over the real steps
  -> dropout "dropout" -> dense "output": one sigmoid for two classes, else a softmax.

Layers are found by these names (export reads weights by them), so they are fixed here.
Importing this module does not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from bilstm_cli.config import ModelConfig

EMBEDDING = "embedding"
OUTPUT = "output"
POOLING_LAYERS = {"max": "max_pooling", "mean": "mean_pooling", "max_mean": "max_mean_pooling"}


@dataclass(frozen=True)
class Recurrent:
    """One (bi)LSTM layer of the stack."""

    name: str  # lstm_i, or bidirectional_i around an LSTM lstm_i
    lstm_name: str
    units: int
    bidirectional: bool
    merge_mode: str
    return_sequences: bool
    dropout: float  # after this layer (between layers only)


@dataclass(frozen=True)
class Architecture:
    name: str  # "bilstm" or "lstm"
    vocab_size: int
    embedding_dim: int
    classes: int
    word_dropout: float
    word_dropout_by: str  # uniform | frequency (model.py: WordDropout)
    embedding_dropout: float
    recurrent: tuple[Recurrent, ...]
    recurrent_dropout: float
    pooling: str  # last, max, mean, max_mean
    dropout: float

    @property
    def outputs(self) -> int:
        """Output units: one sigmoid (P of the second class) for two classes."""
        return 1 if self.classes == 2 else self.classes

    @property
    def activation(self) -> str:
        return "sigmoid" if self.classes == 2 else "softmax"


def describe(config: ModelConfig, vocab_size: int, classes: int) -> Architecture:
    """The architecture of `config` for a vocabulary and a number of classes."""
    recurrent = []
    for index in range(config.layers):
        last = index == config.layers - 1
        recurrent.append(Recurrent(
            name=f"{'bidirectional' if config.bidirectional else 'lstm'}_{index + 1}",
            lstm_name=f"lstm_{index + 1}",
            units=config.units,
            bidirectional=config.bidirectional,
            merge_mode=config.merge_mode,
            return_sequences=not (last and config.pooling == "last"),
            dropout=0.0 if last else config.dropout,
        ))
    return Architecture(
        name="bilstm" if config.bidirectional else "lstm",
        vocab_size=vocab_size,
        embedding_dim=config.embedding_dim,
        classes=classes,
        word_dropout=config.word_dropout,
        word_dropout_by=config.word_dropout_by,
        embedding_dropout=config.embedding_dropout,
        recurrent=tuple(recurrent),
        recurrent_dropout=config.recurrent_dropout,
        pooling=config.pooling,
        dropout=config.dropout,
    )


def parameter_count(arch: Architecture, ensemble: int = 1) -> int:
    """The model's weights, counted from its description (what Keras' count_params gives for
    the built model, without building it): the embedding table, each LSTM's kernel, recurrent
    kernel and bias per direction, and the output layer; an ensemble holds `ensemble` models."""
    count = arch.vocab_size * arch.embedding_dim
    width = arch.embedding_dim
    for layer in arch.recurrent:
        directions = 2 if layer.bidirectional else 1
        count += directions * 4 * layer.units * (width + layer.units + 1)
        width = layer.units * (directions if layer.merge_mode == "concat" else 1)
    features = width * (2 if arch.pooling == "max_mean" else 1)
    count += features * arch.outputs + arch.outputs
    return ensemble * count
