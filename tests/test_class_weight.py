"""training.class_weight: weights by label name, and the loss Keras minimises with them, checked
against the loss computed by hand on an imbalanced toy set."""

import numpy as np
import pytest

from bilstm_cli.data.splits import class_weights
from bilstm_cli.errors import UserError


def test_weights_by_label_name():
    labels = ["a"] * 6 + ["b"] * 2
    assert class_weights("none", ["a", "b"], labels) is None
    assert class_weights("balanced", ["a", "b"], labels) == {"a": 8 / 12, "b": 2.0}
    assert class_weights({"b": 3.0}, ["a", "b"], labels) == {"a": 1.0, "b": 3.0}
    with pytest.raises(UserError, match="'c' is not a label of the training data"):
        class_weights({"c": 3.0}, ["a", "b"], labels)


@pytest.mark.parametrize("classes,batch_size", [(2, 8), (2, 3), (3, 4)])
def test_balanced_weights_change_the_loss_as_computed_by_hand(classes, batch_size):
    import keras

    from bilstm_cli.text import pad
    from bilstm_cli.train import _batch_dataset, _label_array

    names = ["a", "b", "c"][:classes]
    labels = ["a"] * 6 + ["b"] * 2 + (["c"] * 1 if classes == 3 else [])
    weights = class_weights("balanced", names, labels)
    ids = [np.array([i % 5 + 2, (3 * i) % 7 + 2], dtype=np.int32) for i in range(len(labels))]
    y = _label_array(labels, names, binary=classes == 2)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"), keras.layers.Embedding(10, 4),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1 if classes == 2 else classes,
                           activation="sigmoid" if classes == 2 else "softmax"),
    ])
    model.compile(loss="binary_crossentropy" if classes == 2
                  else "sparse_categorical_crossentropy")

    p = np.asarray(model.predict(pad(ids), verbose=0), dtype=np.float64)
    if classes == 2:
        p, t = p.reshape(-1), y.reshape(-1)
        per_example = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    else:
        per_example = -np.log(p[np.arange(len(y)), y])
    w = np.array([weights[label] for label in labels])

    plain, _ = _batch_dataset(ids, y, batch_size, None, False)
    weighted, _ = _batch_dataset(ids, y, batch_size, None, False, w.astype(np.float32))
    plain_loss = model.evaluate(plain, verbose=0)
    weighted_loss = model.evaluate(weighted, verbose=0)
    assert plain_loss == pytest.approx(per_example.mean(), rel=1e-5)
    assert weighted_loss == pytest.approx((w * per_example).sum() / len(labels), rel=1e-5)
    assert weighted_loss != pytest.approx(plain_loss, rel=1e-3)
