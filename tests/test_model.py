import numpy as np
import pytest
from conftest import tiny_model

from bilstm_cli.architecture import describe, parameter_count
from bilstm_cli.config import ModelConfig
from bilstm_cli.model import lstm_parameter_count


def test_bidirectional_has_twice_the_lstm_parameters():
    uni = tiny_model(ModelConfig(units=16, embedding_dim=8), vocab_size=50, num_classes=2)
    bi = tiny_model(ModelConfig(units=16, embedding_dim=8, bidirectional=True), 50, 2)
    assert lstm_parameter_count(bi) == 2 * lstm_parameter_count(uni)
    # one LSTM: 4 gates x (inputs + units + bias) x units
    assert lstm_parameter_count(uni) == 4 * (8 + 16 + 1) * 16
    assert bi.output_shape == (None, 1)


@pytest.mark.parametrize("options", [
    {}, {"bidirectional": True}, {"bidirectional": True, "merge_mode": "sum", "layers": 2},
    {"bidirectional": True, "pooling": "max_mean", "word_dropout": 0.2, "layers": 3},
    {"pooling": "mean", "embedding_dropout": 0.1},
])
def test_parameter_count_from_the_description_is_keras_count(options):
    """`bilstm compare` counts parameters without building the model (or TensorFlow)."""
    config = ModelConfig(units=6, embedding_dim=5, **options)
    model = tiny_model(config, vocab_size=40, num_classes=3)
    assert parameter_count(describe(config, 40, 3)) == model.count_params()
    binary = tiny_model(config, vocab_size=40, num_classes=2)
    assert parameter_count(describe(config, 40, 2), ensemble=2) == 2 * binary.count_params()


def test_stacked_layers_and_multiclass_head():
    model = tiny_model(ModelConfig(units=4, embedding_dim=4, layers=3, bidirectional=True,
                                    merge_mode="sum"), 20, 5)
    assert model.output_shape == (None, 5)
    assert len([layer for layer in model.layers if "bidirectional" in layer.name]) == 3


@pytest.mark.parametrize("pooling", ["last", "max", "mean", "max_mean"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_the_prediction(pooling, bidirectional):
    """Right padding is masked: the backward direction and pooling must ignore it."""
    model = tiny_model(ModelConfig(units=6, embedding_dim=5, bidirectional=bidirectional,
                                    pooling=pooling, dropout=0.0, layers=2), 30, 3)
    ids = np.array([[4, 9, 17, 3]], dtype=np.int32)
    padded = np.array([[4, 9, 17, 3, 0, 0, 0]], dtype=np.int32)
    np.testing.assert_allclose(model.predict_on_batch(ids), model.predict_on_batch(padded),
                               atol=1e-6)


def test_word_dropout_replaces_words_by_unknown_while_training_only():
    from bilstm_cli.model import WordDropout
    from bilstm_cli.text import PAD_ID, UNK_ID

    rng = np.random.default_rng(0)
    ids = rng.integers(2, 100, size=(64, 50)).astype(np.int32)
    ids[:, 40:] = PAD_ID
    layer = WordDropout(0.3, seed=1)
    dropped = np.asarray(layer(ids, training=True))
    changed = dropped != ids
    assert (dropped[changed] == UNK_ID).all()
    assert (dropped[:, 40:] == PAD_ID).all()
    assert 0.25 < changed[:, :40].mean() < 0.35
    np.testing.assert_array_equal(np.asarray(layer(ids, training=False)), ids)
    # A model with it predicts as one without it (its weights are the same).
    config = ModelConfig(units=4, embedding_dim=4, dropout=0.0)
    plain = tiny_model(config, 100, 2)
    with_dropout = tiny_model(config.model_copy(update={"word_dropout": 0.5}), 100, 2)
    with_dropout.set_weights(plain.get_weights())
    np.testing.assert_allclose(with_dropout.predict_on_batch(ids), plain.predict_on_batch(ids),
                               atol=1e-6)


def test_word_dropout_by_frequency_spares_the_commonest_words():
    """by="frequency": the id is the word's frequency rank (tests/test_text.py), and rank r is
    dropped with probability rate * r / (r + 100): `the` almost never, a rare word nearly at
    the rate. The default config builds it so; a saved layer keeps it."""
    from bilstm_cli.model import WordDropout
    from bilstm_cli.text import UNK_ID

    ids = np.tile(np.array([[2, 100, 10_000]], dtype=np.int32), (20_000, 1))
    layer = WordDropout(0.5, seed=3, by="frequency")
    dropped = (np.asarray(layer(ids, training=True)) == UNK_ID).mean(axis=0)
    np.testing.assert_allclose(dropped, [0.5 * 2 / 102, 0.25, 0.5 * 10_000 / 10_100], atol=0.012)
    assert WordDropout.from_config(layer.get_config()).by == "frequency"
    model = tiny_model(ModelConfig(units=4, embedding_dim=4), 100, 2)
    assert model.get_layer("word_dropout").by == "frequency"
