"""Shared fixtures: small data sets written into a temporary folder, and one tiny trained run."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# TensorFlow's native-log filter swaps file descriptor 2, which fights pytest's capture.
os.environ["BILSTM_NATIVE_LOGS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The fused LSTM kernel is built once per test session, here, not in the user's cache; every
# `bilstm train` the tests run (in this process or a child) uses it.
_KERNEL_CACHE = tempfile.TemporaryDirectory(prefix="bilstm-kernels-")
os.environ["BILSTM_CACHE_DIR"] = _KERNEL_CACHE.name

POSITIVE = "great wonderful superb brilliant moving delightful excellent".split()
NEGATIVE = "awful boring terrible dull weak tedious dreadful".split()
NEUTRAL = "film movie plot actor scene story the a it was and".split()


def tiny_model(config, vocab_size: int, num_classes: int, kinds=None, **options):
    """model.build_model for a ModelConfig (its architecture for this vocabulary and classes);
    `kinds`: "fused" for the accel package's layers (the kernel must be loaded)."""
    from bilstm_cli import accel
    from bilstm_cli.architecture import describe
    from bilstm_cli.model import build_model

    layers = accel.fused_layers() if kinds == "fused" else None
    options.setdefault("word_vector_scale", config.embedding_init_scale)
    return build_model(describe(config, vocab_size, num_classes), layers, **options)


def toy_examples(count: int, seed: int = 0, classes: int = 2) -> list[tuple[str, str]]:
    """Texts whose label follows from their words, so a tiny model learns them in a few steps."""
    rng = random.Random(seed)
    examples = []
    for i in range(count):
        if classes == 2:
            label = "pos" if i % 2 else "neg"
            cue = POSITIVE if label == "pos" else NEGATIVE
        else:
            label = ["pos", "neg", "meh"][i % 3]
            cue = {"pos": POSITIVE, "neg": NEGATIVE, "meh": ["okay", "average", "fine"]}[label]
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(2, 12))]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(cue))
        examples.append((" ".join(words), label))
    return examples


def write_tsv(path: Path, examples: list[tuple[str, str]], header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(examples)
    return path


def write_jsonl(path: Path, examples: list[tuple[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for text, label in examples:
            handle.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


def run_cli(*args: str, cwd: Path, input: str | None = None, env: dict | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m bilstm_cli ...` as a user would, in its own process."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("BILSTM_NATIVE_LOGS", None)
    return subprocess.run(
        [sys.executable, "-m", "bilstm_cli", *args], cwd=cwd, input=input, text=True,
        capture_output=True, env=full_env, timeout=timeout,
    )


# Runs the CLI in a fresh interpreter, then checks which modules it loaded.
_MODULE_CHECK = """
import sys
from bilstm_cli.cli import app
absent, present = sys.argv[1].split(","), set(filter(None, sys.argv[2].split(",")))
sys.argv = ["bilstm", *sys.argv[3:]]
try:
    app()
except SystemExit as exc:
    assert not exc.code, f"exit code {exc.code}"
loaded = {name.split(".")[0] for name in sys.modules}
assert not loaded & set(absent), sorted(loaded & set(absent))
assert present <= loaded, sorted(present - loaded)
"""


def run_cli_without_tensorflow(*args: str, cwd: Path, input: str | None = None,
                               also_imports: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run `bilstm ARGS` in its own process: it must succeed without ever importing TensorFlow
    or Keras (and must import `also_imports`). Returns the finished process, output captured."""
    result = subprocess.run(
        [sys.executable, "-c", _MODULE_CHECK, "tensorflow,keras", ",".join(also_imports), *args],
        cwd=cwd, input=input, text=True, capture_output=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="session")
def fused_kernel() -> bool:
    """Build (once) and load the fused LSTM kernel; False where it cannot be built."""
    from bilstm_cli.accel import kernel as fused_lstm

    messages: list[str] = []
    built = fused_lstm.prepare(messages.append)
    if not built and shutil.which("g++"):
        pytest.fail("g++ is here but the fused LSTM kernel did not build: " + " ".join(messages))
    return built


@pytest.fixture(scope="session")
def toy_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("toy")
    return {
        "train": write_tsv(folder / "train.tsv", toy_examples(240, seed=1)),
        "test": write_tsv(folder / "test.tsv", toy_examples(60, seed=2)),
        "test_jsonl": write_jsonl(folder / "test.jsonl", toy_examples(60, seed=2)),
        "folder": folder,
    }


# The tests' own tiny config (not layered on the shipped configs/imdb.yaml).
TINY_CONFIG = Path(__file__).parent / "tiny.yaml"
TINY = ["--config", str(TINY_CONFIG)]


@pytest.fixture(scope="session")
def trained_run(toy_files) -> Path:
    """One tiny bidirectional model trained through the CLI, shared by the tests that read it."""
    folder = toy_files["folder"]
    result = run_cli(
        "train", "--bidirectional", *TINY, "--set", f"data.train={toy_files['train']}",
        "--set", f"data.test={toy_files['test']}", "--output", str(folder / "runs"), cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    return (folder / "runs" / "latest").resolve()
