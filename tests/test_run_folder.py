"""Damaged, mismatched or misplaced run folders (issue 29, items 3, 4, 5, 6, 8, 14): one clear
error naming the file and what to do, by both engines, and the run folder left as it was."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from test_hostile import (
    Case,
    _hashes,
    bigger_vocabulary,
    dangling_last,
    in_checkpoint,
    interrupted,
    lambda_model,
    onnx_with_classes,
)

from bilstm_cli.errors import UserError
from bilstm_cli.runs import resolve_model


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    """A copy of the session's trained run in runs/, with its own `latest`."""
    copy = tmp_path / "runs" / trained_run.name
    shutil.copytree(trained_run, copy, symlinks=True)
    (copy.parent / "latest").symlink_to(copy.name)
    return copy


def _case(run: Path) -> Case:
    return Case(run.parent.parent, run, run, run)


def _one_error(result, *expected: str) -> str:
    """The command ended with exit 2 and one error line holding every `expected`."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def _truncate(path: Path, size: int) -> None:
    data = path.read_bytes()[:size]
    path.unlink()
    path.write_bytes(data)


# Item 3 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_truncated_model_keras_says_damaged_and_names_the_best_checkpoint(run, command):
    (run / "model.onnx").unlink()
    _truncate(run / "model.keras", 5000)
    best = run / "checkpoints" / "best" / "model.keras"
    args = ("predict", "--model", str(run), "great film") if command == "predict" else (
        "export", str(run))
    before = _hashes(run)
    line = _one_error(run_cli(*args, cwd=run.parent), f"{run / 'model.keras'} is damaged",
                      f"cp {best} {run / 'model.keras'}")
    assert "File not found" not in line
    assert _hashes(run) == before


def test_a_truncated_model_keras_hard_linked_to_the_best_says_both_are_damaged(run):
    """`truncate` writes through the hard link training makes: the best checkpoint is the same
    file, and the message must not offer it."""
    from bilstm_cli.predict import load_keras_model

    best = run / "checkpoints" / "best" / "model.keras"
    best.unlink()
    os.link(run / "model.keras", best)
    os.truncate(run / "model.keras", 5000)
    with pytest.raises(UserError, match="same file \\(a hard link\\), damaged too") as error:
        load_keras_model(run / "model.keras")
    assert "cp " not in str(error.value)


# Item 4 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_a_model_holding_code_is_refused_in_one_line(run, toy_files, command):
    lambda_model(_case(run))
    args = {"predict": ("predict", "--engine", "tf", "--model", str(run), "x"),
            "evaluate": ("evaluate", "--engine", "tf", "--model", str(run),
                         "--data", str(toy_files["test"])),
            "export": ("export", str(run))}[command]
    result = run_cli(*args, cwd=run.parent)
    _one_error(result, f"{run / 'model.keras'} holds code (a Lambda layer 'lambda')",
               "will not load")
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_keras_safe_mode_refuses_the_lambda_model_too(run):
    """The crafted file really holds a Lambda layer Keras will not load in safe mode: bilstm's
    check comes first, and safe mode stays on behind it."""
    import keras

    import bilstm_cli.model  # noqa: F401 - registers the layers

    lambda_model(_case(run))
    with pytest.raises(ValueError, match="Lambda"):
        keras.saving.load_model(run / "model.keras", compile=False)


# Items 5 and 8 ------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["onnx", "tf"])
def test_more_labels_than_outputs_are_refused_by_both_engines(run, engine):
    from bilstm_cli.predict import Classifier

    (run / "labels.json").write_text(json.dumps({"labels": ["neg", "pos", "meh"]}))
    model_file = "model.onnx" if engine == "onnx" else "model.keras"
    with pytest.raises(UserError) as error:
        Classifier(run, engine)
    message = str(error.value)
    assert f"{run / 'labels.json'} has 3 labels (neg, pos, meh)" in message
    assert f"{run / model_file} gives 1 output (a two-class model)" in message


def test_more_labels_than_outputs_are_refused_by_export(run):
    from bilstm_cli.export import export_run

    (run / "labels.json").write_text(json.dumps({"labels": ["neg", "pos", "meh"]}))
    with pytest.raises(UserError, match="has 3 labels"):
        export_run(run)


def test_fewer_labels_than_outputs_are_refused_by_both_engines(run):
    """A three-class model (its ONNX graph, and its Keras model) under two labels."""
    import keras
    from conftest import tiny_model

    from bilstm_cli.config import ModelConfig
    from bilstm_cli.predict import Classifier

    onnx_with_classes(3)(_case(run))
    with pytest.raises(UserError, match="has 2 labels \\(neg, pos\\) but .*model.onnx gives "
                                        "3 outputs"):
        Classifier(run, "onnx")
    vocab = len(json.loads((run / "tokenizer.json").read_text())["model"]["vocab"])
    keras.utils.set_random_seed(0)
    model = tiny_model(ModelConfig(units=4, embedding_dim=3), vocab, 3)
    (run / "model.keras").unlink()  # a hard link into checkpoints/best: not written through
    model.save(run / "model.keras")
    with pytest.raises(UserError, match="model.keras gives 3 outputs"):
        Classifier(run, "tf")


def test_fewer_labels_than_outputs_in_the_cli_is_one_error(run):
    onnx_with_classes(3)(_case(run))
    result = run_cli("predict", "--model", str(run), "great film", cwd=run.parent)
    _one_error(result, "labels.json has 2 labels", "model.onnx gives 3 outputs")


@pytest.mark.parametrize("engine", ["onnx", "tf"])
def test_a_tokenizer_from_another_run_is_refused_by_both_engines(run, engine):
    from bilstm_cli.predict import Classifier
    from bilstm_cli.text import load_tokenizer

    size = load_tokenizer(run / "tokenizer.json").get_vocab_size()
    bigger_vocabulary(_case(run))
    with pytest.raises(UserError, match=f"tokenizer.json has a vocabulary of {size + 1} tokens "
                                        f"but the embedding of .* has {size} rows"):
        Classifier(run, engine)


def test_the_onnx_embedding_rows_are_read_without_the_onnx_package(run):
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from bilstm_cli.runcheck import "
            "_onnx_embedding_rows as rows; "
            f"print(rows(Path({str(run / 'model.onnx')!r}).read_bytes())); "
            "assert 'onnx' not in sys.modules and 'tensorflow' not in sys.modules")
    from bilstm_cli.text import load_tokenizer

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    size = load_tokenizer(run / "tokenizer.json").get_vocab_size()
    assert result.stdout.strip() == f"[{size}]"


@pytest.mark.parametrize("content,expected", [
    ("neg, pos", "cannot be read"),
    ('["neg", "pos"]', "expected {\"labels\""),
    ('{"labels": []}', "expected {\"labels\""),
    ('{"labels": [1, 2]}', "expected {\"labels\""),
    ('{"labels": ["pos", "pos"]}', "'pos' listed more than once"),
])
def test_a_malformed_labels_json_is_named(run, content, expected):
    from bilstm_cli.runs import read_labels

    (run / "labels.json").write_text(content)
    with pytest.raises(UserError, match="labels.json") as error:
        read_labels(run)
    assert expected in str(error.value)


# Item 14 ------------------------------------------------------------------------------------

def test_a_folder_of_runs_points_at_latest_and_the_newest_finished_run(run):
    runs = run.parent
    with pytest.raises(UserError) as error:
        resolve_model(str(runs))
    message = str(error.value)
    assert f"{runs} is a folder of run folders, not a run" in message
    assert f"{runs / 'latest'} (-> {run.name})" in message
    assert f"the newest finished run, {run}" in message
    assert "interrupted" not in message
    for args in (("evaluate", "--data", "x.tsv", "--model", str(runs)), ("export", str(runs)),
                 ("train", "--resume", str(runs))):
        _one_error(run_cli(*args, cwd=runs), "folder of run folders", "latest")


def test_an_interrupted_run_keeps_its_hint_and_a_dangling_latest_is_named(run):
    half = run.parent / "20990101-000000-half"
    half.mkdir()
    (half / "config.yaml").write_text("model: {}\n")
    with pytest.raises(UserError, match="tokenizer.json is missing \\(was the training "
                                        "interrupted"):
        resolve_model(str(half))
    (run.parent / "latest").unlink()
    (run.parent / "latest").symlink_to("20990101-000000-gone")
    with pytest.raises(UserError, match="points at 20990101-000000-gone, which does not exist"):
        resolve_model(None, str(run.parent))


def test_runs_given_a_run_folder_names_its_parent(run):
    _one_error(run_cli("runs", str(run), cwd=run.parent),
               "is a run folder, not a folder of runs", f"bilstm runs {run.parent}")


# Item 6 -------------------------------------------------------------------------------------

DAMAGES = {
    "truncated-arrays": (in_checkpoint("arrays.npz", None, 5000), "arrays.npz is not a complete"),
    "truncated-state": (in_checkpoint("state.json", None, 100), "state.json cannot be read"),
    "missing-arrays": (in_checkpoint("arrays.npz", None), "arrays.npz is missing"),
    "dangling-last": (dangling_last, "which does not exist"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_from_a_damaged_last_checkpoint_offers_what_is_left(run, damage):
    interrupted(_case(run))
    do, what = DAMAGES[damage]
    do(_case(run))
    before = _hashes(run.parent)
    result = run_cli("train", "--resume", str(run), cwd=run.parent)
    _one_error(result, f"cannot resume {run}: the last checkpoint", "is damaged", what,
               "nothing was changed",
               f") is intact: {run / 'checkpoints/best/model.keras'}",
               f"bilstm train --resume {run} --force")
    assert _hashes(run.parent) == before  # not marked failed, nothing deleted
    assert json.loads((run / "run.json").read_text())["state"] == "interrupted"


def test_load_last_turns_a_broken_archive_into_a_user_error(run):
    from bilstm_cli.checkpoint import load_last

    in_checkpoint("arrays.npz", None, 5000)(_case(run))
    with pytest.raises(UserError, match="cannot read the checkpoint"):
        load_last(run)
