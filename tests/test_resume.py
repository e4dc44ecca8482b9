"""Training you can trust: checkpoints, resume after Ctrl-C / SIGTERM / kill -9, guards, exact
reproducibility, run.json and `bilstm runs`. Real processes and real signals throughout."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import TINY_CONFIG, run_cli, toy_examples, write_tsv

# Long enough (68 batches per epoch) that a signal sent after the first checkpoint lands while
# batches are still running; small enough that an epoch takes about a second.
EPOCHS = 3
TIMING = {"seconds", "train_seconds", "validation_seconds", "examples_per_second"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume")
    write_tsv(folder / "train.tsv", toy_examples(1200, seed=5))
    write_tsv(folder / "test.tsv", toy_examples(60, seed=6))
    return folder


def args(data: Path, *extra: str) -> list[str]:
    return [
        "train", "--bidirectional", "--config", str(TINY_CONFIG),
        "--set", f"data.train={data / 'train.tsv'}", "--set", f"data.test={data / 'test.tsv'}",
        "--set", "training.learning_rate=0.002", "--set", "training.early_stopping_patience=0",
        "--set", "training.lr_schedule=constant",
        "--epochs", str(EPOCHS), *extra,
    ]


@contextlib.contextmanager
def held_lock(path: Path, pid: int) -> Iterator[None]:
    """`path` locked as a live training holds its train.lock, naming `pid`."""
    import fcntl

    with open(path, "w") as handle:
        handle.write(f"{pid}\n")
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def start(data: Path, output: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "BILSTM_NATIVE_LOGS"}
    return subprocess.Popen(
        [sys.executable, "-m", "bilstm_cli", *args(data, "--output", str(output), *extra)],
        cwd=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def wait_for_checkpoint(output: Path, process: subprocess.Popen, mid_epoch: bool = False,
                        timeout: float = 240, folder: str = "*") -> Path:
    """The run folder (matching `folder` under `output`), once its `checkpoints/last` exists (at
    a step > 0 with `mid_epoch`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for last in output.glob(f"{folder}/checkpoints/last"):
            if not mid_epoch or not os.readlink(last).split("-s")[1].startswith("000000"):
                return last.parent.parent
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    """The arrays in a run's model.keras, read without TensorFlow."""
    with zipfile.ZipFile(run_dir / "model.keras") as archive:
        h5 = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        found: dict[str, np.ndarray] = {}
        h5.visititems(lambda name, obj: found.__setitem__(name, obj[()])
                      if isinstance(obj, h5py.Dataset) else None)
    return found


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and len(wa) > 5
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], rtol=0, atol=1e-6, err_msg=name)


