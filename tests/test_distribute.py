"""training.distribute: the same training on one device, on two replicas (the CPU split in two
logical devices, MirroredStrategy) and on two worker processes on 127.0.0.1
(MultiWorkerMirroredStrategy, each with its own TF_CONFIG); a worker killed after the first
epoch, then the job restarted. Real processes throughout, each with a timeout, and every process
a test starts is killed (by its pid) when the test ends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, run_cli, toy_examples, write_tsv
from test_resume import assert_same_weights, results

from bilstm_cli import distribute
from bilstm_cli.errors import UserError

EPOCHS = 2
# What the strategies are compared on: the tiny model without the draws that a strategy makes
# differently (dropout, word dropout: each replica draws its own share's), with clipping that
# bites (so the summed clipping is checked), on Keras' own layers (the fused kernel does not run
# under a strategy), and an even split of every batch: 216 training texts = 13 batches of 16 +
# 8, 24 validation texts = 16 + 8.
SAME_MATH = ["model.dropout=0", "model.word_dropout=0", "training.kernel=keras",
             "training.clipnorm=0.01", "training.lr_schedule=constant",
             "training.consistency=0", f"training.epochs={EPOCHS}"]
TIMEOUT = 300


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("distribute")
    write_tsv(folder / "train.tsv", toy_examples(240, seed=7))
    write_tsv(folder / "test.tsv", toy_examples(40, seed=8))
    return folder


def history(run_dir: Path) -> list[dict[str, float]]:
    lines = (run_dir / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [{k: float(v) for k, v in zip(header, line.split(",")) if k in (
        "loss", "accuracy", "val_loss", "val_accuracy")} for line in lines[1:]]


def assert_agree(a: list[dict[str, float]], b: list[dict[str, float]], tolerance: float) -> None:
    assert len(a) == len(b) == EPOCHS
    for row_a, row_b in zip(a, b):
        for key in row_a:
            assert abs(row_a[key] - row_b[key]) <= tolerance, (key, a, b)


# ---- TF_CONFIG and the config key, without TensorFlow -----------------------------------------


def tf_config(workers: list[str], index: int, kind: str = "worker", **jobs: list[str]) -> str:
    return json.dumps({"cluster": {"worker": workers, **jobs},
                       "task": {"type": kind, "index": index}})


def test_the_cluster_comes_from_tf_config():
    two = ["127.0.0.1:1", "127.0.0.1:2"]
    assert distribute.cluster("mirrored", {}) is None
    place = distribute.cluster("multi_worker", {"TF_CONFIG": tf_config(two, 1)})
    assert (place.workers, place.rank, place.task, place.chief) == (2, 1, "worker 1", False)
    with_chief = tf_config(two, 0, "chief", chief=["127.0.0.1:3"])
    place = distribute.cluster("multi_worker", {"TF_CONFIG": with_chief})
    assert (place.workers, place.rank, place.chief) == (3, 0, True)
    place = distribute.cluster("multi_worker", {"TF_CONFIG": tf_config(two, 0, chief=["a:3"])})
    assert (place.rank, place.chief) == (1, False)  # worker 0 is not the chief when one is named


@pytest.mark.parametrize("value, says", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', 'must be a JSON object with "cluster"'),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "job 'ps'"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "host:port"),
    (tf_config(["a:1", "b:2"], 2), "is not in the cluster"),
])
def test_a_bad_tf_config_is_one_clear_error(value, says):
    with pytest.raises(UserError, match=says.replace("(", r"\(")):
        distribute.cluster("multi_worker", {} if value is None else {"TF_CONFIG": value})


def test_the_cli_refuses_a_missing_or_malformed_tf_config_and_a_worker_resume(data, tmp_path):
    base = ["train", "--config", str(TINY_CONFIG), "--set", f"data.train={data / 'train.tsv'}",
            "--set", "training.distribute=multi_worker", "--output", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    for environment, says in (({}, "needs the TF_CONFIG environment variable"),
                              ({"TF_CONFIG": "{oops"}, "TF_CONFIG is not valid JSON")):
        result = subprocess.run([sys.executable, "-m", "bilstm_cli", *base], cwd=data, text=True,
                                capture_output=True, env={**env, **environment}, timeout=120)
        assert result.returncode == 2 and says in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    worker = {"TF_CONFIG": tf_config(["127.0.0.1:1", "127.0.0.1:2"], 1)}
    result = run_cli(*base[:-2], "--resume", str(tmp_path), cwd=data, env=worker)
    assert result.returncode == 2 and "--resume goes to the chief only" in result.stderr
    bad = run_cli(*base[:5], "--set", "training.distribute=everywhere", cwd=data)
    assert bad.returncode == 2 and "training.distribute" in bad.stderr


def test_workers_compare_the_job_but_not_where_files_are():
    """What `agree` compares: the config less data paths, output and threads; the tokenizer;
    the split sizes."""
    from bilstm_cli.config import load_config

    def job(*overrides: str, tokenizer: str = "{}") -> dict:
        config = load_config(TINY_CONFIG, ["data.train=/a/train.tsv", *overrides])
        return distribute.job(config, tokenizer, {"train": 216, "validation": 24})

    assert job() == job("data.train=/elsewhere/train.tsv", "output.dir=/x", "training.threads=1")
    assert job()["config"] != job("training.epochs=3")["config"]
    assert job()["tokenizer"] != job(tokenizer='{"other": 1}')["tokenizer"]


# ---- mirrored: two replicas on a CPU split in two ---------------------------------------------

MIRRORED = """
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from bilstm_cli import api, distribute

