"""A table of hostile inputs, each run through the real CLI as a user would (issue 29).

Every row must end in exit code 2 with one error message naming the problem, no Python
traceback, and nothing lost: the run folder the command was given (a copy of the one tiny
trained run the tests share) is byte for byte what it was before the command, and its `latest`
link still leads to it. Rows run in parallel, each in a folder of its own; rows that reach ONNX
or only read a config or data (`train --dry-run`) never import TensorFlow and take well under a
second each.
"""

from __future__ import annotations

import base64
import hashlib
import json
import marshal
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import toy_examples, write_tsv


@dataclass(frozen=True)
class Case:
    """Where a row runs: its own folder, holding `runs/<the run>` (a copy) and `runs/latest`."""

    folder: Path
    run: Path
    train: Path
    test: Path

    @property
    def runs(self) -> Path:
        return self.run.parent


Damage = Callable[[Case], None]


@dataclass(frozen=True)
class Row:
    name: str
    args: tuple[str, ...]  # {run}, {runs}, {case}, {train} and {test} are filled in
    expect: str  # in stderr (also filled in)
    damage: Damage | None = None
    stdin: bytes = b""
    env: dict[str, str] = field(default_factory=dict)
    marks: tuple = ()


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, str]
    after: dict[str, str]
    latest_ok: bool


# ---------------------------------------------------------------------------------------------
# What the rows do to their copy of the run, or which files they write.


def write(relative: str, content: str | bytes) -> Damage:
    def damage(case: Case) -> None:
        path = case.folder / relative.format(run=case.run, runs=case.runs, case=case.folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            text = content.replace("{train}", str(case.train)).replace("{test}", str(case.test))
            path.write_text(text, encoding="utf-8")
    return damage


def in_run(name: str, content: str | bytes | None) -> Damage:
    """Replace (None: delete) one file of the run folder; the hard-linked best checkpoint of
    model.keras is not written through."""
    def damage(case: Case) -> None:
        path = case.run / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content, encoding="utf-8")
    return damage


def truncate(name: str, size: int) -> Damage:
    def damage(case: Case) -> None:
        path = case.run / name
        data = path.read_bytes()[:size]
        path.unlink()  # a copy of its own (model.keras may be a hard link into checkpoints/best)
        path.write_bytes(data)
    return damage


def both(*damages: Damage) -> Damage:
    def damage(case: Case) -> None:
        for each in damages:
            each(case)
    return damage


def interrupted(case: Case) -> None:
    """The run as if stopped before it finished: `train --resume` continues it."""
    record = json.loads((case.run / "run.json").read_text())
    record["state"] = "interrupted"
    (case.run / "run.json").write_text(json.dumps(record))