def results(run_dir: Path) -> tuple[dict, list[dict]]:
    """metrics.json and history.csv without the timings."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for summary in [metrics, *metrics.get("members", [])]:
        for key in ("seconds_per_epoch", "examples_per_second", "training_seconds"):
            summary.pop(key)
    if "members" in metrics:  # an ensemble: its members' histories
        return metrics, [results(member)[1] for member in sorted((run_dir / "members").iterdir())]
    lines = (run_dir / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    history = [{k: v for k, v in zip(header, line.split(",")) if k not in TIMING}
               for line in lines[1:]]
    return metrics, history


def run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


@pytest.fixture(scope="module")
def reference(data) -> Path:
    """The same training, never interrupted."""
    result = run_cli(*args(data, "--output", str(data / "reference")), cwd=data)
    assert result.returncode == 0, result.stderr
    return (data / "reference" / "latest").resolve()


def test_same_seed_same_results_and_run_json(reference, data):
    result = run_cli(*args(data, "--output", str(data / "again")), cwd=data)
    assert result.returncode == 0, result.stderr
    again = (data / "again" / "latest").resolve()
    assert results(again) == results(reference)  # every metric, to the last digit
    assert_same_weights(again, reference)

    record = run_json(reference)
    assert record["state"] == "finished" and record["seed"] == 42
    assert record["command"][:2] == ["bilstm", "train"]
    assert record["epochs_done"] == EPOCHS and record["best_epoch"] >= 1
    assert record["stopped_early"] is False and record["ended"] >= record["started"]
    assert set(record["versions"]) == {"bilstm", "tensorflow", "keras", "python"}
    assert {"cpu", "cores", "gpus"} <= set(record["machine"])
    checkpoints = reference / "checkpoints"
    assert (checkpoints / "last" / "state.json").is_file()
    assert (checkpoints / "best" / "model.keras").is_file()
    assert json.loads((checkpoints / "last" / "state.json").read_text())["epoch"] == EPOCHS


def test_sigint_mid_epoch_then_resume_equals_uninterrupted(reference, data, tmp_path):
    process = start(data, tmp_path / "runs")
    run_dir = wait_for_checkpoint(tmp_path / "runs", process)
    assert run_json(run_dir)["state"] == "running"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"resume with: bilstm train --resume {run_dir}" in stderr
    assert "Traceback" not in stderr
    record = run_json(run_dir)
    assert record["state"] == "interrupted" and "SIGINT" in record["interrupted"]
    assert not (run_dir / "train.lock").exists()
    assert not (tmp_path / "runs" / "latest").exists()  # only finished runs become latest

    result = run_cli("train", "--resume", str(run_dir), cwd=data)
    assert result.returncode == 0, result.stderr
    assert "resuming from last-" in result.stderr
    assert_same_weights(run_dir, reference)
    assert results(run_dir) == results(reference)
    record = run_json(run_dir)
    assert record["state"] == "finished" and len(record["resumed"]) == 1
    assert (tmp_path / "runs" / "latest").resolve() == run_dir


def test_sigterm_exits_143_and_resume_finishes(reference, data, tmp_path):
    process = start(data, tmp_path / "runs")
    run_dir = wait_for_checkpoint(tmp_path / "runs", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "SIGTERM" in stderr and f"bilstm train --resume {run_dir}" in stderr
    assert run_json(run_dir)["state"] == "interrupted"
    result = run_cli("train", "--resume", str(run_dir), cwd=data)
    assert result.returncode == 0, result.stderr
    assert_same_weights(run_dir, reference)


SECOND_SIGNAL = """
import os, signal, sys, time
from bilstm_cli.interrupt import StopSignals

with StopSignals(lambda message: print(message, file=sys.stderr, flush=True)) as stop:
    stop.graceful = True
    os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: only a flag
    time.sleep(0.1)
    assert stop.requested and signal.getsignal(signal.SIGINT) == signal.SIG_DFL
    print("busy", flush=True)
    time.sleep(60)  # a long native call, as a TensorFlow op would be