data, output, same_math = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
base = [f"data.train={data}/train.tsv", f"data.test={data}/test.tsv", f"output.dir={output}"]
notes = []
out = {"auto": distribute.start("auto", notes.append).record()}  # no GPU: one device
rdrop = [*same_math, "training.consistency=1"]
for name, mode, extra in [("none", "none", same_math), ("mirrored", "mirrored", same_math),
                          ("rdrop_none", "none", rdrop), ("rdrop_mirrored", "mirrored", rdrop),
                          ("uneven", "mirrored", ["training.batch_size=43", "training.epochs=1"])]:
    config = api.config(sys.argv[4], [*base, *extra, f"training.distribute={mode}",
                                      f"output.name={name}"])
    logs = []
    result = api.prepare(config).run(log=logs.append, warn=logs.append)
    out[name] = {"run_dir": str(result.run_dir), "logs": logs}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mirrored(data, tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("mirrored")
    env = {k: v for k, v in os.environ.items() if k not in ("BILSTM_NATIVE_LOGS", "TF_CONFIG")}
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(data), str(output), json.dumps(SAME_MATH),
         str(TINY_CONFIG)], cwd=data, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_mirrored_losses_agree_with_one_device(mirrored):
    """The same seed and batches on one device and on two replicas: per-epoch losses and
    accuracies agree to 1e-5 (history.csv's six digits show them equal), with and without
    R-Drop, and with clipnorm clipping the summed gradient as one device does."""
    assert mirrored["auto"] == {"strategy": "none", "replicas": 1, "workers": 1}
    one, two = Path(mirrored["none"]["run_dir"]), Path(mirrored["mirrored"]["run_dir"])
    assert_agree(history(one), history(two), 1e-5)
    assert_agree(history(Path(mirrored["rdrop_none"]["run_dir"])),
                 history(Path(mirrored["rdrop_mirrored"]["run_dir"])), 1e-5)
    assert_same_weights(one, two)
    record = json.loads((two / "run.json").read_text())
    assert record["distribute"] == {"strategy": "mirrored", "replicas": 2, "workers": 1}
    assert json.loads((one / "run.json").read_text())["distribute"]["strategy"] == "none"
    logs = mirrored["mirrored"]["logs"]
    assert any("mirrored on 2 CPU device(s): 2 replica(s)" in line for line in logs)


def test_mirrored_takes_uneven_batches_and_an_empty_share(mirrored):
    """Batches of 43 split 22 + 21, and the epoch's last batch, one text (216 = 5 x 43 + 1),
    leaves a replica an empty share; with dropout and R-Drop on (the tiny config's). It trains,
    says the batch size does not split evenly, and reports finite losses."""
    run_dir = Path(mirrored["uneven"]["run_dir"])
    assert (run_dir / "model.onnx").is_file()
    row = history(run_dir)[0]
    assert 0 < row["loss"] < 1 and 0 < row["val_loss"] < 1
    logs = mirrored["uneven"]["logs"]
    assert any("does not split evenly among 2 replicas" in line for line in logs)
    assert any("fused LSTM kernel: off (it does not run under a tf.distribute" in line
               for line in logs)  # training.kernel: auto says so in one line


# ---- multi_worker: two processes on 127.0.0.1 -------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Job:
    """The two workers of one multi_worker training, each `bilstm train` in its own process,
    with its own TF_CONFIG and temporary folder."""

    def __init__(self, data: Path, output: Path, tmp: Path) -> None:
        self.data, self.output, self.tmp = data, output, tmp
        self.processes: list[subprocess.Popen] = []

    def command(self, resume: Path | None) -> list[str]:
        if resume is not None:
            return ["train", "--resume", str(resume)]
        sets = [f"data.train={self.data / 'train.tsv'}", f"data.test={self.data / 'test.tsv'}",
                *SAME_MATH, "training.distribute=multi_worker"]
        return ["train", "--config", str(TINY_CONFIG), "--output", str(self.output),
                *[arg for item in sets for arg in ("--set", item)]]

    def start(self, resume: Path | None = None) -> None:
        """Both workers; the chief (worker 0) resumes `resume`, the other starts as it first
        did (it follows the chief)."""
        cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
        for index in range(2):
            folder = self.tmp / f"worker{index}"
            folder.mkdir(parents=True, exist_ok=True)
            env = {k: v for k, v in os.environ.items() if k != "BILSTM_NATIVE_LOGS"}
            env.update(TF_CONFIG=tf_config(cluster, index), TMPDIR=str(folder))
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "bilstm_cli",
                 *self.command(resume if index == 0 else None)],
                cwd=self.data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=env))

    def wait(self) -> list[tuple[int, str, str]]:
        """Each worker's exit code, stdout and stderr (the chief's first)."""
        ended = []
        for process in self.processes[-2:]:
            out, err = process.communicate(timeout=TIMEOUT)
            ended.append((process.returncode, out, err))
        return ended

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


