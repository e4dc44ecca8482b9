"""The accel package's layers (RightPaddedLSTM, TokenEmbedding) against Keras' own: outputs and
gradients in each path, and the custom gradients they register released."""

import numpy as np
import pytest
from conftest import tiny_model

from bilstm_cli.config import ModelConfig


def keras_lstm_and_ours(ids: np.ndarray, units: int, promised: bool = False, **options):
    """Embedded ids with their padding mask, a Keras LSTM and a RightPaddedLSTM with its weights
    (`promised`: right_padded_inputs)."""
    import keras

    from bilstm_cli.accel.layers import RightPaddedLSTM

    embedding = keras.layers.Embedding(int(ids.max()) + 1, 5, mask_zero=True)
    inputs, mask = embedding(ids), embedding.compute_mask(ids)
    keras_lstm = keras.layers.LSTM(units, **options)
    ours = RightPaddedLSTM(units, right_padded_inputs=promised, **options)
    keras_lstm.build(inputs.shape)
    ours.build(inputs.shape)
    ours.set_weights(keras_lstm.get_weights())
    return inputs, mask, keras_lstm, ours


@pytest.fixture(params=["fused kernel", "keras loop"])
def cpu_loop(request, monkeypatch, fused_kernel):
    """Each of RightPaddedLSTM's two CPU paths; yields the calls made to the fused kernel."""
    from bilstm_cli.accel import kernel as fused_lstm

    calls = []
    if request.param == "keras loop":
        monkeypatch.setattr(fused_lstm, "usable", lambda cell, training: False)
    elif not fused_kernel:
        pytest.skip("the fused LSTM kernel could not be built here (no C++ compiler?)")
    else:
        lstm = fused_lstm.lstm
        monkeypatch.setattr(fused_lstm, "lstm", lambda *a, **k: calls.append(k) or lstm(*a, **k))
    yield calls
    assert bool(calls) == (request.param == "fused kernel")


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("promised", [False, True])
def test_right_padded_lstm_matches_keras_masked_lstm(go_backwards, return_sequences, promised,
                                                     cpu_loop):
    """Both CPU paths (no per-step masking) give the masked Keras LSTM's outputs and gradients,
    with and without right-padded inputs promised."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    lengths = [9, 1, 4, 7, 2, 5, 9, 3, 6, 8, 1, 2, 9]
    ids = np.zeros((len(lengths), 9), dtype=np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, 30, length)
    inputs, mask, keras_lstm, ours = keras_lstm_and_ours(
        ids, 7, promised, return_sequences=return_sequences, go_backwards=go_backwards)

    # Padded steps hold whatever each loop leaves there; every later layer masks them out.
    keep = np.asarray(mask)[:, ::-1] if go_backwards else np.asarray(mask)
    keep = keep[..., None].astype(np.float32) if return_sequences else 1.0

    def outputs_and_gradients(layer):
        with tf.GradientTape() as tape:
            outputs = layer(inputs, mask=mask, training=True) * keep
            loss = tf.reduce_sum(outputs * tf.range(1.0, 8.0))
        return np.asarray(outputs), [g.numpy() for g in tape.gradient(loss, layer.weights)]

    expected, expected_gradients = outputs_and_gradients(keras_lstm)
    actual, gradients = outputs_and_gradients(ours)
    np.testing.assert_allclose(actual, expected, atol=1e-6)
    for gradient, expected_gradient in zip(gradients, expected_gradients):
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-5, atol=1e-5)


def test_right_padded_lstm_falls_back_to_keras_for_other_masks(monkeypatch, fused_kernel):
    """A gap in the mask (not right padding) must still be skipped, by Keras' own loop."""
    from bilstm_cli.accel import kernel as fused_lstm

    monkeypatch.setattr(fused_lstm, "lstm", lambda *a, **k: pytest.fail("fused kernel used"))
    ids = np.array([[4, 0, 9, 3, 0], [5, 6, 0, 0, 0]], dtype=np.int32)
    inputs, mask, keras_lstm, ours = keras_lstm_and_ours(ids, 4, go_backwards=True)
    np.testing.assert_allclose(ours(inputs, mask=mask), keras_lstm(inputs, mask=mask), atol=1e-6)