"""


def test_a_second_ctrl_c_aborts_at_once():
    process = subprocess.Popen([sys.executable, "-c", SECOND_SIGNAL], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "busy\n"
    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGINT
    assert time.monotonic() - began < 5
    assert "stopping after this batch" in stderr and "Ctrl-C again" in stderr


def test_kill_9_after_a_step_checkpoint_then_resume(reference, data, tmp_path):
    """checkpoint_every N: a kill -9 mid-epoch resumes from the last N-step checkpoint, skipping
    the batches it already did, and still ends exactly like the uninterrupted run."""
    process = start(data, tmp_path / "runs", "--set", "training.checkpoint_every=7")
    run_dir = wait_for_checkpoint(tmp_path / "runs", process, mid_epoch=True)
    process.kill()
    process.communicate()
    assert (run_dir / "train.lock").exists()
    assert run_json(run_dir)["state"] == "running"
    listed = run_cli("runs", str(tmp_path / "runs"), "--json", cwd=data)
    assert json.loads(listed.stdout)[0]["state"] == "interrupted"  # its process is gone

    result = run_cli("train", "--resume", str(run_dir), cwd=data)
    assert result.returncode == 0, result.stderr
    assert "taking over the stale lock" in result.stderr
    assert_same_weights(run_dir, reference)
    assert results(run_dir) == results(reference)


def assert_kill_and_resume_ends_as(reference: Path, data: Path, output: Path,
                                   extra: tuple[str, ...]) -> None:
    """kill -9 after a mid-epoch checkpoint, then --resume: the same weights and results as
    `reference`, the same training left alone."""
    process = start(data, output, "--set", "training.checkpoint_every=7", *extra)
    run_dir = wait_for_checkpoint(output, process, mid_epoch=True)
    process.kill()
    process.communicate()
    result = run_cli("train", "--resume", str(run_dir), cwd=data)
    assert result.returncode == 0, result.stderr
    assert_same_weights(run_dir, reference)
    assert results(run_dir) == results(reference)


def test_a_cosine_schedule_resumes_where_it_stopped(data, tmp_path):
    """The schedule reads the optimizer's step counter, which the checkpoint keeps: a run killed
    mid-epoch ends exactly like the same run left alone (a restarted curve would not)."""
    cosine = ("--set", "training.lr_schedule=cosine")
    straight = run_cli(*args(data, "--output", str(tmp_path / "straight"), *cosine), cwd=data)
    assert straight.returncode == 0, straight.stderr
    assert_kill_and_resume_ends_as(reference=(tmp_path / "straight" / "latest").resolve(),
                                   data=data, output=tmp_path / "runs", extra=cosine)


def test_an_ensemble_killed_in_its_second_member_resumes_there(data, tmp_path):
    """model.ensemble: each member trains in members/<i> with checkpoints of its own. A kill -9
    in the second member, then --resume: the first is kept as it was, the second continues from
    its checkpoint, and the ensemble ends exactly like the same training left alone."""
    ensemble = ("--set", "model.ensemble=2")
    straight = run_cli(*args(data, "--output", str(tmp_path / "straight"), *ensemble), cwd=data)
    assert straight.returncode == 0, straight.stderr
    reference = (tmp_path / "straight" / "latest").resolve()
    assert "member 2 (seed 1042): best epoch" in straight.stdout
    assert json.loads((reference / "members" / "2" / "run.json").read_text())["seed"] == 1042

    process = start(data, tmp_path / "runs", "--set", "training.checkpoint_every=7", *ensemble)
    member = wait_for_checkpoint(tmp_path / "runs", process, mid_epoch=True,
                                 folder="*/members/2")
    process.kill()
    process.communicate()
    run_dir = member.parent.parent
    first = (run_dir / "members" / "1" / "run.json").read_text()
    assert json.loads(first)["state"] == "finished"
    listed = json.loads(run_cli("runs", str(tmp_path / "runs"), "--json", cwd=data).stdout)
    assert listed[0]["state"] == "interrupted" and listed[0]["model"] == "bi x2"
    assert listed[0]["member_best_epochs"][0] >= 1  # the second may have no best epoch yet

    alone = run_cli("train", "--resume", str(member), cwd=data)  # a member on its own: no
    assert alone.returncode == 2 and "is a member of the ensemble" in alone.stderr

    result = run_cli("train", "--resume", str(run_dir), cwd=data)
    assert result.returncode == 0, result.stderr
    assert "member 1 finished before: kept" in result.stderr
    assert "resuming from" in result.stderr
    assert (run_dir / "members" / "1" / "run.json").read_text() == first
    assert_same_weights(run_dir, reference)
    assert results(run_dir) == results(reference)
    row = run_cli("runs", str(tmp_path / "runs"), cwd=data).stdout.splitlines()[1].split("\t")
    assert all(epoch.isdigit() for epoch in row[6].split(","))  # "best epoch": one per member
    assert len(row[6].split(",")) == 2
    again = run_cli("train", "--resume", str(run_dir), cwd=data)
    assert again.returncode == 2 and "already finished" in again.stderr


KILL_DURING_WRITE = """
import os, signal, sys
import bilstm_cli.checkpoint as checkpoint

real, calls = checkpoint._save_npz, []

def save(path, arrays):
    calls.append(path)
    if len(calls) == 3:  # the third checkpoint: half a file, then the power goes
        path.write_bytes(b"PK\\x03\\x04 half a checkpoint")
        os.kill(os.getpid(), signal.{sig})
    real(path, arrays)