@contextlib.contextmanager
def job(data: Path, tmp: Path) -> Iterator[Job]:
    running = Job(data, tmp / "runs", tmp)
    try:
        yield running
    finally:
        running.kill()


@pytest.fixture(scope="module")
def two_workers(data, tmp_path_factory) -> tuple[Path, list[tuple[int, str, str]], Path]:
    """One multi_worker training of SAME_MATH on two workers: the chief's run folder, what each
    worker said, and the folder the workers' temporary folders were made in."""
    tmp = tmp_path_factory.mktemp("two-workers")
    with job(data, tmp) as workers:
        workers.start()
        ended = workers.wait()
    for code, _, err in ended:
        assert code == 0, err[-3000:]
    return (tmp / "runs" / "latest").resolve(), ended, tmp


def test_two_workers_train_as_one_device_into_the_chiefs_folder(two_workers, mirrored, data):
    run_dir, ended, tmp = two_workers
    for name in ("config.yaml", "tokenizer.json", "labels.json", "model.keras", "model.onnx",
                 "history.csv", "metrics.json", "run.json", "data_summary.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / "last" / "state.json").is_file()
    assert sorted(p.name for p in (tmp / "runs").iterdir()) == sorted([run_dir.name, "latest"])
    record = json.loads((run_dir / "run.json").read_text())
    assert record["state"] == "finished"
    assert record["distribute"] == {"strategy": "multi_worker", "replicas": 2, "workers": 2}
    # the other worker's own folder, under its TMPDIR, is gone; it says where the run went
    assert list((tmp / "worker1").iterdir()) == []
    (_, chief_out, chief_err), (_, worker_out, worker_err) = ended
    assert "worker 0 (rank 0 of 2 workers, writes the run folder)" in chief_err
    assert "the chief wrote the run folder" in worker_err and str(run_dir) in worker_out
    # Each worker took its share of every batch: the same numbers as one device.
    assert_agree(history(run_dir), history(Path(mirrored["none"]["run_dir"])), 1e-5)

    predicted = run_cli("predict", "--model", str(run_dir), input="superb brilliant film\n",
                        cwd=data)
    assert predicted.returncode == 0 and predicted.stdout.startswith("pos"), predicted.stderr
    listed = run_cli("runs", str(tmp / "runs"), cwd=data).stdout.splitlines()
    assert listed[0].split("\t")[-2:] == ["replicas", "state"]
    assert listed[1].split("\t")[-2:] == ["2 multi_worker", "finished"]


def test_a_worker_killed_after_the_first_epoch_then_the_job_restarted(two_workers, data,
                                                                      tmp_path):
    """Worker 1 is killed (SIGKILL) once the chief's first checkpoint is written: the chief
    stops on its own with one clear line (exit 2). Restarted (the chief with --resume, worker 1
    with its first command), the job finishes from the chief's checkpoint, exactly as the job
    that was left alone."""
    with job(data, tmp_path) as workers:
        workers.start()
        deadline = time.monotonic() + TIMEOUT
        while not list((tmp_path / "runs").glob("*/checkpoints/last")):
            assert time.monotonic() < deadline and workers.processes[0].poll() is None
            time.sleep(0.05)
        run_dir = next((tmp_path / "runs").glob("*/checkpoints/last")).parent.parent
        workers.processes[1].send_signal(signal.SIGKILL)
        _, err = workers.processes[0].communicate(timeout=TIMEOUT)
        assert workers.processes[0].returncode == 2, err[-3000:]
        assert "a worker of the cluster stopped" in err
        assert f"this one with `bilstm train --resume {run_dir}`" in err
        assert "Traceback" not in err
        assert json.loads((run_dir / "run.json").read_text())["state"] == "failed"

        workers.start(resume=run_dir)
        (code, _, err), (worker_code, _, worker_err) = workers.wait()
    assert code == 0 and worker_code == 0, (err[-2000:], worker_err[-2000:])
    assert "resuming from last-e0001" in err and "resuming from last-e0001" in worker_err
    record = json.loads((run_dir / "run.json").read_text())
    assert record["state"] == "finished" and len(record["resumed"]) == 1
    assert_same_weights(run_dir, two_workers[0])
    assert results(run_dir) == results(two_workers[0])
