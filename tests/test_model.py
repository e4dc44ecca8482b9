import numpy as np
import pytest

from bilstm_cli.config import ModelConfig
from bilstm_cli.model import build_model, lstm_parameter_count


def test_bidirectional_has_twice_the_lstm_parameters():
    uni = build_model(ModelConfig(units=16, embedding_dim=8), vocab_size=50, num_classes=2)
    bi = build_model(ModelConfig(units=16, embedding_dim=8, bidirectional=True), 50, 2)
    assert lstm_parameter_count(bi) == 2 * lstm_parameter_count(uni)
    # one LSTM: 4 gates x (inputs + units + bias) x units
    assert lstm_parameter_count(uni) == 4 * (8 + 16 + 1) * 16
    assert bi.output_shape == (None, 1)


def test_stacked_layers_and_multiclass_head():
    model = build_model(ModelConfig(units=4, embedding_dim=4, layers=3, bidirectional=True,
                                    merge_mode="sum"), 20, 5)
    assert model.output_shape == (None, 5)
    assert len([layer for layer in model.layers if "bidirectional" in layer.name]) == 3


@pytest.mark.parametrize("pooling", ["last", "max", "mean"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_the_prediction(pooling, bidirectional):
    """Right padding is masked: the backward direction and pooling must ignore it."""
    model = build_model(ModelConfig(units=6, embedding_dim=5, bidirectional=bidirectional,
                                    pooling=pooling, dropout=0.0, layers=2), 30, 3)
    ids = np.array([[4, 9, 17, 3]], dtype=np.int32)
    padded = np.array([[4, 9, 17, 3, 0, 0, 0]], dtype=np.int32)
    np.testing.assert_allclose(model.predict_on_batch(ids), model.predict_on_batch(padded),
                               atol=1e-6)