def lambda_model(case: Case) -> None:
    """model.keras with a Lambda layer (Python code) between the input and the model."""
    path = case.run / "model.keras"
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    layers = config["config"]["layers"]
    code = base64.b64encode(marshal.dumps((lambda t: t).__code__)).decode()
    layers.insert(1, {
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
        "name": "lambda", "config": {
            "name": "lambda", "trainable": True, "arguments": {},
            "function": {"class_name": "__lambda__",
                         "config": {"code": code, "defaults": None, "closure": None}}},
        "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {
            "shape": [None, None], "dtype": "int32", "keras_history": ["ids", 0, 0]}}],
            "kwargs": {}}]})
    layers[2]["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = ["lambda", 0, 0]
    files["config.json"] = json.dumps(config).encode()
    path.unlink()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def keras_without_config(case: Case) -> None:
    path = case.run / "model.keras"
    with zipfile.ZipFile(path) as archive:
        weights = archive.read("model.weights.h5")
    path.unlink()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.weights.h5", weights)


def onnx_with_classes(classes: int) -> Damage:
    """model.onnx of a model with `classes` outputs over the run's vocabulary."""
    def damage(case: Case) -> None:
        from bilstm_cli.architecture import describe
        from bilstm_cli.config import ModelConfig
        from bilstm_cli.export import ModelSpec, build_onnx

        vocab = len(json.loads((case.run / "tokenizer.json").read_text())["model"]["vocab"])
        rng = np.random.default_rng(0)
        units, dim = 4, 3
        arch = describe(ModelConfig(units=units, embedding_dim=dim, pooling="last"), vocab, classes)
        spec = ModelSpec(
            arch, rng.normal(size=(vocab, dim)).astype(np.float32),
            recurrent=[[(rng.normal(size=(dim, 4 * units)).astype(np.float32),
                         rng.normal(size=(units, 4 * units)).astype(np.float32),
                         np.zeros(4 * units, np.float32))]],
            dense_kernel=rng.normal(size=(units, arch.outputs)).astype(np.float32),
            dense_bias=np.zeros(arch.outputs, np.float32))
        (case.run / "model.onnx").write_bytes(build_onnx(spec).SerializeToString())
    return damage


def bigger_vocabulary(case: Case) -> None:
    """tokenizer.json with one more word than the model's embedding has rows."""
    path = case.run / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["zyzzyva"] = max(vocab.values()) + 1
    path.write_text(json.dumps(tokenizer))


def in_checkpoint(name: str, content: bytes | None, size: int | None = None) -> Damage:
    def damage(case: Case) -> None:
        path = case.run / "checkpoints" / "last" / name
        data = path.read_bytes()
        path.unlink()
        if size is not None:
            path.write_bytes(data[:size])
        elif content is not None:
            path.write_bytes(content)
    return damage


def dangling_last(case: Case) -> None:
    last = case.run / "checkpoints" / "last"
    shutil.rmtree(last.resolve())


def dangling_latest(case: Case) -> None:
    (case.runs / "latest").unlink()
    (case.runs / "latest").symlink_to("20990101-000000-gone")


def deflate64_sst2(case: Case) -> None:
    """An SST-2.zip whose members use Deflate64 (method 9), which Python's zipfile lacks."""
    path = case.folder / "data" / "SST-2.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for split in ("train", "dev"):
            archive.writestr(f"SST-2/{split}.tsv", "sentence\tlabel\ngreat film\t1\nbad\t0\n")
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = data.find(signature)
        while start != -1:
            data[start + offset:start + offset + 2] = (9).to_bytes(2, "little")
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------
# The table.

TRAIN = ("train", "--set", "data.dataset=null", "--set", "data.train={train}", "--dry-run")
CONFIG = ("train", "-c", "{case}/c.yaml", "--dry-run")
BASE = "data:\n  dataset: null\n  train: {train}\n"
PREDICT = ("predict", "--model", "{run}")
EVALUATE = ("evaluate", "--data", "{test}", "--model", "{run}")
NO_ONNX = in_run("model.onnx", None)
LABELS3 = in_run("labels.json", '{"labels": ["neg", "pos", "meh"]}')


def data_row(name: str, filename: str, content: str | bytes, expect: str,
             marks: tuple = ()) -> Row:
    return Row(name, ("train", "--set", "data.dataset=null", "--set",
                      f"data.train={{case}}/{filename}", "--dry-run"),
               expect, write(filename, content), marks=marks)


ROWS = [
    # --- config (train --dry-run) ---
    Row("config-binary", CONFIG, "c.yaml", write("c.yaml", bytes(range(256)) * 8)),
    Row("config-latin1", CONFIG, "c.yaml", write("c.yaml", "model:\n  name: caf\xe9\n"
                                                 .encode("latin-1"))),
    Row("config-duplicate-key", CONFIG, "units", write("c.yaml", BASE + "model:\n  units: 64\n"
                                                       "  units: 128\n")),
    Row("config-python-tag", CONFIG, "c.yaml",
        write("c.yaml", BASE + "model: !!python/object/apply:os.system ['true']\n")),
    Row("config-yaml-syntax", CONFIG, "c.yaml", write("c.yaml", BASE + "model: [units: 3\n")),
    Row("config-top-level-list", CONFIG, "c.yaml", write("c.yaml", "- data\n- model\n")),
    Row("config-unknown-key", CONFIG, "model.unitz", write("c.yaml", BASE + "model:\n"
                                                          "  unitz: 3\n")),
    Row("config-unknown-section", CONFIG, "modle", write("c.yaml", BASE + "modle:\n"
                                                        "  units: 3\n")),
    Row("config-wrong-type", CONFIG, "model.units", write("c.yaml", BASE + "model:\n"
                                                         "  units: many\n")),
    Row("config-negative-units", CONFIG, "model.units", write("c.yaml", BASE + "model:\n"
                                                             "  units: -4\n")),
    Row("config-dropout-above-1", CONFIG, "model.dropout", write("c.yaml", BASE + "model:\n"
                                                                "  dropout: 1.5\n")),
    Row("config-nan-learning-rate", CONFIG, "training.learning_rate",
        write("c.yaml", BASE + "training:\n  learning_rate: .nan\n")),
    Row("config-section-not-a-mapping", CONFIG, "model", write("c.yaml", BASE + "model: 3\n")),
    Row("config-missing-file", ("train", "-c", "{case}/nope.yaml", "--dry-run"), "nope.yaml"),
    Row("config-is-a-folder", ("train", "-c", "{case}", "--dry-run"), "folder",
        write("x.txt", "x")),
    Row("set-without-equals", (*TRAIN, "--set", "model.units"), "model.units"),
    Row("set-unknown-section", (*TRAIN, "--set", "nosuch.units=3"), "nosuch"),
    Row("set-bad-merge-mode", (*TRAIN, "--set", "model.merge_mode=glue"), "model.merge_mode"),
    Row("set-zero-epochs", (*TRAIN, "--set", "training.epochs=0"), "training.epochs"),
    Row("set-negative-batch", (*TRAIN, "--batch-size", "-5"), "training.batch_size"),
    Row("set-bad-yaml-value", (*TRAIN, "--set", "model.units=[3"), "model.units"),
    # --- data (train --dry-run) ---
    Row("data-missing-file", ("train", "--set", "data.dataset=null", "--set",
                              "data.train={case}/nope.tsv", "--dry-run"), "nope.tsv"),
    Row("data-test-missing", (*TRAIN, "--set", "data.test={case}/nope.tsv"), "nope.tsv"),
    data_row("data-empty-file", "empty.tsv", "", "empty.tsv"),
    data_row("data-header-only", "head.tsv", "text\tlabel\n", "head.tsv"),
    data_row("data-one-class", "one.tsv", "text\tlabel\n" + "good film\tpos\n" * 20, "one.tsv"),
    data_row("data-invalid-utf8", "bad.tsv", b"text\tlabel\ngood\tpos\n\xff\xfe bad\tneg\n",
             "bad.tsv:3"),
    data_row("data-too-many-fields", "wide.tsv", "text\tlabel\ngood\tpos\nbad\tneg\textra\n",
             "wide.tsv:3"),
    data_row("data-no-label-column", "nolabel.tsv", "text\tstars\ngood\t5\nbad\t1\n", "label"),
    data_row("data-jsonl-not-json", "bad.jsonl",
             '{"text": "good", "label": "pos"}\n{"text": "bad", \n', "bad.jsonl:2"),
    data_row("data-jsonl-not-object", "list.jsonl",
             '{"text": "good", "label": "pos"}\n["bad", "neg"]\n', "list.jsonl:2"),
    data_row("data-jsonl-missing-label", "nokey.jsonl",
             '{"text": "good", "label": "pos"}\n{"text": "bad"}\n', "nokey.jsonl:2"),
    data_row("data-fake-parquet", "fake.parquet", b"PAR1 this is not parquet", "fake.parquet"),
    data_row("data-binary-tsv", "noise.tsv", bytes(range(256)) * 16, "noise.tsv"),
    data_row("data-csv-unclosed-quote", "quote.csv",
             "text,label\ngood film,pos\n\"a quote that never closes,neg\n" +
             "".join(f"film {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)),
             "quote.csv:3"),
    data_row("data-nul-in-label", "nul.tsv",
             "text\tlabel\n" + "".join(f"film {i}\t{'pos' if i % 2 else 'neg'}\n"
                                       for i in range(20)) + "odd film\t\x001\n",
             "nul.tsv:22"),
    Row("data-text-column-unknown", (*TRAIN, "--set", "data.text_column=review"), "review"),
    Row("sst2-deflate64-train", ("train", "--set", "data.dataset=sst2", "--dry-run"),
        "SST-2.zip", deflate64_sst2, env={"BILSTM_DATA_DIR": "{case}/data"}),
    Row("sst2-deflate64-data-get", ("data", "get", "sst2"), "SST-2.zip", deflate64_sst2,
        env={"BILSTM_DATA_DIR": "{case}/data"}),
    # --- run folders: the model and its files ---
    Row("keras-truncated-predict", (*PREDICT, "great film"), "model.keras is damaged",
        both(NO_ONNX, truncate("model.keras", 5000))),
    Row("keras-truncated-export", ("export", "{run}"), "checkpoints/best/model.keras",
        both(NO_ONNX, truncate("model.keras", 5000))),
    Row("keras-truncated-evaluate", (*EVALUATE, "--engine", "tf"), "model.keras is damaged",
        truncate("model.keras", 5000)),
    Row("keras-not-a-zip", (*PREDICT, "--engine", "tf", "x"), "model.keras is damaged",
        in_run("model.keras", b"not a zip file at all")),
    Row("keras-zip-without-config", (*PREDICT, "--engine", "tf", "x"), "lacks config.json",
        keras_without_config),
    Row("keras-empty-file", (*PREDICT, "--engine", "tf", "x"), "model.keras is damaged",
        in_run("model.keras", b"")),
    Row("keras-missing", (*PREDICT, "great film"), "model.keras is missing",
        both(NO_ONNX, in_run("model.keras", None))),
    Row("keras-lambda-predict", (*PREDICT, "--engine", "tf", "x"), "Lambda layer",
        lambda_model),
    Row("keras-lambda-export", ("export", "{run}"), "Lambda layer", lambda_model),
    Row("keras-lambda-evaluate", (*EVALUATE, "--engine", "tf"), "Lambda layer", lambda_model),
    Row("labels-three-on-binary-onnx", (*PREDICT, "great film"), "3 labels", LABELS3),
    Row("labels-three-on-binary-evaluate", EVALUATE, "3 labels", LABELS3),
    Row("labels-three-on-binary-tf", (*PREDICT, "--engine", "tf", "x"), "3 labels", LABELS3),
    Row("labels-three-on-binary-export", ("export", "{run}"), "3 labels", LABELS3),
    Row("labels-two-on-three-class-onnx", (*PREDICT, "great film"), "gives 3 outputs",
        onnx_with_classes(3)),
    Row("labels-one", (*PREDICT, "x"), "labels.json", in_run("labels.json", '{"labels": ["a"]}')),
    Row("labels-empty-list", (*PREDICT, "x"), "labels.json",
        in_run("labels.json", '{"labels": []}')),
    Row("labels-duplicate", (*PREDICT, "x"), "'pos' listed more than once",
        in_run("labels.json", '{"labels": ["pos", "pos"]}')),
    Row("labels-not-json", (*PREDICT, "x"), "labels.json", in_run("labels.json", "neg, pos")),
    Row("labels-empty-file", (*PREDICT, "x"), "labels.json", in_run("labels.json", "")),
    Row("labels-top-level-list", (*PREDICT, "x"), "labels.json",
        in_run("labels.json", '["neg", "pos"]')),
    Row("labels-not-strings", (*PREDICT, "x"), "labels.json",
        in_run("labels.json", '{"labels": [{"name": "neg"}, ["pos"]]}')),
    Row("labels-missing", (*PREDICT, "x"), "labels.json is missing",
        in_run("labels.json", None)),
    Row("tokenizer-not-json", (*PREDICT, "x"), "tokenizer.json",
        in_run("tokenizer.json", "{ not json")),
    Row("tokenizer-empty", (*PREDICT, "x"), "tokenizer.json", in_run("tokenizer.json", "")),
    Row("tokenizer-wrong-shape", (*PREDICT, "x"), "tokenizer.json",
        in_run("tokenizer.json", '{"model": 3}')),
    Row("tokenizer-bigger-vocabulary-onnx", (*PREDICT, "great film"), "embedding",
        bigger_vocabulary),
    Row("tokenizer-bigger-vocabulary-evaluate", EVALUATE, "embedding", bigger_vocabulary),
    Row("onnx-truncated", (*PREDICT, "--engine", "onnx", "x"), "model.onnx",
        truncate("model.onnx", 300)),
    Row("onnx-random-bytes", (*PREDICT, "--engine", "onnx", "x"), "model.onnx",
        in_run("model.onnx", bytes(range(256)) * 4)),
    Row("onnx-missing-forced", (*PREDICT, "--engine", "onnx", "x"), "model.onnx is missing",
        NO_ONNX),
    # --- which folder is a run ---
    Row("model-folder-of-runs-predict", ("predict", "--model", "{runs}", "x"),
        "folder of run folders"),
    Row("model-folder-of-runs-evaluate", ("evaluate", "--data", "{test}", "--model", "{runs}"),
        "latest"),
    Row("model-folder-of-runs-export", ("export", "{runs}"), "folder of run folders"),
    Row("runs-given-a-run", ("runs", "{run}"), "is a run folder, not a folder of runs"),
    Row("model-dangling-latest", ("predict", "--model", "{runs}/latest", "x"),
        "does not exist", dangling_latest),
    Row("model-does-not-exist", ("predict", "--model", "{case}/nope", "x"), "nope"),
    Row("model-interrupted-run", ("predict", "--model", "{case}/half", "x"), "interrupted",
        write("half/config.yaml", BASE)),
    # --- train --resume ---
    Row("resume-truncated-arrays", ("train", "--resume", "{run}"), "damaged",
        both(interrupted, in_checkpoint("arrays.npz", None, 5000))),
    Row("resume-random-arrays", ("train", "--resume", "{run}"), "arrays.npz",
        both(interrupted, in_checkpoint("arrays.npz", bytes(range(256)) * 8))),
    Row("resume-truncated-state", ("train", "--resume", "{run}"), "state.json",
        both(interrupted, in_checkpoint("state.json", None, 100))),
    Row("resume-state-not-object", ("train", "--resume", "{run}"), "state.json",
        both(interrupted, in_checkpoint("state.json", b"[1, 2]"))),
    Row("resume-missing-arrays", ("train", "--resume", "{run}"), "arrays.npz is missing",
        both(interrupted, in_checkpoint("arrays.npz", None))),
    Row("resume-dangling-last", ("train", "--resume", "{run}"), "does not exist",
        both(interrupted, dangling_last)),
    Row("resume-folder-of-runs", ("train", "--resume", "{runs}"), "latest"),
    Row("resume-nonexistent", ("train", "--resume", "{case}/nope"), "does not exist"),
    Row("resume-with-output", ("train", "--resume", "{run}", "--output", "{case}"), "--output"),
    Row("force-without-resume", ("train", "--force", "--dry-run"), "--force"),
    # --- predict and evaluate input streams ---
    Row("stdin-invalid-utf8", (*PREDICT, "-"), "<stdin>:2", stdin=b"good\n\xff\xfe\n"),
    Row("stdin-jsonl-not-json", (*PREDICT, "--input-format", "jsonl", "-"), "<stdin>:1",
        stdin=b"{not json}\n"),
    Row("stdin-jsonl-not-object", (*PREDICT, "--input-format", "jsonl", "-"),
        "JSON object", stdin=b"[1, 2]\n"),
    Row("stdin-jsonl-missing-key", (*PREDICT, "--input-format", "jsonl", "-"), "'text'",
        stdin=b'{"review": "good"}\n'),
    Row("stdin-jsonl-text-not-string", (*PREDICT, "--input-format", "jsonl", "-"),
        "not a string", stdin=b'{"text": ["good"]}\n'),
    Row("stdin-tsv-missing-column", (*PREDICT, "--input-format", "tsv", "--text-column", "2",
                                     "-"), "column 2", stdin=b"a\tb\n"),
    Row("stdin-tsv-header-lacks-column", (*PREDICT, "--input-format", "tsv", "--text-column",
                                          "review", "-"), "review", stdin=b"text\tid\nx\t1\n"),
    Row("predict-input-missing", (*PREDICT, "--input", "{case}/nope.txt"), "nope.txt"),
    Row("predict-input-is-folder", (*PREDICT, "--input", "{case}"), "is a folder"),
    Row("predict-id-column-text", (*PREDICT, "--id-column", "id", "x"), "--id-column"),
    Row("predict-bad-engine", (*PREDICT, "--engine", "gpu", "x"), "--engine"),
    Row("predict-top-k-zero", (*PREDICT, "--top-k", "0", "x"), "--top-k"),
    Row("evaluate-unknown-labels", ("evaluate", "--model", "{run}", "--data", "{case}/l.tsv"),
        "'meh'", write("l.tsv", "text\tlabel\ngood\tpos\nfine\tmeh\n")),
    Row("evaluate-data-missing", ("evaluate", "--model", "{run}", "--data", "{case}/no.tsv"),
        "no.tsv"),
    Row("evaluate-empty-data", ("evaluate", "--model", "{run}", "--data", "{case}/e.tsv"),
        "e.tsv", write("e.tsv", "")),
    Row("evaluate-bad-row", ("evaluate", "--model", "{run}", "--data", "{case}/b.tsv"),
        "b.tsv:3", write("b.tsv", "text\tlabel\ngood\tpos\nbad\tneg\tx\n")),
]


def _fill(text: str, case: Case) -> str:
    return text.format(run=case.run, runs=case.runs, case=case.folder, train=case.train,
                       test=case.test)


def _hashes(folder: Path) -> dict[str, str]:
    """Every file and link under `folder`: links by target, files by content."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            out[key] = "-> " + os.readlink(path)
        elif path.is_file():
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _run_row(row: Row, root: Path, trained: Path, train: Path, test: Path) -> Outcome:
    folder = root / row.name
    runs = folder / "runs"
    runs.mkdir(parents=True)
    shutil.copytree(trained, runs / trained.name, symlinks=True)
    (runs / "latest").symlink_to(trained.name)
    case = Case(folder, runs / trained.name, train, test)
    if row.damage is not None:
        row.damage(case)
    before = _hashes(runs)
    start = time.monotonic()
    env = {**os.environ, **{k: _fill(v, case) for k, v in row.env.items()}}
    env.pop("BILSTM_NATIVE_LOGS", None)
    env.setdefault("BILSTM_DATA_DIR", str(folder / "no-data"))
    env["XDG_CACHE_HOME"] = str(folder / "cache")
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-m", "bilstm_cli", *(_fill(a, case) for a in row.args)],
        cwd=folder, input=row.stdin, capture_output=True, env=env, timeout=300)
    latest = runs / "latest"
    if os.environ.get("BILSTM_HOSTILE_TIMES"):
        with open(os.environ["BILSTM_HOSTILE_TIMES"], "a") as log:
            log.write(f"{time.monotonic() - start:6.1f} {row.name}\n")
    return Outcome(result.returncode, result.stdout.decode(errors="replace"),
                   result.stderr.decode(errors="replace"), before, _hashes(runs),
                   latest.is_dir() or row.damage is dangling_latest)


@pytest.fixture(scope="module")
def shared_run(trained_run) -> tuple[Path, dict[str, str]]:
    """The session's tiny trained run and its hashes before any row ran."""
    return trained_run, _hashes(trained_run.parent)


@pytest.fixture(scope="module")
def outcomes(request, shared_run, toy_files, tmp_path_factory) -> dict[str, Outcome]:
    """Every selected row, run in parallel (each row's command in its own process)."""
    selected = {item.callspec.params["row"].name for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")
                and "row" in item.callspec.params}
    root = tmp_path_factory.mktemp("hostile")
    rows = [row for row in ROWS if row.name in selected]
    workers = max(2, min(8, (os.cpu_count() or 2)))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda row: _run_row(row, root, shared_run[0], toy_files["train"],
                                                toy_files["test"]), rows)
        return dict(zip((row.name for row in rows), results))


def test_the_table_is_big_and_its_names_unique():
    assert len(ROWS) >= 60
    assert len({row.name for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", [pytest.param(row, id=row.name, marks=row.marks)
                                 for row in ROWS])
def test_hostile_input_is_one_clear_error(row: Row, outcomes: dict[str, Outcome]):
    outcome = outcomes[row.name]
    stderr = outcome.stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    assert outcome.returncode == 2, (outcome.returncode, stderr[-3000:])
    case_free = " ".join(stderr.split())
    assert row.expect in case_free, stderr
    messages = [line for line in stderr.splitlines()
                if line.startswith("error:") or "─ Error ─" in line]  # ours, or Typer's usage box
    assert len(messages) == 1, stderr
    assert outcome.before == outcome.after, "the command changed the run folder"
    assert outcome.latest_ok, "runs/latest no longer leads to the run"


def test_the_shared_run_is_untouched(shared_run, outcomes):
    """Run last: nothing any row did reached the session's trained run."""
    trained, before = shared_run
    assert _hashes(trained.parent) == before
    assert (trained.parent / "latest").resolve() == trained


def test_an_empty_class_folder_is_noted_in_the_summary(tmp_path):
    """Item 13: folder format without data.labels, one class sub-folder empty: the dry run
    says so instead of dropping the class without a word."""
    for label, examples in (("pos", 6), ("neg", 6), ("meh", 0)):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(examples):
            (tmp_path / "train" / label / f"{i}.txt").write_text(f"{label} film {i}\n")
    write_tsv(tmp_path / "unused.tsv", toy_examples(4))
    result = subprocess.run(
        [sys.executable, "-m", "bilstm_cli", "train", "--set", "data.dataset=null", "--set",
         f"data.train={tmp_path / 'train'}", "--set", "data.format=folder", "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # The summary's table may wrap the folder's path: read it without the frame and breaks.
    said = "".join((result.stdout + result.stderr).replace("|", " ").split())
    assert "train/meh:emptyclassfolder" in said, said
    assert "notusedasalabel" in said
