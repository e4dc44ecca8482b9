"""Adversarial training on the word embeddings (`training.adversarial`).

Miyato, Dai and Goodfellow, "Adversarial Training Methods for Semi-Supervised Text
Classification" (ICLR 2017): every batch is learned twice, as it is and with each text's
embeddings pushed a distance epsilon (L2, over the whole text) in the direction that raises its
loss fastest. A text classifier that overfits its training set within two epochs (IMDB's does)
learns to be steady around each training text instead of memorizing it. It costs a second
forward and backward pass per batch; predicting is unchanged.

The model is model.py's functional graph (the same layers and weights; what is saved is the
plain model): only `train_step` differs, and only while epsilon is above 0.
"""

from __future__ import annotations

from typing import Any

from bilstm_cli.backend import keras, tf


@keras.saving.register_keras_serializable(package="bilstm")
class AdversarialClassifier(keras.Model):
    """`AdversarialClassifier(model.inputs, model.outputs, name=model.name)`: `model`'s layers,
    trained adversarially; set `epsilon` before compiling."""

    epsilon = 0.0

    def train_step(self, data: Any) -> dict[str, Any]:
        if not self.epsilon:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        embedding = self.get_layer("embedding")
        variables = self.trainable_weights
        # Both passes drop the same words and units: only the perturbation differs.
        seed_states = [v for v in self.non_trainable_variables
                       if v.path.endswith("seed_generator_state")]
        seeds = [tf.identity(v.value) for v in seed_states]

        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                      training=True)
            scaled_loss = self.optimizer.scale_loss(loss)  # as Keras' train_step does
        gradients = tape.gradient(scaled_loss, variables)

        # The loss's gradient by each token's embedding: the embedding's gradient is sparse,
        # one row per token of the batch in order (TensorFlow's gather gradient).
        table_gradient = gradients[_index(variables, embedding.embeddings)]
        if not isinstance(table_gradient, tf.IndexedSlices):
            raise TypeError(f"expected a sparse embedding gradient, got {type(table_gradient)}")
        toward_loss = table_gradient.values
        if embedding.normalize:  # the row's gradient is the output's times 1/std
            toward_loss = toward_loss / embedding.statistics()[1]
        toward_loss = tf.reshape(toward_loss,
                                 [tf.shape(x)[0], tf.shape(x)[1], embedding.output_dim])
        norm = tf.sqrt(tf.reduce_sum(tf.square(toward_loss), axis=[1, 2], keepdims=True))
        perturbation = tf.stop_gradient(self.epsilon * toward_loss / (norm + 1e-12))

        for state, seed in zip(seed_states, seeds):
            state.assign(seed)
        embedding.perturbation = perturbation
        try:
            with tf.GradientTape() as tape:
                adversarial_loss = self.optimizer.scale_loss(self._compute_loss(
                    x=x, y=y, y_pred=self(x, training=True), sample_weight=sample_weight,
                    training=True))
            adversarial_gradients = tape.gradient(adversarial_loss, variables)
        finally:
            embedding.perturbation = None

        self.optimizer.apply_gradients(zip(
            [add_gradients(a, b) for a, b in zip(gradients, adversarial_gradients)], variables))
        # The reported loss is the clean one: the same loss as validation's.
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _index(variables: list[Any], variable: Any) -> int:
    return next(i for i, v in enumerate(variables) if v is variable)


def add_gradients(a: Any, b: Any) -> Any:
    """Two gradients of one variable. The embedding's are sparse (a row per token), and their
    sum stays sparse, as the gradient of one batch of twice the tokens would."""
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                                tf.concat([a.indices, b.indices], 0), a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)