def test_training_layers_promise_right_padding_and_refuse_a_gap(fused_kernel):
    """Training's LSTM (accel.fused_layers) promises right-padded inputs, in both directions of
    a Bidirectional; inside a traced function a mask with a gap is an error, not a wrong
    number."""
    import keras
    import tensorflow as tf

    from bilstm_cli import accel

    if not fused_kernel:
        pytest.skip("the fused LSTM kernel could not be built here (no C++ compiler?)")
    layers = accel.fused_layers()
    both = keras.layers.Bidirectional(layers.lstm(3))
    assert both.forward_layer.right_padded_inputs and both.backward_layer.right_padded_inputs
    embedding = layers.embedding(20, 4, mask_zero=True)

    @tf.function
    def run(ids):
        return both(embedding(ids), training=True)

    assert run(tf.constant([[3, 4, 5], [6, 0, 0]])).shape == (2, 6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not right padding"):
        run(tf.constant([[3, 0, 5], [6, 0, 0]]))


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize(("vocabulary", "branch"), [
    (12, "table"),  # more tokens in the batch than rows in the table
    (400, "tokens"),
    (12, "keras"),  # a gap in the mask: Keras' own loop
])
@pytest.mark.parametrize("promised", [False, True])
def test_lstm_reading_a_token_embedding_matches_keras(go_backwards, vocabulary, branch, promised,
                                                      monkeypatch, fused_kernel):
    """TokenEmbedding + RightPaddedLSTM: Keras' numbers and gradients, in each of three paths.
    Promised right-padded inputs (training's layers), a gap in the mask is an error."""
    import keras
    import tensorflow as tf

    from bilstm_cli.accel import kernel as fused_lstm
    from bilstm_cli.accel.layers import RightPaddedLSTM, TokenEmbedding

    if not fused_kernel:
        pytest.skip("the fused LSTM kernel could not be built here (no C++ compiler?)")
    calls = []
    for name in ("lstm", "lstm_over_table"):
        function = getattr(fused_lstm, name)
        monkeypatch.setattr(fused_lstm, name, lambda *a, name=name, function=function, **k:
                            calls.append(name) or function(*a, **k))
    rng = np.random.default_rng(1)
    lengths = [6, 1, 4, 6, 2, 5, 3]
    ids = np.zeros((len(lengths), 6), dtype=np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, vocabulary, length)
    if branch == "keras":
        ids[0, 2] = 0
    ids = tf.constant(ids)
    units, dim = 3, 5

    def outputs_and_gradients(embedding, lstm):
        with tf.GradientTape() as tape:
            outputs = lstm(embedding(ids), training=True)
            if go_backwards:
                outputs = outputs[:, ::-1]
            loss = tf.reduce_sum(outputs * tf.cast(ids > 0, "float32")[..., None]
                                 * tf.range(1.0, units + 1))
        weights = embedding.weights + lstm.weights
        return outputs.numpy(), tape.gradient(loss, weights)

    reference = (keras.layers.Embedding(vocabulary, dim, mask_zero=True),
                 keras.layers.LSTM(units, return_sequences=True, go_backwards=go_backwards))
    ours = (TokenEmbedding(vocabulary, dim, mask_zero=True),
            RightPaddedLSTM(units, return_sequences=True, go_backwards=go_backwards,
                            right_padded_inputs=promised))
    for layer, twin in zip(reference, ours):
        layer.build((None, 6) if layer is reference[0] else (None, 6, dim))
        twin.build((None, 6) if twin is ours[0] else (None, 6, dim))
        twin.set_weights(layer.get_weights())
    expected, expected_gradients = outputs_and_gradients(*reference)
    if promised and branch == "keras":
        with pytest.raises(tf.errors.InvalidArgumentError, match="not right padding"):
            outputs_and_gradients(*ours)
        return
    actual, gradients = outputs_and_gradients(*ours)
    keep = (ids.numpy() > 0)[..., None]
    np.testing.assert_allclose(actual * keep, expected * keep, atol=1e-6)
    # The embedding's gradient is Keras' own: IndexedSlices, one row per token (its Adam squares
    # those rows before summing them per word).
    assert isinstance(gradients[0], tf.IndexedSlices)
    for gradient, expected_gradient in zip(gradients, expected_gradients):
        np.testing.assert_allclose(tf.convert_to_tensor(gradient),
                                   tf.convert_to_tensor(expected_gradient), rtol=1e-5, atol=1e-5)
    assert calls == {"table": ["lstm_over_table"], "tokens": ["lstm"], "keras": []}[branch]


def test_scatter_add_rows_rejects_an_index_outside_the_table(fused_kernel):
    import tensorflow as tf

    from bilstm_cli.accel import kernel as fused_lstm

    if not fused_kernel:
        pytest.skip("the fused LSTM kernel could not be built here (no C++ compiler?)")
    values = tf.ones([2, 3, 4])
    indices = tf.constant([[0, 1, 1], [4, 1, 0]])
    sums = fused_lstm.ops().bilstm_scatter_add_rows(values, indices, 5)
    np.testing.assert_array_equal(sums.sums[:, 0], [2, 3, 0, 0, 1])
    assert sums.square_sums.shape == (0, 4)
    sums = fused_lstm.ops().bilstm_scatter_add_rows(3 * values, indices, 5, squares=True)
    np.testing.assert_array_equal(sums.square_sums[:, 0], [18, 27, 0, 0, 9])
    with pytest.raises(tf.errors.InvalidArgumentError, match="not in"):
        fused_lstm.ops().bilstm_scatter_add_rows(values, tf.constant([[0, 1, 5], [0, 0, 0]]), 5)


def test_a_model_trained_and_dropped_is_freed(fused_kernel):
    """Inside tf.function, tf.custom_gradient registers each traced gradient in a global registry
    that holds the model's graph and, through it, its variables: an ensemble's members piled up
    in memory. Trained inside forgetting_custom_gradients, a dropped model is freed, and the
    registry is as before."""
    import gc
    import weakref

    from bilstm_cli.accel.kernel import forgetting_custom_gradients

    rng = np.random.default_rng(0)
    ids = rng.integers(2, 30, size=(16, 7)).astype(np.int32)
    labels = rng.integers(0, 2, size=(16, 1)).astype(np.float32)

    def train_and_drop() -> weakref.ref:
        model = tiny_model(ModelConfig(units=4, embedding_dim=4, bidirectional=True), 30, 2,
                           kinds="fused")
        model.compile(optimizer="adam", loss="binary_crossentropy")
        with forgetting_custom_gradients():
            model.fit(ids, labels, epochs=1, batch_size=8, verbose=0)
            assert model.predict(ids, verbose=0).shape == (16, 1)
        # Its train function is built: it still trains, with nothing registered again.
        model.fit(ids, labels, epochs=1, batch_size=8, verbose=0)
        return weakref.ref(model.get_layer("embedding").embeddings.value.handle)

    from tensorflow.python.framework import ops as framework_ops

    registered = set(framework_ops._gradient_registry.list())
    table = train_and_drop()
    gc.collect()
    assert table() is None
    assert set(framework_ops._gradient_registry.list()) == registered


def test_a_finished_run_leaves_no_custom_gradients_registered(fused_kernel, toy_files, tmp_path):
    """The final evaluation traces the trained model again, which registers its custom
    gradients again: `train` releases those too, so a process that trains run after run (a
    notebook, this test suite) does not keep every run's last model alive."""
    from conftest import TINY_CONFIG
    from tensorflow.python.framework import ops as framework_ops

    from bilstm_cli.config import load_config
    from bilstm_cli.train import train

    config = load_config(TINY_CONFIG, overrides=[
        f"data.train={toy_files['train']}", f"data.test={toy_files['test']}", "model.units=4",
        "model.embedding_dim=4", "model.bidirectional=true",
        "model.ensemble=2", "training.epochs=1", "training.batch_size=32",
        f"output.dir={tmp_path}",
    ])

    def custom_gradients() -> set[str]:
        return {name for name in framework_ops._gradient_registry.list()
                if name.startswith("CustomGradient-")}

    registered = custom_gradients()
    result = train(config, log=lambda message: None)
    assert result.metrics["test"]["examples"] == 60
    assert (result.run_dir / "model.onnx").exists()
    assert custom_gradients() == registered