checkpoint._save_npz = save
{patch}
sys.argv = ["bilstm", *sys.argv[1:]]
from bilstm_cli.cli import main
main()
"""


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one(reference, data, tmp_path):
    script = KILL_DURING_WRITE.format(sig="SIGKILL", patch="")
    env = {k: v for k, v in os.environ.items() if k != "BILSTM_NATIVE_LOGS"}
    killed = subprocess.run(
        [sys.executable, "-c", script, *args(data, "--output", str(tmp_path / "runs"))],
        cwd=data, capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (2, 0)  # the second checkpoint, intact

    result = run_cli("train", "--resume", str(run_dir), cwd=data)
    assert result.returncode == 0, result.stderr
    assert_same_weights(run_dir, reference)
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]


def test_disk_full_names_the_path_and_keeps_earlier_checkpoints(data, tmp_path):
    patch = ("import errno\n"
             "def full(path, arrays):\n"
             "    calls.append(path)\n"
             "    if len(calls) == 2:\n"
             "        raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
             "    real(path, arrays)\n"
             "checkpoint._save_npz = full\n")
    script = KILL_DURING_WRITE.format(sig="SIGKILL", patch=patch)
    env = {k: v for k, v in os.environ.items() if k != "BILSTM_NATIVE_LOGS"}
    result = subprocess.run(
        [sys.executable, "-c", script, *args(data, "--output", str(tmp_path / "runs"))],
        cwd=data, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    assert f"cannot write the checkpoint in {run_dir / 'checkpoints'}" in result.stderr
    assert "No space left on device" in result.stderr
    assert "earlier checkpoints are intact" in result.stderr and "Traceback" not in result.stderr
    state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert state["epoch"] == 1
    assert run_json(run_dir)["state"] == "failed"


def test_unwritable_output_is_a_clear_error(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli(*args(data, "--output", str(blocker / "runs")), cwd=data)
    assert result.returncode == 2  # said before the data loads
    assert f"output.dir {blocker / 'runs'}: {blocker} is a file, not a folder" in result.stderr
    from bilstm_cli.errors import UserError
    from bilstm_cli.runs import new_run_dir

    with pytest.raises(UserError, match=f"cannot create the run folder {blocker / 'runs'}"):
        new_run_dir(str(blocker / "runs"), "x")  # the library's own guard


def diverge(data: Path, output: Path, learning_rate: str) -> subprocess.CompletedProcess:
    return run_cli(*args(data, "--output", str(output),
                         "--set", f"training.learning_rate={learning_rate}",
                         "--set", "training.clipnorm=null",
                         "--set", "training.checkpoint_every=1",
                         # the rates below are found for the plain step, whatever ships
                         "--set", "training.consistency=0",
                         "--set", "model.word_dropout_by=uniform"), cwd=data)


def test_nan_loss_stops_with_advice_and_keeps_the_last_good_checkpoint(data, tmp_path):
    result = diverge(data, tmp_path / "runs", "1e36")  # the loss overflows after some batches
    assert result.returncode == 2, result.stderr
    assert "training loss became inf" in result.stderr or "loss became nan" in result.stderr
    assert "lower learning rate" in result.stderr and "training.clipnorm" in result.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    assert run_json(run_dir)["state"] == "failed"
    last = run_dir / "checkpoints" / "last"
    step = json.loads((last / "state.json").read_text())["step"]
    assert step >= 1 and f"batch {step})" in result.stderr
    with np.load(last / "arrays.npz") as arrays:
        assert all(np.isfinite(arrays[k]).all() for k in arrays.files if k.startswith("model/"))


def test_weights_broken_by_a_finite_loss_batch_are_never_checkpointed(data, tmp_path):
    """Keras reports a batch's loss from before its update: here the first update overflows the
    weights while its loss is finite. No checkpoint may keep them."""
    result = diverge(data, tmp_path / "runs", "1e38")
    assert result.returncode == 2, result.stderr
    assert "the weights became inf or nan in epoch 1 at batch 1" in result.stderr
    assert "no checkpoint had been written yet" in result.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    assert run_json(run_dir)["state"] == "failed"
    assert not (run_dir / "checkpoints" / "last").exists()


def test_resume_refuses_a_changed_config_and_force_starts_over(reference, data, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir, symlinks=True)
    result = run_cli("train", "--resume", str(run_dir), "--set", "model.units=16",
                     "--set", "training.learning_rate=0.1", cwd=data)
    assert result.returncode == 2
    assert "the config differs from the run's" in result.stderr
    assert "model.units: 8 -> 16" in result.stderr
    saved_rate = yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["learning_rate"]
    assert f"training.learning_rate: {saved_rate} -> 0.1" in result.stderr
    assert "--force" in result.stderr

    result = run_cli("train", "--resume", str(run_dir), cwd=data)
    assert result.returncode == 2 and "already finished" in result.stderr

    with held_lock(run_dir / "train.lock", os.getppid()):  # as a live training holds it
        result = run_cli("train", "--resume", str(run_dir), "--epochs", str(EPOCHS + 1),
                         cwd=data)
    assert result.returncode == 2
    assert f"another training (pid {os.getppid()}) is writing into {run_dir}" in result.stderr
    (run_dir / "train.lock").unlink()

    result = run_cli("train", "--resume", str(run_dir), "--force", "--epochs", "1", cwd=data)
    assert result.returncode == 0, result.stderr
    assert len((run_dir / "history.csv").read_text().splitlines()) == 2
    assert json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())["epoch"] == 1


def test_more_epochs_continue_a_finished_run_exactly(data, tmp_path):
    """Resume-safe keys (here epochs) may change: 2 epochs then 1 more == 3 straight."""
    first = run_cli(*args(data, "--output", str(tmp_path / "runs"), "--epochs", "2",
                          "--deterministic"), cwd=data,
                    env={"BILSTM_DATA_CACHE": "0"})  # the vectors made, not read back
    assert first.returncode == 0, first.stderr
    run_dir = (tmp_path / "runs" / "latest").resolve()
    assert run_json(run_dir)["deterministic"] is True
    vectors = "initial word vectors from the training texts' co-occurrences"
    assert vectors in first.stderr  # configs/imdb.yaml's embedding_init, under op determinism
    result = run_cli("train", "--resume", str(run_dir), "--epochs", str(EPOCHS), cwd=data)
    assert result.returncode == 0, result.stderr
    assert vectors not in result.stderr  # the checkpoint's table, not new vectors
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + EPOCHS
    assert run_json(run_dir)["epochs_done"] == EPOCHS


def test_a_run_from_before_word_dropout_by_resumes_with_uniform_dropout(data, tmp_path):
    """A config.yaml written before model.word_dropout_by existed (its word dropout was
    uniform) resumes as it started, not with today's default (frequency)."""
    first = run_cli(*args(data, "--output", str(tmp_path / "runs"), "--epochs", "1"), cwd=data)
    assert first.returncode == 0, first.stderr
    run_dir = (tmp_path / "runs" / "latest").resolve()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["word_dropout"] > 0 and saved["model"]["word_dropout_by"] == "frequency"
    del saved["model"]["word_dropout_by"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))

    changed = run_cli("train", "--resume", str(run_dir), "--epochs", "2",
                      "--set", "model.word_dropout_by=frequency", cwd=data)
    assert changed.returncode == 2
    assert "model.word_dropout_by: uniform -> frequency" in changed.stderr
    result = run_cli("train", "--resume", str(run_dir), "--epochs", "2", cwd=data)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["word_dropout_by"] \
        == "uniform"
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 2

    from bilstm_cli.config import Config, as_run_did
    from bilstm_cli.runs import read_config

    assert read_config(run_dir).model.word_dropout_by == "uniform"
    without = Config().model_dump(mode="json")
    without["model"]["word_dropout"] = 0.0  # no word dropout: nothing to read back
    del without["model"]["word_dropout_by"]
    assert as_run_did(without) == without


