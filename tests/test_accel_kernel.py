"""The fused CPU LSTM kernel: its build, its fallbacks, and training with it."""

import numpy as np
import pytest

from bilstm_cli.accel import kernel as fused_lstm


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty kernel cache and nothing loaded, as on a machine that never built the kernel."""
    monkeypatch.setenv("BILSTM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fused_lstm, "_loaded", {})
    fused_lstm.library_path.cache_clear()
    yield tmp_path
    fused_lstm.library_path.cache_clear()


def test_a_failed_build_is_reported_once_and_not_retried(fresh_cache, monkeypatch):
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    messages: list[str] = []
    assert fused_lstm.prepare(messages.append) is False
    assert any("build failed" in m for m in messages), messages
    assert fused_lstm.library_path().with_suffix(".failed").is_file()
    assert fused_lstm.ops() is None

    messages.clear()
    assert fused_lstm.prepare(messages.append) is False
    assert not any("building" in m for m in messages), "a failed build must not rerun each time"


def test_a_cache_folder_that_cannot_be_written_falls_back_to_keras(fresh_cache, monkeypatch):
    blocker = fresh_cache / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("BILSTM_CACHE_DIR", str(blocker / "below"))  # not a folder
    monkeypatch.setenv("CXX", "false")  # any "compiler": the folder fails first
    fused_lstm.library_path.cache_clear()
    messages: list[str] = []
    assert fused_lstm.prepare(messages.append) is False
    assert "cannot build it in" in messages[-1] and "BILSTM_CACHE_DIR" in messages[-1]
    assert fused_lstm.ops() is None


def test_the_environment_turns_the_kernel_off(fresh_cache, monkeypatch):
    monkeypatch.setenv("BILSTM_FUSED_LSTM", "0")
    messages: list[str] = []
    assert fused_lstm.prepare(messages.append) is False
    assert "BILSTM_FUSED_LSTM=0" in messages[0]
    assert fused_lstm.ops() is None


def test_the_kernel_rejects_lengths_outside_the_batch(fused_kernel):
    if not fused_kernel:
        pytest.skip("the fused LSTM kernel could not be built here")
    import tensorflow as tf

    units, steps = 3, 4
    zeros, no_ids = tf.zeros([2, units]), tf.zeros([0, 0], tf.int32)
    for lengths in ([0, 2], [5, 1]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="1..steps"):
            fused_lstm.ops().bilstm_lstm(
                tf.zeros([2, steps, 4 * units]), tf.zeros([4 * units]),
                tf.zeros([units, 4 * units]), zeros, zeros, tf.constant(lengths), no_ids,
                reverse=False)
    # A lookup's ids must be rows of the table.
    with pytest.raises(tf.errors.InvalidArgumentError, match="not in"):
        fused_lstm.ops().bilstm_lstm(
            tf.zeros([6, 4 * units]), tf.zeros([4 * units]), tf.zeros([units, 4 * units]),
            zeros, zeros, tf.constant([4, 4]), tf.constant([[1, 2, 3, 4], [5, 6, 0, 0]]),
            reverse=False, lookup=True)


def test_training_steps_with_and_without_the_accel_package_agree(fused_kernel, monkeypatch):
    """A whole model (two BiLSTM layers, max pooling) trained a few steps with the accel
    package's layers and Adam, and with Keras' own: the same weights."""
    if not fused_kernel:
        pytest.skip("the fused LSTM kernel could not be built here")
    import keras
    from conftest import tiny_model

    from bilstm_cli import accel
    from bilstm_cli.config import ModelConfig

    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 12, size=24)
    ids = np.zeros((24, 11), dtype=np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, 40, length)
    labels = rng.integers(0, 2, size=(24, 1)).astype("float32")

    def trained_weights(kinds):
        keras.utils.set_random_seed(7)
        model = tiny_model(ModelConfig(units=6, embedding_dim=5, layers=2, bidirectional=True,
                                       pooling="max", dropout=0.0), 40, 2, kinds=kinds)
        adam = accel.fused_layers().adam if kinds == "fused" else keras.optimizers.Adam
        model.compile(optimizer=adam(0.01), loss="binary_crossentropy")
        for _ in range(3):
            model.train_on_batch(ids, labels)
        return model.get_weights()

    calls = []
    lstm = fused_lstm.lstm
    monkeypatch.setattr(fused_lstm, "lstm", lambda *a, **k: calls.append(k) or lstm(*a, **k))
    with_kernel = trained_weights("fused")
    assert {call["reverse"] for call in calls} == {False, True}  # both directions traced
    calls.clear()
    plain = trained_weights(None)
    assert not calls
    for ours, keras_own in zip(with_kernel, plain, strict=True):
        np.testing.assert_allclose(ours, keras_own, atol=1e-5)


def test_select_chooses_by_training_kernel(fused_kernel, monkeypatch):
    """training.kernel: keras is Keras' own; auto the accel package's where the kernel runs
    (else Keras', saying why); fused is an error where it cannot run."""
    import keras

    from bilstm_cli import accel
    from bilstm_cli.errors import UserError

    messages: list[str] = []
    plain = accel.select("keras", messages.append)
    assert (plain.lstm, plain.adam) == (keras.layers.LSTM, keras.optimizers.Adam)
    if fused_kernel:
        assert accel.select("auto", messages.append).name == "fused"
        assert accel.select("fused", messages.append).name == "fused"
    monkeypatch.setenv("BILSTM_FUSED_LSTM", "0")
    assert accel.select("auto", messages.append).name == "keras"
    assert messages[-1].startswith("fused LSTM kernel: off (BILSTM_FUSED_LSTM=0)")
    with pytest.raises(UserError, match="training.kernel: fused"):
        accel.select("fused", messages.append)


def test_private_api_is_there():
    """The private TensorFlow/Keras API the accel package uses (its docstring lists them): an
    upgrade that removes one fails here, not silently in the numbers."""
    import keras
    from tensorflow.python.framework import ops as framework_ops

    adam = keras.optimizers.Adam()
    variable = keras.Variable(np.zeros((3, 2), "float32"))
    adam.build([variable])
    index = adam._get_variable_index(variable)
    assert adam._momentums[index].shape == adam._velocities[index].shape == (3, 2)
    assert adam._use_weight_decay(variable) in (True, False)
    assert isinstance(framework_ops._gradient_registry._registry, dict)


def test_inference_keeps_no_state_and_its_gradient_reruns_the_forward_pass(fused_kernel):
    if not fused_kernel:
        pytest.skip("the fused LSTM kernel could not be built here")
    import keras
    import tensorflow as tf

    from bilstm_cli.accel.layers import RightPaddedLSTM

    rng = np.random.default_rng(2)
    ids = np.zeros((5, 8), dtype=np.int32)
    for row, length in enumerate([8, 3, 1, 6, 8]):
        ids[row, :length] = rng.integers(1, 20, length)
    embedding = keras.layers.Embedding(20, 4, mask_zero=True)
    inputs, mask = embedding(ids), embedding.compute_mask(ids)
    lstm = RightPaddedLSTM(3, return_sequences=True, go_backwards=True)

    def outputs_and_gradients(training):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = lstm(inputs, mask=mask, training=training)
            loss = tf.reduce_sum(outputs * tf.range(1.0, 4.0))
        return outputs.numpy(), [g.numpy() for g in tape.gradient(loss, [inputs, *lstm.weights])]

    train_outputs, train_gradients = outputs_and_gradients(True)
    infer_outputs, infer_gradients = outputs_and_gradients(False)
    np.testing.assert_array_equal(infer_outputs, train_outputs)
    for inferred, trained in zip(infer_gradients, train_gradients):
        np.testing.assert_allclose(inferred, trained, rtol=1e-6, atol=1e-7)

    kept = fused_lstm.ops().bilstm_lstm(
        tf.zeros([2, 5, 12]), tf.zeros([12]), tf.zeros([3, 12]), tf.zeros([2, 3]),
        tf.zeros([2, 3]), tf.constant([5, 2]), tf.zeros([0, 0], tf.int32), reverse=False,
        save_state=False)
    assert [t.shape[0] for t in kept[2:]] == [0, 0, 0]
