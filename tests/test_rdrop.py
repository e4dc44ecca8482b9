"""R-Drop (training.consistency): one step against the same step done by hand."""

from __future__ import annotations

import numpy as np
import pytest


def _batch(count: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    ids = np.zeros((count, 8), dtype="int32")  # right padded, as training batches are
    for row, length in enumerate(rng.integers(2, 9, size=count)):
        ids[row, :length] = rng.integers(2, 30, size=length)
    if classes == 2:
        return ids, rng.integers(0, 2, size=(count, 1)).astype("float32")
    return ids, rng.integers(0, classes, size=count).astype("int32")


def _model(classes: int, dropout: float = 0.4) -> object:
    from conftest import tiny_model

    from bilstm_cli.config import ModelConfig

    config = ModelConfig(bidirectional=True, units=4, embedding_dim=5, pooling="max_mean",
                         dropout=dropout, word_dropout=dropout)
    return tiny_model(config, vocab_size=30, num_classes=classes)


def _symmetric_kl(p, q, classes):
    """By the definition: KL(p || q) + KL(q || p), over the classes' probabilities."""
    import tensorflow as tf

    if classes == 2:
        p, q = tf.concat([1 - p, p], -1), tf.concat([1 - q, q], -1)
    return tf.reduce_sum(p * tf.math.log(p / q) + q * tf.math.log(q / p), axis=-1)


@pytest.mark.parametrize(("count", "classes", "weighted"),
                         [(6, 2, False), (5, 3, False), (6, 2, True), (1, 2, False)])
def test_one_step_is_both_passes_cross_entropy_plus_weight_times_kl(count, classes, weighted):
    """Texts learned in two halves, each doubled; the update is that of the batch's loss: the mean
    cross-entropy of its 2 x count predictions + WEIGHT x the mean half symmetric KL per text.
    A batch of one text is learned once."""
    import keras
    import tensorflow as tf

    from bilstm_cli.regularizers.rdrop import RDrop

    keras.utils.set_random_seed(1)
    model = _model(classes)
    trainer = RDrop.around(model, None, 2.5)
    loss_name = "binary_crossentropy" if classes == 2 else "sparse_categorical_crossentropy"
    trainer.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss_name)
    ids, labels = _batch(count, classes)
    sample_weight = np.linspace(0.5, 2.0, count).astype("float32") if weighted else None
    weights = model.get_weights()
    before = [np.array(v) for v in model.trainable_weights]
    seeds = [np.array(v) for v in model.non_trainable_variables]

    history = trainer.fit(ids, labels, sample_weight=sample_weight, batch_size=count, epochs=1,
                          shuffle=False, verbose=0)
    after = [np.array(v) for v in model.trainable_weights]

    # By hand, from the same weights and random state: the same calls in the same order.
    model.set_weights(weights)
    for variable, seed in zip(model.non_trainable_variables, seeds):
        variable.assign(seed)
    loss_fn = keras.losses.get(loss_name)
    middle = count - count // 2
    halves = [slice(0, middle), slice(middle, count)] if count > 1 else [slice(0, 1)]
    with tf.GradientTape() as tape:
        rows, truths, row_weights, divergences = [], [], [], []
        for half in halves:
            first, second = tf.split(model(np.concatenate([ids[half]] * 2), training=True), 2)
            rows += [first, second]
            truths += [labels[half]] * 2
            if weighted:
                row_weights += [sample_weight[half]] * 2
            divergences.append(_symmetric_kl(first, second, classes))
        per_row = loss_fn(np.concatenate(truths), tf.concat(rows, 0))
        if weighted:
            per_row = per_row * np.concatenate(row_weights)
        cross_entropy = tf.reduce_mean(per_row)
        loss = cross_entropy + 2.5 * tf.reduce_mean(0.5 * tf.concat(divergences, 0))
    gradients = tape.gradient(loss, model.trainable_weights)

    assert float(loss) > float(cross_entropy)  # the two dropout draws disagree
    assert history.history["loss"][0] == pytest.approx(float(cross_entropy), rel=1e-4)
    for variable, start, end, gradient in zip(model.trainable_weights, before, after, gradients,
                                              strict=True):
        expected = start - np.array(tf.convert_to_tensor(gradient))
        np.testing.assert_allclose(end, expected, atol=2e-5, err_msg=variable.path)


def test_adversarial_and_consistency_together_are_refused():
    from pydantic import ValidationError

    from bilstm_cli.config import TrainingConfig

    assert TrainingConfig(consistency=1.0).consistency == 1.0
    with pytest.raises(ValidationError, match="set the other to 0"):
        TrainingConfig(adversarial=0.2, consistency=1.0)


@pytest.mark.parametrize(("clipnorm", "weight_decay", "kernel"), [
    (0.05, 0.0, True),   # the clip bites: the rows' norm is well above 0.05
    (None, 0.1, True),   # decoupled weight decay
    (0.05, 0.1, False),  # both, with TensorFlow's segment sums instead of the kernel's ops
])
def test_summed_rows_train_as_the_joined_rows_do(monkeypatch, fused_kernel, clipnorm,
                                                 weight_decay, kernel):
    """The embedding's gradient summed per half (optimizer.Adam.apply_row_sums) gives the steps
    that the halves' rows joined into one gradient give through apply_gradients: batches of 5,
    5 and 2 texts, a cosine schedule."""
    import keras

    from bilstm_cli.accel import kernel as fused_lstm
    from bilstm_cli.accel import optimizer
    from bilstm_cli.regularizers.rdrop import RDrop

    if kernel and not fused_kernel:
        pytest.skip("the fused kernel is not built on this machine")
    if not kernel:
        monkeypatch.setattr(fused_lstm, "ops", lambda: None)
    ids, labels = _batch(12, 2)
    ids[:, 1:4] = 7  # a word three times in every text: rows that sum and square differently
    calls = []
    apply_row_sums = optimizer.Adam.apply_row_sums

    def counted(self, *args):
        calls.append(args[-1].path)
        return apply_row_sums(self, *args)

    monkeypatch.setattr(optimizer.Adam, "apply_row_sums", counted)

    def trained(summed: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
        monkeypatch.setattr(optimizer.Adam, "takes_row_sums", lambda self: summed)
        keras.utils.set_random_seed(5)
        model = _model(2)
        trainer = RDrop.around(model, None, 1.0)
        schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=6)
        adam = optimizer.Adam(schedule, clipnorm=clipnorm, weight_decay=weight_decay or None)
        trainer.compile(optimizer=adam, loss="binary_crossentropy")
        trainer.fit(ids, labels, batch_size=5, epochs=2, shuffle=False, verbose=0)
        slots = [np.array(v) for v in adam.variables]
        return [np.array(v) for v in model.weights], slots

    summed_weights, summed_slots = trained(True)
    assert calls and set(calls) == {"embedding/embeddings"}  # (once per tracing)
    traced = len(calls)
    joined_weights, joined_slots = trained(False)
    assert len(calls) == traced
    for summed, joined in zip(summed_weights + summed_slots, joined_weights + joined_slots,
                              strict=True):
        np.testing.assert_allclose(summed, joined, rtol=2e-5, atol=2e-6)
    assert not np.allclose(summed_weights[0], _model(2).weights[0])  # it trained