def test_a_run_from_before_a_key_whose_default_changed_reads_as_it_trained():
    """Keys added with one default and given another later: a config.yaml from before the key
    existed reads as what its run did then, not as today's default."""
    from bilstm_cli.config import Config, as_run_did, load_config

    old = Config().model_dump(mode="json")
    for section, key in (("model", "word_dropout"), ("model", "word_dropout_by"),
                         ("model", "ensemble"), ("model", "embedding_init"),
                         ("training", "lr_schedule")):
        del old[section][key]
    read = Config.model_validate(as_run_did(old))
    assert (read.model.word_dropout, read.model.ensemble, read.model.embedding_init,
            read.training.lr_schedule) == (0.0, 1, "random", "constant")
    assert read.model.word_dropout_by == "frequency"  # no word dropout: today's default
    assert load_config(old).model.ensemble == 3  # a config of the user's: today's defaults


def test_checkpoint_every_and_resume_safe_keys():
    from bilstm_cli.checkpoint import config_differences
    from bilstm_cli.config import load_config
    from bilstm_cli.errors import UserError

    assert load_config(None, ["training.checkpoint_every=50"]).training.checkpoint_every == 50
    with pytest.raises(UserError, match=r"(?s)1 problem.*expected epoch or a number of steps"):
        load_config(None, ["training.checkpoint_every=0"])
    base = ["training.lr_schedule=constant", "training.epochs=5", "data.max_length=200"]
    saved = load_config(None, base).model_dump(mode="json")
    changed = load_config(None, [*base, "training.epochs=9", "training.threads=1",
                                 "output.dir=elsewhere", "training.checkpoint_every=10",
                                 "data.max_length=100", "training.seed=1"])
    assert config_differences(saved, changed.model_dump(mode="json")) == [
        "data.max_length: 200 -> 100", "training.seed: 42 -> 1"]
    cosine = load_config(None, ["training.lr_schedule=cosine", "training.epochs=5"]
                         ).model_dump(mode="json")
    longer = load_config(None, ["training.lr_schedule=cosine", "training.epochs=9"])
    assert config_differences(cosine, longer.model_dump(mode="json")) == [
        "training.epochs: 5 -> 9 (the cosine learning-rate schedule spans the epochs)"]
    older = load_config(None, base).model_dump(mode="json")
    del older["training"]["deterministic"]  # a run from before the key existed
    assert config_differences(older, saved, saved) == []


