import json
import os

import numpy as np
import pytest

from bilstm_cli.errors import UserError
from bilstm_cli.predict import class_probabilities, format_prediction, line_batches

LABELS = ["neg", "pos"]


def test_binary_outputs_become_two_columns():
    np.testing.assert_allclose(class_probabilities([[0.25], [1.0]], 2),
                               [[0.75, 0.25], [0.0, 1.0]])


def test_tsv_label_and_top_k_formats():
    p = np.array([0.1, 0.7, 0.2])
    labels = ["a", "b", "c"]
    assert format_prediction("t", p, 1, labels, "tsv") == "b\t0.700000"
    assert format_prediction("t", p, 1, labels, "label") == "b"
    assert format_prediction("t", p, 1, labels, "tsv", top_k=2) == "b\t0.700000\tc\t0.200000"
    assert format_prediction("t", p, 1, labels, "label", top_k=2) == "b\tc"


def test_jsonl_record():
    record = json.loads(format_prediction("ça va", np.array([0.3, 0.7]), 1, LABELS, "jsonl"))
    assert record == {"text": "ça va", "label": "pos", "probability": 0.7,
                      "probabilities": {"neg": 0.3, "pos": 0.7}}


def _pipe_with(data: bytes) -> int:
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return read_end


def test_line_batches_keep_empty_lines_and_order():
    fd = _pipe_with(b"one\n\nthree\r\nfour")
    assert [line for batch in line_batches(fd, 2) for line in batch] == ["one", "", "three",
                                                                         "four"]
    os.close(fd)


def test_line_batches_respect_batch_size():
    fd = _pipe_with(b"".join(b"%d\n" % i for i in range(10)))
    assert [len(b) for b in line_batches(fd, 4)] == [4, 4, 2]
    os.close(fd)


def test_invalid_utf8_names_the_line_or_is_replaced():
    fd = _pipe_with(b"fine\nbad \xff\n")
    with pytest.raises(UserError, match="<stdin>:2: invalid UTF-8"):
        list(line_batches(fd, 10))
    os.close(fd)
    fd = _pipe_with(b"fine\nbad \xff\n")
    assert list(line_batches(fd, 10, errors="replace")) == [["fine", "bad \ufffd"]]
    os.close(fd)


def test_batches_of_long_texts_hold_fewer_texts_and_results_keep_input_order(trained_run):
    from bilstm_cli.predict import BATCH_TOKENS, Classifier

    class RecordingEngine:
        """Returns each text's first id as its probability, and records the batch shapes."""

        def __init__(self) -> None:
            self.shapes: list[tuple[int, int]] = []

        def run(self, ids: np.ndarray) -> np.ndarray:
            self.shapes.append(ids.shape)
            return ids[:, :1].astype(np.float32) / 1000

    engine = RecordingEngine()
    classifier = Classifier(trained_run, engine)
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in np.concatenate([
        rng.integers(1, 50, size=300), rng.integers(300, 3 * BATCH_TOKENS // 256, size=300)])]
    rng.shuffle(lengths)
    ids = [np.full(n, i + 1, dtype=np.int32) for i, n in enumerate(lengths)]
    probabilities = classifier.predict_ids(ids, batch_size=256)
    np.testing.assert_allclose(probabilities[:, 1], [(i + 1) / 1000 for i in range(600)],
                               rtol=1e-6)
    assert all(rows * steps <= BATCH_TOKENS for rows, steps in engine.shapes)
    assert max(rows for rows, _ in engine.shapes) == 256  # short texts still fill a batch


def test_one_long_text_does_not_shrink_the_batches_of_the_short_ones(trained_run):
    """predict reads up to 1024 lines per batch: one long line among them costs one more
    engine call, not a batch size cut to fit it for all the others."""
    from bilstm_cli.predict import Classifier

    class CountingEngine:
        def __init__(self) -> None:
            self.shapes: list[tuple[int, int]] = []

        def run(self, ids: np.ndarray) -> np.ndarray:
            self.shapes.append(ids.shape)
            return np.full((len(ids), 1), 0.5, dtype=np.float32)

    engine = CountingEngine()
    ids = [np.full(10, 5, dtype=np.int32)] * 1023 + [np.full(3000, 5, dtype=np.int32)]
    Classifier(trained_run, engine).predict_ids(ids, batch_size=1024)
    assert engine.shapes == [(1023, 10), (1, 3000)]


def test_members_predicting_many_lengths_keep_retracing_advice_off_stderr(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Every member traces once per new input shape: TensorFlow's warning about it is advice
    for whoever writes the loop, and stays off the user's stderr."""
    import keras

    from bilstm_cli import backend

    backend._drop_retracing_advice()
    members = []
    for _ in range(3):
        ids = keras.Input((None,), dtype="int32")
        hidden = keras.layers.LSTM(4)(keras.layers.Embedding(50, 4, mask_zero=True)(ids))
        members.append(keras.Model(ids, keras.layers.Dense(2)(hidden)))
    for length in (3, 5, 9, 17):
        for member in members:
            member.predict_on_batch(np.ones((2, length), "int32"))
    assert "retracing" not in capfd.readouterr().err
    assert "retracing" not in caplog.text
