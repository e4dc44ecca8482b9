"""The ONNX export gives the Keras model's probabilities (within 1e-5) on awkward texts."""

import itertools
import json
import weakref

import numpy as np
import pytest
from conftest import toy_examples

from bilstm_cli.config import ModelConfig
from bilstm_cli.export import build_onnx, export_model, spec_from_keras
from bilstm_cli.predict import Classifier, OnnxEngine, TensorFlowEngine, choose_engine
from bilstm_cli.text import build_tokenizer, save_tokenizer

MERGE_MODES = ["concat", "sum", "ave", "mul"]
GRID = list(itertools.product([False, True], [1, 2], ["last", "max", "mean", "max_mean"]))

AWKWARD = [
    "",
    "great",
    "zzz qqq xyzzy plonk",  # every word unknown
    "Ça a été très émouvant, vraiment 🎬 — 映画 ★★★★★",
    "<br /><br />",
    " ".join(["superb brilliant film"] * 60),  # longer than max_length: truncated
    "the movie was awful and boring but the actor was wonderful",
    "!!! ... ??? ,,,",
    "\t  ",
]


def _random_texts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = [text.split() for text, _ in toy_examples(50, seed=seed)]
    vocab = sorted({w for ws in words for w in ws}) + ["unseen", "words", "ünïcödé"]
    return [" ".join(rng.choice(vocab, size=int(rng.integers(1, 70)))) for _ in range(count)]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder with a tokenizer (max_length 40) and labels; each test adds its model."""
    folder = tmp_path_factory.mktemp("export_run")
    tokenizer = build_tokenizer([t for t, _ in toy_examples(200)], 60, max_length=40)
    save_tokenizer(tokenizer, folder / "tokenizer.json")
    return folder, tokenizer.get_vocab_size()


def _architecture(vocab_size: int, bidirectional: bool, layers: int, pooling: str,
                  merge_mode: str, classes: int):
    from bilstm_cli.architecture import describe

    config = ModelConfig(bidirectional=bidirectional, layers=layers, units=5, embedding_dim=6,
                         dropout=0.3, word_dropout=0.1, embedding_dropout=0.2,
                         merge_mode=merge_mode, pooling=pooling)
    return describe(config, vocab_size, classes)


def _tiny_model(vocab_size: int, bidirectional: bool, layers: int, pooling: str,
                merge_mode: str, classes: int, seed: int):
    import keras

    from bilstm_cli.model import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(_architecture(vocab_size, bidirectional, layers, pooling, merge_mode,
                                      classes))
    # Random weights of a useful size (biases included), so outputs are far from 0.5 and a
    # wrong gate order, direction or mask would show.
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.6, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model


@pytest.mark.parametrize("bidirectional,layers,pooling", GRID)
def test_onnx_matches_keras(run_folder, bidirectional, layers, pooling):
    folder, vocab_size = run_folder
    index = GRID.index((bidirectional, layers, pooling))
    classes = 2 if index % 2 == 0 else 3
    merge_mode = MERGE_MODES[index % 4]
    model = _tiny_model(vocab_size, bidirectional, layers, pooling, merge_mode, classes, index)
    labels = [f"c{i}" for i in range(classes)]
    (folder / "labels.json").write_text(json.dumps({"labels": labels}))
    arch = _architecture(vocab_size, bidirectional, layers, pooling, merge_mode, classes)
    onnx_path = export_model(model, arch, folder / f"model-{index}.onnx")

    keras_clf = Classifier(folder, TensorFlowEngine(model))
    onnx_clf = Classifier(folder, OnnxEngine(onnx_path))
    texts = AWKWARD + _random_texts(40, seed=index)
    # Batches mix lengths (padding and masking) and also run one text at a time.
    for batch_size in (7, 1):
        expected = keras_clf.predict(texts, batch_size)
        got = onnx_clf.predict(texts, batch_size)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.01  # the texts really get different answers


@pytest.mark.parametrize("classes", [2, 3])
def test_an_ensemble_exports_as_the_mean_of_its_members(run_folder, tmp_path, classes):
    """model.ensemble: one ONNX graph (one chain per member from the same ids, then their
    Mean) gives what the Keras ensemble gives, and that is the mean of the members' own
    probabilities; the ensemble's model.keras loads back (nested members and all)."""
    from bilstm_cli.ensemble import average as ensemble_model
    from bilstm_cli.ensemble import members_of as ensemble_members
    from bilstm_cli.predict import load_keras_model

    folder, vocab_size = run_folder
    members = [_tiny_model(vocab_size, True, 1, "max_mean", "concat", classes, seed)
               for seed in (40, 41, 42)]
    (folder / "labels.json").write_text(json.dumps({"labels": [f"c{i}" for i in
                                                               range(classes)]}))
    alone = [Classifier(folder, TensorFlowEngine(member)) for member in members]
    texts = AWKWARD + _random_texts(30, seed=classes)
    expected = np.mean([clf.predict(texts, 7) for clf in alone], axis=0)
    model = ensemble_model(members)
    assert [m.name for m in ensemble_members(model)] == ["member_1", "member_2", "member_3"]
    np.testing.assert_allclose(Classifier(folder, TensorFlowEngine(model)).predict(texts, 7),
                               expected, atol=1e-6)
    arch = _architecture(vocab_size, True, 1, "max_mean", "concat", classes)
    onnx_path = export_model(model, arch, tmp_path / "ensemble.onnx")
    got = Classifier(folder, OnnxEngine(onnx_path)).predict(texts, 7)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.abs(got - alone[0].predict(texts, 7)).max() > 0.01  # not just the first member

    model.save(tmp_path / "ensemble.keras")
    loaded = load_keras_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(Classifier(folder, TensorFlowEngine(loaded)).predict(texts, 7),
                               expected, atol=1e-6)