def test_runs_lists_folders_without_tensorflow(reference, data):
    from conftest import run_cli_without_tensorflow

    listed = json.loads(run_cli_without_tensorflow(
        "runs", str(reference.parent), "--json", cwd=reference.parent).stdout)
    metrics = json.loads((reference / "metrics.json").read_text())
    assert len(listed) == 1
    row = listed[0]
    assert row["name"] == reference.name and row["latest"] is True
    assert (row["dataset"], row["model"], row["state"]) == ("train.tsv", "bi", "finished")
    assert row["epochs_done"] == EPOCHS and row["best_epoch"] == metrics["best_epoch"]
    assert row["test_accuracy"] == metrics["test"]["accuracy"]

    table = run_cli("runs", str(reference.parent), cwd=data)
    assert table.returncode == 0
    header, line = table.stdout.splitlines()
    assert header.split("\t")[0] == "run" and line.startswith(reference.name + " *\t")
    assert line.endswith("\tfinished")


def test_atomic_write_on_a_full_disk_names_the_path_and_keeps_the_old_file(tmp_path):
    import errno

    from bilstm_cli.errors import UserError
    from bilstm_cli.runs import write_atomic

    target = tmp_path / "history.csv"
    target.write_text("old\n")

    def full(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match=f"cannot write {target}: No space left on device"):
        write_atomic(target, full)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


def test_latest_that_is_a_real_folder_is_a_user_error_and_left_alone(tmp_path):
    from bilstm_cli.errors import UserError
    from bilstm_cli.runs import mark_latest

    run_dir = tmp_path / "20261201-000000-imdb-bilstm"
    run_dir.mkdir()
    (tmp_path / "latest").mkdir()  # made by hand, say
    (tmp_path / "latest" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=f"cannot point {tmp_path / 'latest'} at {run_dir.name}"):
        mark_latest(run_dir)
    assert (tmp_path / "latest" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_dir.name, "latest"]
    (tmp_path / "latest" / "notes.txt").unlink()
    (tmp_path / "latest").rmdir()
    mark_latest(run_dir)
    assert (tmp_path / "latest").resolve() == run_dir.resolve()


