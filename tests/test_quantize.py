"""The int8 model: `output.quantize` and `bilstm export --quantize` write it, `predict
--engine onnx-int8` (or `--model RUN/model.int8.onnx`) runs it, and its labels agree with the
float model's."""

import shutil

import numpy as np
import pytest
from conftest import TINY, run_cli, run_cli_without_tensorflow, toy_examples

from bilstm_cli.errors import UserError
from bilstm_cli.predict import Classifier
from bilstm_cli.quantize import int8_path, quantize_model

TEXTS = ["superb brilliant film", "", "awful dull plot", "qqq unknown words", "the movie was",
         "great wonderful but boring and tedious"]


@pytest.fixture(scope="module")
def quantized_run(toy_files, tmp_path_factory):
    """A tiny trained run with `output.quantize: true`: training wrote model.int8.onnx."""
    folder = tmp_path_factory.mktemp("quantized")
    result = run_cli(
        "train", "--bidirectional", *TINY, "--set", f"data.train={toy_files['train']}",
        "--set", f"data.test={toy_files['test']}", "--set", "output.quantize=true",
        "--output", str(folder / "runs"), cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    return (folder / "runs" / "latest").resolve()


def _copy(run, tmp_path, int8: bool = True):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if not int8:
        (copy / "model.int8.onnx").unlink()
    return copy


def test_training_writes_a_smaller_int8_model_whose_labels_agree(quantized_run):
    float_file, int8_file = quantized_run / "model.onnx", quantized_run / "model.int8.onnx"
    assert int8_file.is_file()
    assert int8_file.stat().st_size < float_file.stat().st_size
    texts = TEXTS + [text for text, _ in toy_examples(200, seed=7)]
    exact = Classifier(quantized_run, "onnx").predict(texts)
    rounded = Classifier(quantized_run, "onnx-int8").predict(texts)
    assert rounded.shape == exact.shape
    # Rounded weights and activations: close, not equal; the labels (nearly) all the same.
    agreement = (rounded.argmax(axis=1) == exact.argmax(axis=1)).mean()
    assert agreement >= 0.97, agreement
    assert np.abs(rounded - exact).mean() < 0.05
    assert not np.array_equal(rounded, exact)  # it really is another model


def test_predict_runs_the_int8_model_by_engine_or_file_without_tensorflow(quantized_run,
                                                                           tmp_path):
    by_engine = run_cli_without_tensorflow("predict", "--model", str(quantized_run), "--engine",
                                           "onnx-int8", "--format", "label", *TEXTS[:3],
                                           cwd=tmp_path)
    by_file = run_cli_without_tensorflow("predict", "--model",
                                         str(quantized_run / "model.int8.onnx"), "--format",
                                         "label", *TEXTS[:3], cwd=tmp_path)
    assert by_engine.stdout == by_file.stdout
    assert len(by_engine.stdout.splitlines()) == 3


def test_export_quantize_writes_the_int8_model_and_a_later_export_keeps_it_current(
        quantized_run, tmp_path):
    run = _copy(quantized_run, tmp_path, int8=False)
    result = run_cli("export", str(run), "--quantize", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(run / "model.onnx"), str(run / "model.int8.onnx")]
    np.testing.assert_allclose(Classifier(run, "onnx-int8").predict(TEXTS),
                               Classifier(quantized_run, "onnx-int8").predict(TEXTS), atol=1e-6)
    # A plain export rewrites model.onnx: the int8 twin is rewritten with it, never left stale.
    (run / "model.int8.onnx").write_bytes(b"stale")
    result = run_cli("export", str(run), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == str(run / "model.int8.onnx")
    assert Classifier(run, "onnx-int8").predict(TEXTS).shape == (len(TEXTS), 2)


@pytest.mark.parametrize("command", [("predict", "x"), ("evaluate", "--data", "{test}")])
def test_asking_for_a_missing_int8_model_names_the_run_and_the_command(
        quantized_run, toy_files, tmp_path, command):
    run = _copy(quantized_run, tmp_path, int8=False)
    args = [part.format(test=toy_files["test"]) for part in command]
    result = run_cli(*args, "--model", str(run), "--engine", "onnx-int8", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(run) in result.stderr
    assert f"bilstm export {run} --quantize" in result.stderr
    assert result.stdout == ""


def test_an_int8_file_with_another_engine_is_refused(quantized_run, tmp_path):
    result = run_cli("predict", "--model", str(quantized_run / "model.int8.onnx"), "--engine",
                     "tf", "x", cwd=tmp_path)
    assert result.returncode == 2 and "int8" in result.stderr and "Traceback" not in \
        result.stderr


def test_a_damaged_source_is_a_user_error_and_leaves_no_file(quantized_run, tmp_path):
    run = _copy(quantized_run, tmp_path)
    before = (run / "model.int8.onnx").read_bytes()
    (run / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(UserError, match="cannot quantize"):
        quantize_model(run / "model.onnx")
    assert (run / "model.int8.onnx").read_bytes() == before  # the old one is intact
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(UserError, match="missing"):
        quantize_model(run / "absent.onnx")


def test_int8_path():
    from pathlib import Path

    assert int8_path(Path("r/model.onnx")) == Path("r/model.int8.onnx")
    assert int8_path(Path("copy.onnx")) == Path("copy.int8.onnx")
