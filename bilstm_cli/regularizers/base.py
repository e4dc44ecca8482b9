"""What every regularizer shares: how it is built around a model, and how it reports its loss."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from bilstm_cli.architecture import Architecture


class Regularizer(keras.Model):
    """A model over the layers of the model to train, whose `train_step` adds a trick. Build it
    with `around`; `strength` is the trick's config value (above 0)."""

    strength = 0.0

    @classmethod
    def around(cls, model: keras.Model, arch: Architecture, strength: float) -> Regularizer:
        """A regularizer over `model`'s layers (the same weights)."""
        regularizer = cls(model.inputs, model.outputs, name=model.name)
        regularizer.strength = strength
        return regularizer

    def record_loss(self, loss: Any, texts: Any) -> None:
        """Report `loss` as the batch's (as Keras' own train_step does: weighted by its texts)."""
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss, sample_weight=texts)


def replicas() -> int:
    """The replicas a batch is split among (training.distribute; 1 on one device). Keras divides
    each replica's mean loss by it before the replicas' gradients are summed, and so must a loss
    computed here."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def add_gradients(a: Any, b: Any) -> Any:
    """Two gradients of one variable. The embedding's are sparse (a row per token), and their
    sum stays sparse, as the gradient of one batch of twice the tokens would."""
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                                tf.concat([a.indices, b.indices], 0), a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)