def test_run_lock_refuses_a_live_owner_and_takes_over_a_dead_ones(tmp_path):
    from bilstm_cli.errors import UserError
    from bilstm_cli.runstate import LOCK_FILE, RunLock, lock_owner

    lock = tmp_path / LOCK_FILE
    with held_lock(lock, os.getppid()):  # as another training holds it
        with pytest.raises(UserError, match=f"another training \\(pid {os.getppid()}\\)"):
            RunLock(tmp_path, print).__enter__()
        assert lock.read_text() == f"{os.getppid()}\n"
        assert lock_owner(tmp_path) == os.getppid()

    # A live pid in a file nobody holds: its process died and the pid went to another one.
    lock.write_text(f"{os.getppid()}\n")
    assert lock_owner(tmp_path) is None
    warnings: list[str] = []
    with RunLock(tmp_path, warnings.append):
        assert lock.read_text() == f"{os.getpid()}\n"
        assert lock_owner(tmp_path) == os.getpid()
    assert "taking over the stale lock" in warnings[0] and str(os.getppid()) in warnings[0]
    assert not lock.exists()
    with RunLock(tmp_path, warnings.append):  # a fresh lock: nothing to take over
        pass
    assert len(warnings) == 1

    # A probe (`bilstm runs`) holds the lock for an instant: a training starting then waits.
    import fcntl
    import threading

    lock.write_text("")
    probe = open(lock)  # noqa: SIM115 - the timer closes it
    fcntl.flock(probe, fcntl.LOCK_SH)
    threading.Timer(0.05, probe.close).start()
    with RunLock(tmp_path, warnings.append):
        assert lock_owner(tmp_path) == os.getpid()
    assert probe.closed and len(warnings) == 1


def test_resume_reads_the_same_files_from_another_folder(tmp_path):
    """config.yaml names the data files as absolute paths: `--resume` from anywhere reads what
    the run was trained on (not a file of the same relative name where it is run from)."""
    from conftest import TINY

    project = tmp_path / "project"
    (project / "d").mkdir(parents=True)
    write_tsv(project / "d" / "train.tsv", toy_examples(60))
    result = run_cli("train", *TINY, "--epochs", "1", "--set", "data.train=d/train.tsv",
                     "--set", "training.lr_schedule=constant", "--output", "runs", cwd=project)
    assert result.returncode == 0, result.stderr
    run_dir = (project / "runs" / "latest").resolve()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["train"]
    assert saved == str(project / "d" / "train.tsv")

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "d").mkdir(parents=True)
    write_tsv(elsewhere / "d" / "train.tsv", [("other data", "x"), ("other", "y")] * 30)
    # The same file, spelled relative to where the run was made: not a change.
    result = run_cli("train", "--resume", str(run_dir), "--epochs", "2",
                     "--set", "data.train=d/train.tsv", cwd=project)
    assert result.returncode == 0, result.stderr
    result = run_cli("train", "--resume", str(run_dir), "--epochs", "3", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((run_dir / "labels.json").read_text())["labels"] == ["neg", "pos"]
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 3


def test_resume_compares_data_paths_by_the_file_they_name():
    from bilstm_cli.checkpoint import config_differences
    from bilstm_cli.config import Config

    saved = Config().model_dump(mode="json")
    relative = json.loads(json.dumps(saved))
    saved["data"]["train"] = str(Path.cwd() / "d" / "train.tsv")
    relative["data"]["train"] = "d/train.tsv"
    assert config_differences(saved, relative) == []
    relative["data"]["train"] = "e/train.tsv"
    assert config_differences(saved, relative) == [
        f"data.train: {saved['data']['train']} -> {Path.cwd() / 'e' / 'train.tsv'}"]
