"""`bilstm compare`: a task whose answer is known in advance, resuming after Ctrl-C, `--from`,
and the user errors. Real processes, a tiny model."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY, run_cli, run_cli_without_tensorflow, write_tsv

from bilstm_cli.compare import plan, plot, stats
from bilstm_cli.errors import UserError

FILLER = [f"w{i}" for i in range(30)]


def first_token_examples(count: int, seed: int) -> list[tuple[str, str]]:
    """The label is the first word of 40-60: a forward LSTM read to its last state must carry
    it across the whole text; the backward direction reads it last."""
    rng = random.Random(seed)
    examples = []
    for i in range(count):
        label = "yes" if i % 2 else "no"
        words = ["alpha" if label == "yes" else "beta"]
        words += [rng.choice(FILLER) for _ in range(rng.randint(40, 60))]
        examples.append((" ".join(words), label))
    return examples


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("compare")
    write_tsv(folder / "train.tsv", first_token_examples(400, seed=1))
    write_tsv(folder / "test.tsv", first_token_examples(200, seed=2))
    write_tsv(folder / "other_test.tsv", first_token_examples(100, seed=3))
    return folder


def compare_args(data: Path, output: str, *extra: str) -> list[str]:
    """The tiny config, `last` pooling, nothing that hides a word; Keras' own LSTM (this file
    need not build the fused kernel: about 30 s)."""
    return ["compare", *TINY, "--set", f"data.train={data / 'train.tsv'}",
            "--set", f"data.test={data / 'test.tsv'}", "--set", "model.pooling=last",
            "--set", "model.word_dropout=0", "--set", "training.consistency=0",
            "--set", "model.embedding_init=random", "--set", "training.kernel=keras",
            "--output", str(data / output), *extra]


@pytest.fixture(scope="module")
def compared(data) -> dict:
    """uni against bi (the default variants), two seeds, the comparison as JSON."""
    result = run_cli(*compare_args(data, "first", "--seeds", "2", "--json"), cwd=data)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_backward_direction_wins_significantly_on_the_same_splits(compared, data):
    lstm, bilstm = compared["variants"]
    assert (lstm["name"], bilstm["name"]) == ("lstm", "bilstm")
    assert lstm["seeds"] == bilstm["seeds"] == [42, 43]
    comparison = compared["comparisons"][0]
    assert comparison["verdict"] == "better" and comparison["difference"] > 0.2
    assert comparison["interval"][0] > 0  # the bootstrap interval holds no 0
    for seed in comparison["seeds"]:
        assert seed["accuracy"][1] > seed["accuracy"][0]
        assert seed["mcnemar"]["p_value"] < 0.01
        assert seed["mcnemar"]["only_second_right"] > seed["mcnemar"]["only_first_right"]
    assert bilstm["parameters"] > lstm["parameters"]
    # Each seed's variants trained, validated and tested on the same texts, as the run folders
    # themselves recorded them; the seeds' validation splits differ.
    for uni, bi in zip(lstm["runs"], bilstm["runs"]):
        assert uni["splits"] == bi["splits"] and set(uni["splits"]) == {
            "train", "validation", "test"}
    assert lstm["runs"][0]["splits"]["validation"] != lstm["runs"][1]["splits"]["validation"]
    assert lstm["runs"][0]["splits"]["test"] == lstm["runs"][1]["splits"]["test"]
    # Learning curves, text length, disagreements, and the files.
    assert len(bilstm["curve"]["val_accuracy"]) == len(bilstm["runs"][0]["history"]) >= 1
    assert [p["name"] for p in compared["by_length"]["parts"]] == ["short", "medium", "long"]
    assert sum(p["texts"] for p in compared["by_length"]["parts"]) == 200
    assert compared["disagreements"] and set(compared["disagreements"][0]["predictions"]) == {
        "lstm", "bilstm"}
    output = data / "first"
    assert json.loads((output / "compare.json").read_text())["comparisons"] == [comparison]
    assert "| test accuracy |" in (output / "compare.md").read_text()
    assert (output / "compare.png").is_file() == stats.available("matplotlib")
    if not stats.available("matplotlib"):
        assert any("pip install 'bilstm[compare]'" in n for n in compared["notes"])


def test_each_run_is_an_ordinary_run_folder_and_a_rerun_keeps_them(compared, data):
    from bilstm_cli import api

    runs = data / "first" / "runs"
    listed = api.runs(runs)
    assert sorted(r["name"] for r in listed) == ["bilstm-s42", "bilstm-s43", "lstm-s42",
                                                 "lstm-s43"]
    assert {r["state"] for r in listed} == {"finished"}
    before = {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    # Into a pipe: the tables as Markdown. Nothing is trained again (nor TensorFlow imported).
    again = run_cli_without_tensorflow(*compare_args(data, "first", "--seeds", "2"), cwd=data)
    assert again.stderr.count("finished before, kept") == 4
    assert "| test accuracy |" in again.stdout and "is the difference real?" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")} == before


def test_ctrl_c_then_the_same_command_resumes_without_retraining_finished_runs(data):
    output = data / "interrupted"
    command = [sys.executable, "-m", "bilstm_cli",
               *compare_args(data, "interrupted", "--seeds", "1", "--set", "training.epochs=8",
                             "--set", "training.early_stopping_patience=8")]
    env = {k: v for k, v in os.environ.items() if k != "BILSTM_NATIVE_LOGS"}
    process = subprocess.Popen(command, cwd=data, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    last = output / "runs" / "bilstm-s42" / "checkpoints" / "last"
    deadline = time.monotonic() + 240
    while not last.exists():  # the first run finished, the second is training
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint of the second run appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "run the same command again to continue" in stderr
    first, second = output / "runs" / "lstm-s42", output / "runs" / "bilstm-s42"
    assert json.loads((second / "run.json").read_text())["state"] == "interrupted"
    kept = (first / "metrics.json").stat().st_mtime_ns

    result = run_cli(*command[3:], cwd=data)
    assert result.returncode == 0, result.stderr
    assert "lstm, seed 42 (1 of 2): " in result.stderr and "finished before, kept" in result.stderr
    assert "bilstm, seed 42 (2 of 2): " in result.stderr and "(resuming)" in result.stderr
    assert (first / "metrics.json").stat().st_mtime_ns == kept
    assert "resumed" not in json.loads((first / "run.json").read_text())
    record = json.loads((second / "run.json").read_text())
    assert record["state"] == "finished" and len(record["resumed"]) == 1
    assert "| test accuracy |" in result.stdout


def test_from_compares_existing_runs_without_tensorflow(compared, data):
    runs = data / "first" / "runs"
    result = run_cli_without_tensorflow(
        "compare", "--from", str(runs / "lstm-s42"), str(runs / "bilstm-s42"),
        str(runs / "lstm-s43"), str(runs / "bilstm-s43"), "--output", str(data / "from"),
        "--json", cwd=data)
    again = json.loads(result.stdout)
    assert [v["name"] for v in again["variants"]] == ["lstm", "bilstm"]
    assert [v["settings"] for v in again["variants"]] == [["model.bidirectional=false"],
                                                          ["model.bidirectional=true"]]
    mine, before = again["comparisons"][0], compared["comparisons"][0]
    assert mine["difference"] == before["difference"]
    assert [s["mcnemar"] for s in mine["seeds"]] == [s["mcnemar"] for s in before["seeds"]]
    assert (data / "from" / "compare.json").is_file()


def test_from_refuses_runs_tested_on_other_data(compared, data):
    runs = data / "first" / "runs"
    other = data / "other-test" / "bilstm-s42"
    shutil.copytree(runs / "bilstm-s42", other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["data"]["test"] = str(data / "other_test.tsv")
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("compare", "--from", str(runs / "lstm-s42"), str(other),
                     "--output", str(data / "mismatch"), cwd=data)
    assert result.returncode == 2, result.stderr
    assert "were tested on different data" in result.stderr
    assert str(runs / "lstm-s42") in result.stderr and str(other) in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (data / "mismatch" / "compare.json").exists()

    same = run_cli("compare", "--from", str(runs / "lstm-s42"), str(runs / "lstm-s43"),
                   cwd=data)
    assert same.returncode == 2 and "differ in their seeds alone" in same.stderr
    mixed = run_cli("compare", "--from", str(runs / "lstm-s42"), "--set", "model.units=3",
                    cwd=data)
    assert mixed.returncode == 2 and "give one or the other" in mixed.stderr
    missing = run_cli("compare", "--from", str(data / "nope"), str(runs / "lstm-s42"), cwd=data)
    assert missing.returncode == 2 and "nope: no such run folder" in missing.stderr


@pytest.mark.parametrize(("variants", "message"), [
    (["nocolon"], "expected NAME:key=value,key=value"),
    (["a:model.units"], "expected section.key=value"),
    (["a:"], "no settings after a:"),
    (["a:model.units=4"], "give two or more variants"),
    (["a:model.units=4", "a:model.units=8"], "the name a is given twice"),
    (["a:data.max_length=10", "b:model.units=4"], "data.max_length cannot differ between"),
    (["a:model.units=4", "b:training.seed=3"], "training.seed cannot differ between"),
    (["a:model.units=4", "b:model.units=4"], "a and b come out as the same config"),
    (["a:model.unitz=4", "b:model.units=8"],
     "model.unitz: unknown key (did you mean model.units?) [--variant a]"),
    (["a:model.units=0", "b:model.units=8"], "model.units: "),
])
def test_a_bad_variant_is_a_user_error(data, variants, message):
    overrides = [f"data.train={data / 'train.tsv'}", f"data.test={data / 'test.tsv'}"]
    with pytest.raises(UserError, match=re.escape(message)):
        plan.plan(str(TINY[1]), overrides, variants, 1, data / "never")
    assert not (data / "never").exists()


def test_no_test_data_is_refused_before_training(data):
    with pytest.raises(UserError, match="add --set data.test=FILE"):
        plan.plan(str(TINY[1]), [f"data.train={data / 'train.tsv'}"], [], 1, data / "never")


def test_a_bad_variant_on_the_command_line_exits_2(data, tmp_path):
    result = run_cli(*compare_args(data, "never", "--variant", "a:model.units=4,model.layerz=2",
                                   "--variant", "b:model.units=8"), cwd=tmp_path)
    assert result.returncode == 2
    assert "model.layerz: unknown key (did you mean model.layers?) [--variant a]" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    loose = run_cli("compare", str(data / "x"), cwd=tmp_path)
    assert loose.returncode == 2 and "run folders go after --from" in loose.stderr


def test_variant_items_split_at_commas_that_start_a_key():
    variant = plan.parse_variant("wide:model.units=128, model.layers=2,training.class_weight="
                                 "{a: 1, b: 2}")
    assert variant == plan.Variant("wide", ("model.units=128", "model.layers=2",
                                            "training.class_weight={a: 1, b: 2}"))


def test_statistics():
    first = np.array([True] * 10 + [False] * 10 + [True] * 80)
    second = np.array([False] * 10 + [True] * 10 + [True] * 80)
    if stats.available("scipy"):
        assert stats.mcnemar(first, second)["p_value"] == pytest.approx(1.0)
        assert stats.mcnemar(np.ones(20, bool), np.zeros(20, bool))["p_value"] == \
            pytest.approx(2 * 0.5 ** 20)
    better = np.r_[np.ones(30), np.zeros(70)]  # second right where first was wrong, 30 times
    low, high = stats.bootstrap_interval([better], ["t"])
    assert 0.15 < low < 0.3 < high < 0.45
    same = stats.bootstrap_interval([better, better], ["t", "t"])
    assert same == pytest.approx([low, high], abs=0.03)  # one test set counted once
    assert stats.aso([0.9, 0.91], [0.8, 0.81]) is None  # fewer than 3 seeds


def test_without_the_optional_libraries_it_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(stats, "available", lambda module: False)
    assert stats.mcnemar(np.ones(3, bool), np.zeros(3, bool)) is None
    assert stats.aso([0.9, 0.91, 0.92], [0.8, 0.81, 0.82]) is None
    why = plot.write({}, tmp_path / "compare.png")
    assert why == "compare.png: left out, matplotlib is not installed (pip install " \
        "'bilstm[compare]')"
    assert not (tmp_path / "compare.png").exists()


def test_the_mean_curve_ends_where_a_seed_stopped_early():
    """A seed that stopped after 2 epochs of 3: the mean curve is over every seed, so it has
    2 points (a third of the other seed alone would jump)."""
    from types import SimpleNamespace

    from bilstm_cli.compare.report import Group, _variant

    def run(seed, accuracies):
        history = [{"loss": 1.0, "accuracy": a, "val_loss": 1.0, "val_accuracy": a}
                   for a in accuracies]
        return SimpleNamespace(facts={
            "seed": seed, "parameters": 10, "history": history,
            **dict.fromkeys(("seconds_per_epoch", "examples_per_second", "latency_ms",
                             "predictions_per_second"), 1.0),
            "validation": {"accuracy": 0.5, "macro_f1": 0.5},
            "test": {"accuracy": 0.5, "macro_f1": 0.5}})

    variant = _variant(Group("bilstm", [], [run(42, [0.6, 0.8]), run(43, [0.4, 0.6, 0.2])]))
    assert variant["curve"]["val_accuracy"] == pytest.approx([0.5, 0.7])
