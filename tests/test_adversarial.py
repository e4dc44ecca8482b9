"""Regularizers (bilstm_cli/regularizers): adversarial training's step against the same step
done by hand; each regularizer switched off is plain training; each holds the model's own
variables."""

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


def _model_and_arch(config, classes: int = 2):
    from bilstm_cli.architecture import describe
    from bilstm_cli.model import build_model

    arch = describe(config, 30, classes)
    return build_model(arch), arch


@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_one_step_adds_the_gradient_at_the_worst_nearby_embeddings(dropout):
    """The update is the clean gradient plus the gradient at embeddings moved epsilon (L2 over
    each text) along the clean loss's gradient by them, both passes with the same dropout."""
    import keras
    import tensorflow as tf

    from bilstm_cli.config import ModelConfig
    from bilstm_cli.model import forward
    from bilstm_cli.regularizers.adversarial import AdversarialTraining, Perturb

    keras.utils.set_random_seed(1)
    model, arch = _model_and_arch(ModelConfig(
        bidirectional=True, units=4, embedding_dim=5, pooling="max_mean", dropout=dropout,
        word_dropout=dropout))
    trainer = AdversarialTraining.around(model, arch, 0.7)
    trainer.compile(optimizer=keras.optimizers.SGD(1.0), loss="binary_crossentropy")
    ids, labels = _batch()
    weights = model.get_weights()
    before = [np.array(v) for v in model.trainable_weights]
    seeds = [np.array(v) for v in model.non_trainable_variables]

    trainer.fit(ids, labels, batch_size=len(ids), epochs=1, shuffle=False, verbose=0)
    after = [np.array(v) for v in model.trainable_weights]

    # By hand, from the same weights and random state, on the model's layers with an added
    # perturbation of the embedding's output.
    model.set_weights(weights)
    noise, perturb = keras.Input(shape=(None, 5)), Perturb(name="perturb")
    perturbed = keras.Model([model.input, noise], forward(
        arch, lambda name: perturb if name == "perturb" else model.get_layer(name), model.input,
        noise))
    loss_fn = keras.losses.BinaryCrossentropy()

    def loss_and_gradients(perturbation):
        for variable, seed in zip(model.non_trainable_variables, seeds):
            variable.assign(seed)
        perturbation = tf.constant(perturbation)
        with tf.GradientTape() as tape:
            tape.watch(perturbation)
            loss = loss_fn(labels, perturbed([tf.constant(ids), perturbation], training=True))
        gradients = tape.gradient(loss, [*model.trainable_weights, perturbation])
        return float(loss), [np.array(tf.convert_to_tensor(g)) for g in gradients]

    clean_loss, (*clean, toward_loss) = loss_and_gradients(np.zeros((6, 8, 5), "float32"))
    norms = np.sqrt((toward_loss ** 2).sum(axis=(1, 2), keepdims=True))
    adversarial_loss, (*adversarial, _) = loss_and_gradients(0.7 * toward_loss / norms)
    assert adversarial_loss > clean_loss
    for variable, start, end, a, b in zip(model.trainable_weights, before, after, clean,
                                          adversarial, strict=True):
        np.testing.assert_allclose(end, start - a - b, atol=2e-5, err_msg=variable.path)


def test_a_zero_perturbation_is_the_model_itself():
    """Validation and prediction of the adversarial regularizer are the plain model's."""
    import keras

    from bilstm_cli.config import ModelConfig
    from bilstm_cli.regularizers.adversarial import AdversarialTraining

    model, arch = _model_and_arch(ModelConfig(bidirectional=True, units=4, embedding_dim=5,
                                              pooling="max"))
    trainer = AdversarialTraining.around(model, arch, 0.5)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy",
                    metrics=["accuracy"])
    ids, labels = _batch()
    np.testing.assert_array_equal(trainer.predict(ids, verbose=0), model.predict(ids, verbose=0))
    model.compile(loss="binary_crossentropy", metrics=["accuracy"])
    np.testing.assert_allclose(trainer.evaluate(ids, labels, verbose=0),
                               model.evaluate(ids, labels, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("key", ["adversarial", "consistency"])
def test_no_regularizer_configured_is_keras_own_step(key):
    """training.adversarial / training.consistency at 0: the model itself is fitted."""
    from bilstm_cli import regularizers
    from bilstm_cli.config import ModelConfig, TrainingConfig

    model, arch = _model_and_arch(ModelConfig(units=4, embedding_dim=5))
    assert regularizers.trainer(model, arch, TrainingConfig(**{key: 0.0})) is model
    chosen = regularizers.trainer(model, arch, TrainingConfig(**{key: 0.5}))
    assert isinstance(chosen, regularizers.REGULARIZERS[key])
    assert chosen.strength == 0.5


@pytest.mark.parametrize("key", ["adversarial", "consistency"])
def test_the_regularizer_holds_the_models_own_variables_in_the_same_order(key):
    """Checkpoints and best weights are taken from the regularizer and put back into the
    model."""
    from bilstm_cli import regularizers
    from bilstm_cli.config import ModelConfig, TrainingConfig

    model, arch = _model_and_arch(ModelConfig(bidirectional=True, layers=2, pooling="max_mean",
                                              word_dropout=0.2), classes=3)
    trainer = regularizers.trainer(model, arch, TrainingConfig(**{key: 0.3}))
    assert len(trainer.variables) == len(model.variables) == 22
    assert all(a is b for a, b in zip(trainer.variables, model.variables, strict=True))