def test_ensemble_export_copies_out_one_member_at_a_time(run_folder):
    """The export is the peak of an ensemble run's memory: each member's weights are copied out
    of Keras only once the previous member's copy is gone (into the proto)."""
    folder, vocab_size = run_folder
    members = [_tiny_model(vocab_size, True, 1, "max", "concat", 2, seed) for seed in (1, 2, 3)]
    arch = _architecture(vocab_size, True, 1, "max", "concat", 2)
    released: list[bool] = []
    previous: weakref.ref | None = None

    def specs():
        nonlocal previous
        for member in members:
            if previous is not None:
                released.append(previous() is None)
            spec = spec_from_keras(member, arch)
            previous = weakref.ref(spec)
            yield spec
            del spec  # as specs_from_keras, which keeps no reference to what it yielded

    proto = build_onnx(specs())
    assert released == [True, True]
    assert [node.op_type for node in proto.graph.node].count("LSTM") == 3
    assert proto.graph.node[-1].op_type == "Mean"

    from bilstm_cli.ensemble import average as ensemble_model
    from bilstm_cli.export import specs_from_keras

    made = specs_from_keras(ensemble_model(members), arch)  # export_model's source of specs
    first = weakref.ref(next(made))
    next(made)
    assert first() is None  # it keeps nothing of the spec it handed out


def test_backward_final_state_is_keras_backward_output(run_folder):
    """Pooling `last` in a BiLSTM: the backward half is the state after reading each text back
    to its first word, never one that started in the padding."""
    folder, vocab_size = run_folder
    import keras

    model = _tiny_model(vocab_size, True, 1, "last", "concat", 2, 99)
    bidir = model.get_layer("bidirectional_1")
    features = keras.Model(model.input, bidir.output)
    proto = build_onnx(spec_from_keras(model, _architecture(vocab_size, True, 1, "last",
                                                            "concat", 2)))
    import onnx
    import onnxruntime as ort

    # Expose the merged LSTM output of the graph (the node feeding the dense MatMul).
    matmul = next(n for n in proto.graph.node if n.op_type == "MatMul")
    proto.graph.output.append(onnx.helper.make_tensor_value_info(
        matmul.input[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[5, 9, 3, 0, 0, 0], [7, 2, 8, 4, 6, 3]], dtype=np.int32)
    got = session.run(None, {"ids": ids})[1]
    expected = np.asarray(features.predict_on_batch(ids))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # And the short text's backward state does not depend on what the padding would have held.
    longer = np.array([[5, 9, 3]], dtype=np.int32)
    np.testing.assert_allclose(session.run(None, {"ids": longer})[1][0], got[0], atol=1e-6)


def test_engine_choice(run_folder, tmp_path):
    folder = tmp_path
    assert choose_engine(folder) == "tf"  # no model.onnx
    (folder / "model.keras").write_bytes(b"k")
    (folder / "model.onnx").write_bytes(b"o")
    assert choose_engine(folder) == "onnx"
    assert choose_engine(folder, "tf") == "tf"
    import os

    os.utime(folder / "model.onnx", (1, 1))  # older than model.keras: outdated weights
    assert choose_engine(folder) == "tf"
    (folder / "run.json").write_text('{"state": "running"}')  # killed before its export
    assert choose_engine(folder) == "tf"
    # A finished training exported its final model: file times are a copy's (cp -r), not news.
    (folder / "run.json").write_text('{"state": "finished"}')
    assert choose_engine(folder) == "onnx"


def test_onnx_path_never_imports_tensorflow(trained_run, tmp_path):
    """The ONNX classifier and the predict command run without TensorFlow in the process."""
    assert (trained_run / "model.onnx").is_file()  # training wrote it
    from conftest import run_cli_without_tensorflow

    result = run_cli_without_tensorflow("predict", "--model", str(trained_run), "great film",
                                        "awful plot", cwd=tmp_path)
    assert len(result.stdout.splitlines()) == 2, result.stdout


def test_export_command_writes_an_equivalent_model(trained_run, tmp_path):
    from conftest import run_cli

    target = tmp_path / "copy.onnx"
    result = run_cli("export", str(trained_run), "--output", str(target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout
    texts = ["superb brilliant film", "", "awful dull plot", "qqq"]
    a = Classifier(trained_run, OnnxEngine(target)).predict(texts)
    b = Classifier(trained_run, "onnx").predict(texts)
    np.testing.assert_allclose(a, b, atol=1e-7)
