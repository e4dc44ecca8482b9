"""Adversarial training (training.adversarial): one step against the same step done by hand;
both extra-loss trainers (this one and consistency.py's) switched off are plain training."""

from __future__ import annotations

import numpy as np
import pytest


def _batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    lengths = rng.integers(2, 9, size=6)
    ids = np.zeros((6, 8), dtype="int32")  # right padded, as training batches are
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(2, 30, size=length)
    return ids, rng.integers(0, 2, size=(6, 1)).astype("float32")


@pytest.mark.parametrize(("dropout", "normalize"), [(0.0, False), (0.4, False), (0.4, True)])
def test_one_step_adds_the_gradient_at_the_worst_nearby_embeddings(dropout, normalize):
    """The update is the clean gradient plus the gradient at embeddings moved epsilon (L2 over
    each text) along the clean loss's gradient by them, both passes with the same dropout."""
    from bilstm_cli.adversarial import AdversarialClassifier
    from bilstm_cli.backend import keras, tf
    from bilstm_cli.config import ModelConfig
    from bilstm_cli.model import build_model

    keras.utils.set_random_seed(1)
    config = ModelConfig(bidirectional=True, units=4, embedding_dim=5, pooling="max_mean",
                         dropout=dropout, word_dropout=dropout, normalize_embeddings=normalize)
    model = build_model(config, vocab_size=30, num_classes=2,
                        token_counts=np.arange(30) % 7 if normalize else None)
    trainer = AdversarialClassifier(model.inputs, model.outputs, name=model.name)
    trainer.epsilon = 0.7
    trainer.compile(optimizer=keras.optimizers.SGD(1.0), loss="binary_crossentropy")
    ids, labels = _batch()
    weights = model.get_weights()
    before = [np.array(v) for v in model.trainable_weights]
    seeds = [np.array(v) for v in model.non_trainable_variables]

    trainer.fit(ids, labels, batch_size=len(ids), epochs=1, shuffle=False, verbose=0)
    after = [np.array(v) for v in model.trainable_weights]

    # By hand, from the same weights and random state.
    model.set_weights(weights)
    embedding = model.get_layer("embedding")
    loss_fn = keras.losses.BinaryCrossentropy()

    def loss_and_gradients(perturbation):
        for variable, seed in zip(model.non_trainable_variables, seeds):
            variable.assign(seed)
        perturbation = tf.constant(perturbation)
        try:
            with tf.GradientTape() as tape:
                tape.watch(perturbation)
                embedding.perturbation = perturbation
                loss = loss_fn(labels, model(ids, training=True))
            gradients = tape.gradient(loss, [*model.trainable_weights, perturbation])
            return float(loss), [np.array(tf.convert_to_tensor(g)) for g in gradients]
        finally:
            embedding.perturbation = None

    clean_loss, (*clean, toward_loss) = loss_and_gradients(np.zeros((6, 8, 5), "float32"))
    norms = np.sqrt((toward_loss ** 2).sum(axis=(1, 2), keepdims=True))
    adversarial_loss, (*adversarial, _) = loss_and_gradients(0.7 * toward_loss / norms)
    assert adversarial_loss > clean_loss
    for variable, start, end, a, b in zip(model.trainable_weights, before, after, clean,
                                          adversarial, strict=True):
        np.testing.assert_allclose(end, start - a - b, atol=2e-5, err_msg=variable.path)


@pytest.mark.parametrize("trainer", ["adversarial", "consistency"])
def test_a_trainer_switched_off_is_keras_own_step(trainer):
    """epsilon 0 (training.adversarial) and weight 0 (training.consistency) are plain training."""
    from bilstm_cli.adversarial import AdversarialClassifier
    from bilstm_cli.backend import keras
    from bilstm_cli.config import ModelConfig
    from bilstm_cli.consistency import ConsistencyClassifier
    from bilstm_cli.model import build_model

    wrapper = {"adversarial": AdversarialClassifier, "consistency": ConsistencyClassifier}[trainer]
    ids, labels = _batch()
    weights = []
    for wrapped in (False, True):
        keras.utils.set_random_seed(2)
        model = build_model(ModelConfig(units=4, embedding_dim=5, word_dropout=0.3),
                            vocab_size=30, num_classes=2)
        if wrapped:
            model = wrapper(model.inputs, model.outputs, name=model.name)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
        model.fit(ids, labels, batch_size=3, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for plain, wrapped_weights in zip(*weights, strict=True):
        np.testing.assert_array_equal(plain, wrapped_weights)


def test_the_trainer_holds_the_models_own_variables_in_the_same_order():
    """Checkpoints and best weights are taken from the trainer and put back into the model."""
    from bilstm_cli.adversarial import AdversarialClassifier
    from bilstm_cli.config import ModelConfig
    from bilstm_cli.model import build_model

    model = build_model(ModelConfig(bidirectional=True, layers=2, pooling="max_mean",
                                    word_dropout=0.2), vocab_size=30, num_classes=3)
    trainer = AdversarialClassifier(model.inputs, model.outputs, name=model.name)
    assert len(trainer.variables) == len(model.variables) == 22
    assert all(a is b for a, b in zip(trainer.variables, model.variables, strict=True))
