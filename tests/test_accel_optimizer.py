"""optimizer.Adam against keras.optimizers.Adam: the same training, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest


def _train(optimizer, ids, labels, steps: int) -> list[np.ndarray]:
    import keras

    keras.utils.set_random_seed(7)
    model = keras.Sequential([
        keras.Input(shape=(ids.shape[1],), dtype="int32"),
        keras.layers.Embedding(50, 8),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=optimizer, loss="binary_crossentropy")
    for step in range(steps):
        batch = slice(8 * step, 8 * step + 8)
        model.train_on_batch(ids[batch], labels[batch])
    return [np.array(weight) for weight in model.get_weights()]


@pytest.mark.parametrize("options", [{}, {"clipnorm": 0.01, "weight_decay": 0.1}])
def test_adam_trains_an_embedding_exactly_as_keras_adam(fused_kernel, monkeypatch, options):
    import keras

    from bilstm_cli.accel import kernel as fused_lstm
    from bilstm_cli.accel import optimizer

    if not fused_kernel:
        pytest.skip("the fused LSTM kernel could not be built here (no C++ compiler?)")
    rng = np.random.default_rng(0)
    # Few distinct ids, so every batch looks up most rows several times.
    ids = rng.integers(0, 50, size=(40, 12)).astype("int32")
    labels = rng.integers(0, 2, size=(40, 1)).astype("float32")

    calls: list[bool] = []
    kernel_ops = fused_lstm.ops()

    class Recording:
        def bilstm_scatter_add_rows(self, *args, **kwargs):
            calls.append(kwargs.get("squares", False))
            return kernel_ops.bilstm_scatter_add_rows(*args, **kwargs)

    monkeypatch.setattr(fused_lstm, "ops", lambda: Recording())
    ours = _train(optimizer.Adam(0.05, **options), ids, labels, steps=5)
    assert calls and all(calls), "the embedding's gradient did not go through the scatter op"
    theirs = _train(keras.optimizers.Adam(0.05, **options), ids, labels, steps=5)
    for mine, keras_weight in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(mine, keras_weight)


def test_adam_is_saved_and_loaded_with_the_model(tmp_path):
    import keras

    from bilstm_cli.accel import optimizer

    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer.Adam(0.01, clipnorm=1.0), loss="mse")
    model.train_on_batch(np.ones((2, 3)), np.ones((2, 1)))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.optimizer, optimizer.Adam)
    assert loaded.optimizer.clipnorm == 1.0
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.array(saved), np.array(restored))


def test_cosine_schedule_falls_to_zero_over_all_epochs_and_is_saved(tmp_path):
    """`training.lr_schedule: cosine` follows Keras' step counter, which checkpoints keep."""
    import keras

    from bilstm_cli.accel import optimizer
    from bilstm_cli.config import TrainingConfig
    from bilstm_cli.train import _learning_rate

    assert _learning_rate(TrainingConfig(learning_rate=0.1, lr_schedule="constant", epochs=5),
                          5) == 0.1
    schedule = _learning_rate(TrainingConfig(learning_rate=0.1, lr_schedule="cosine",
                                             epochs=2), 5)
    rates = [float(schedule(step)) for step in (0, 5, 10, 20)]
    np.testing.assert_allclose(rates, [0.1, 0.05, 0.0, 0.0], atol=1e-7)

    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer.Adam(schedule), loss="mse")
    for _ in range(5):
        model.train_on_batch(np.ones((2, 3)), np.ones((2, 1)))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras").optimizer
    assert int(loaded.iterations) == 5
    np.testing.assert_allclose(float(loaded.learning_rate), 0.05, rtol=1e-6)
