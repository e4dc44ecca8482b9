"""The Python API (bilstm_cli.api): what the README's example does, in-process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import TINY_CONFIG, toy_examples, write_tsv

from bilstm_cli import api
from bilstm_cli.errors import UserError


def test_importing_the_api_imports_no_tensorflow_and_changes_nothing():
    check = ("import os, sys; env = dict(os.environ); err = sys.stderr; "
             "import bilstm_cli.api, bilstm_cli.backend, bilstm_cli.cli, bilstm_cli.auto; "
             "assert 'tensorflow' not in sys.modules; "
             "assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items()); "
             "assert sys.stderr is err")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    bare = subprocess.run([sys.executable, "-c", "import sys, bilstm_cli.api; "
                           "assert 'tensorflow' not in sys.modules"], capture_output=True,
                          text=True, timeout=300)
    assert bare.returncode == 0, bare.stderr


def test_a_dict_and_a_yaml_file_give_the_same_config(tmp_path):
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    raw["data"]["train"] = str(tmp_path / "train.tsv")
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(raw))
    from_dict = api.config(raw, ["model.units=4"])
    from_file = api.config(tmp_path / "mine.yaml", ["model.units=4"])
    assert from_dict == from_file
    assert from_dict.model.units == 4
    assert api.config(from_dict) == from_dict
    assert api.config("sst2").data.dataset == "sst2"


def test_a_bad_key_in_a_dict_is_a_user_error_that_names_it():
    with pytest.raises(UserError, match="model.unitz"):
        api.config({"data": {"dataset": None, "train": "x.tsv"}, "model": {"unitz": 3}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    raw["data"]["train"] = str(write_tsv(folder / "train.tsv", toy_examples(200, seed=1)))
    raw["data"]["test"] = str(write_tsv(folder / "test.tsv", toy_examples(60, seed=2)))
    raw["output"]["dir"] = str(folder / "runs")
    lines: list[str] = []
    return api.train(raw, ["training.epochs=3"], log=lines.append), folder, lines


def test_train_from_a_dict_writes_a_finished_run(trained):
    run, folder, lines = trained
    assert (run.run_dir / "model.keras").is_file()
    assert run.metrics["test"]["accuracy"] > 0.8
    assert any("run folder" in line for line in lines)  # the log we passed was used
    listed = api.runs(folder / "runs")
    assert [r["state"] for r in listed] == ["finished"]


def test_predict_evaluate_and_export(trained):
    run, folder, _ = trained
    answers = api.predict(["great wonderful film", "awful boring plot"], run.run_dir)
    assert [label for label, _ in answers] == ["pos", "neg"]
    assert all(0.5 <= p <= 1.0 for _, p in answers)
    report = api.evaluate(folder / "test.tsv", run.run_dir)
    assert report["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"], abs=1e-6)
    onnx = api.export(run.run_dir)
    assert onnx == run.run_dir / "model.onnx"
    classifier = api.load(run.run_dir, engine="onnx")
    again = api.predict(["great wonderful film", "awful boring plot"], classifier)
    assert [a[0] for a in again] == ["pos", "neg"]
    assert [a[1] for a in again] == pytest.approx([a[1] for a in answers], abs=1e-5)


def test_a_missing_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        api.load(tmp_path / "nothing")
