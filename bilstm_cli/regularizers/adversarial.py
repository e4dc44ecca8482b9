"""Adversarial training on the word embeddings (`training.adversarial: EPSILON`).

Miyato, Dai and Goodfellow, "Adversarial Training Methods for Semi-Supervised Text
Classification" (ICLR 2017): every batch is learned twice, as it is and with each text's
embeddings pushed a distance EPSILON (L2, over the whole text) in the direction that raises its
loss fastest. A text classifier that overfits its training set within two epochs learns to be
steady around each training text instead of memorizing it. It costs a second forward and
backward pass per batch; predicting is unchanged.

The regularizer is the model's graph with a second input added to the embedding's output
(model.forward, with `Perturb`): zeros for the clean pass, whose gradient by that input is the
direction, then the perturbation. Both passes drop the same words and units.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from bilstm_cli.architecture import Architecture
from bilstm_cli.regularizers.base import Regularizer, add_gradients, replicas


class Perturb(keras.layers.Layer):
    """[embeddings, perturbation] -> their sum, with the embeddings' mask (Keras' Add drops a
    mask that only one input has)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs: list[Any]) -> Any:
        return inputs[0] + inputs[1]

    def compute_mask(self, inputs: list[Any], mask: Any = None) -> Any:
        return None if mask is None else mask[0]


class AdversarialTraining(Regularizer):
    """Inputs: ids and a perturbation of the embedding's output (zeros outside training)."""

    @classmethod
    def around(cls, model: keras.Model, arch: Architecture, strength: float) -> Regularizer:
        from bilstm_cli.model import forward

        ids = keras.Input(shape=(None,), dtype="int32", name="ids")
        perturbation = keras.Input(shape=(None, arch.embedding_dim), name="perturbation")
        perturb = Perturb(name="perturb")
        outputs = forward(arch, lambda name: perturb if name == "perturb" else
                          model.get_layer(name), ids, perturbation)
        regularizer = cls([ids, perturbation], outputs, name=model.name)
        regularizer.strength = strength
        return regularizer

    def clean(self, ids: Any) -> list[Any]:
        """The inputs for `ids` without a perturbation."""
        shape = tf.concat([tf.shape(ids), [self.inputs[1].shape[-1]]], 0)
        return [ids, tf.zeros(shape, self.compute_dtype)]

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return super().test_step((self.clean(x), y, sample_weight))

    def predict_step(self, data: Any) -> Any:
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(self.clean(x), training=False)

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_weights
        # Both passes drop the same words and units: only the perturbation differs.
        seed_states = [v for v in self.non_trainable_variables
                       if v.path.endswith("seed_generator_state")]
        seeds = [tf.identity(v.value) for v in seed_states]

        inputs = self.clean(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs[1])
            y_pred = self(inputs, training=True)
            loss = self.compute_loss(x=inputs, y=y, y_pred=y_pred,
                                     sample_weight=sample_weight, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)  # as Keras' train_step does
        *gradients, toward_loss = tape.gradient(scaled_loss, [*variables, inputs[1]])

        norm = tf.sqrt(tf.reduce_sum(tf.square(toward_loss), axis=[1, 2], keepdims=True))
        perturbation = tf.stop_gradient(self.strength * toward_loss / (norm + 1e-12))
        for state, seed in zip(seed_states, seeds):
            state.assign(seed)
        with tf.GradientTape() as tape:
            perturbed = [x, perturbation]
            adversarial_loss = self.optimizer.scale_loss(self.compute_loss(
                x=perturbed, y=y, y_pred=self(perturbed, training=True),
                sample_weight=sample_weight, training=True))
        adversarial_gradients = tape.gradient(adversarial_loss, variables)

        self.optimizer.apply_gradients(zip(
            [add_gradients(a, b) for a, b in zip(gradients, adversarial_gradients)], variables))
        # The reported loss is the clean one: the same loss as validation's (Keras divided it
        # among the replicas of a strategy).
        self.record_loss(loss * replicas(), tf.shape(x)[0])
        return self.compute_metrics(inputs, y, y_pred, sample_weight=sample_weight)
