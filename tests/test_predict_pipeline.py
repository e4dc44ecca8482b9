"""`bilstm predict` in shell pipelines: every input and output form, one output line per input
line (empty and undecodable lines included), streaming, broken pipes, and the two engines."""

import json
import os
import select
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_cli, run_cli_without_tensorflow, toy_examples

from bilstm_cli.config import ModelConfig
from bilstm_cli.errors import UserError
from bilstm_cli.predict import Classifier, parse_records

POS, NEG = "superb brilliant film", "awful dull boring plot"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny BiLSTM run folder (tokenizer, labels, model.keras, model.onnx), trained in-process
    in a few seconds, so these tests do not depend on the `train` command."""
    import keras
    from conftest import tiny_model

    from bilstm_cli.architecture import describe
    from bilstm_cli.export import export_model
    from bilstm_cli.text import build_tokenizer, encode, pad, save_tokenizer

    folder = tmp_path_factory.mktemp("pipeline_run")
    texts, labels = zip(*toy_examples(240, seed=1))
    tokenizer = build_tokenizer(texts, 100, max_length=50)
    save_tokenizer(tokenizer, folder / "tokenizer.json")
    (folder / "labels.json").write_text(json.dumps({"labels": ["neg", "pos"]}))
    keras.utils.set_random_seed(0)
    config = ModelConfig(bidirectional=True, units=8, embedding_dim=8, dropout=0.0)
    model = tiny_model(config, tokenizer.get_vocab_size(), 2)
    model.compile(keras.optimizers.Adam(0.02), "binary_crossentropy")
    y = np.array([label == "pos" for label in labels], dtype=np.float32)
    model.fit(pad(encode(tokenizer, texts)), y, epochs=8, batch_size=16, verbose=0)
    model.save(folder / "model.keras")
    export_model(model, describe(config, tokenizer.get_vocab_size(), 2), folder / "model.onnx")
    return folder


def predict(run, *args, input=None, **kwargs):
    result = run_cli("predict", "--model", str(run), *args, cwd=run.parent, input=input,
                     **kwargs)
    return result


def records(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


# Inputs ---------------------------------------------------------------------------------------

def test_arguments_and_stdin_keep_argument_order(run):
    result = predict(run, POS, "-", NEG, "--format", "jsonl", input="delightful\n\nweak\n")
    assert result.returncode == 0, result.stderr
    assert [r["text"] for r in records(result.stdout)] == [POS, "delightful", "", "weak", NEG]
    assert [r["label"] for r in records(result.stdout)][:2] == ["pos", "pos"]


def test_stdin_is_the_default_when_piped(run):
    result = predict(run, "--format", "label", input=f"{POS}\n{NEG}\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pos\nneg\n"


def test_several_input_files_and_dash(run, tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text(f"{POS}\n\n")
    b.write_text(f"{NEG}\nno final newline")
    result = predict(run, "--input", str(a), "--input", "-", "--input", str(b),
                     "--format", "jsonl", input="wonderful\n")
    assert result.returncode == 0, result.stderr
    assert [r["text"] for r in records(result.stdout)] == [POS, "", "wonderful", NEG,
                                                          "no final newline"]


def test_missing_input_file_is_a_user_error(run, tmp_path):
    result = predict(run, "--input", str(tmp_path / "nope.txt"))
    assert result.returncode == 2
    assert "input file not found" in result.stderr and "Traceback" not in result.stderr
    result = predict(run, "--input", str(tmp_path))
    assert result.returncode == 2 and "is a folder" in result.stderr


def test_input_from_a_pipe_and_a_byte_order_mark(run, tmp_path):
    """`--input <(...)` and `--input /dev/stdin` are pipes, not files, and fine; a BOM (Windows
    editors write one) is not part of the first text."""
    result = predict(run, "--input", "/dev/stdin", "--format", "jsonl",
                     input=f"\ufeff{POS}\n{POS}\n")
    assert result.returncode == 0, result.stderr
    first, second = records(result.stdout)
    assert first["text"] == second["text"] == POS
    assert first["probabilities"] == second["probabilities"]
    bom = tmp_path / "bom.tsv"
    bom.write_bytes(f"\ufefftext\n{NEG}\n".encode())
    result = predict(run, "--input", str(bom), "--input-format", "tsv", "--format", "label")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "neg\n"


def test_tsv_input_with_header_passes_the_id_through(run, tmp_path):
    data = tmp_path / "in.tsv"
    data.write_text(f"id\ttext\tother\nr1\t{POS}\tx\n\nr3\t{NEG}\ty\n")
    result = predict(run, "--input", str(data), "--input-format", "tsv", "--id-column", "id")
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(lines) == 3  # the header gives no output, the empty line does
    assert lines[0][:2] == ["r1", "pos"] and lines[1][0] == "" and lines[2][:2] == ["r3", "neg"]

    result = predict(run, "--input", str(data), "--input-format", "tsv", "--id-column", "id",
                     "--format", "label")
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [len(line) for line in lines] == [2, 2, 2]
    assert lines[0] == ["r1", "pos"] and lines[1][0] == "" and lines[2] == ["r3", "neg"]


def test_tsv_input_by_index_without_header(run):
    result = predict(run, "-", "--input-format", "tsv", "--text-column", "1", "--id-column",
                     "0", "--format", "jsonl", input=f"7\t{POS}\n8\t{NEG}\n")
    assert result.returncode == 0, result.stderr
    got = records(result.stdout)
    assert [(r["id"], r["text"], r["label"]) for r in got] == [("7", POS, "pos"),
                                                               ("8", NEG, "neg")]


def test_tsv_errors_name_the_line(run):
    result = predict(run, "-", "--input-format", "tsv", "--text-column", "review",
                     input="id\ttext\n1\tgreat\n")
    assert result.returncode == 2
    assert "<stdin>:1: the header has no column 'review'" in result.stderr
    result = predict(run, "-", "--input-format", "tsv", "--text-column", "2",
                     input="a\tb\tc\nonly one\n")
    assert result.returncode == 2
    assert "<stdin>:2: 1 tab-separated field(s)" in result.stderr
    assert len(result.stdout.splitlines()) == 1  # the line before the bad one was answered


def test_jsonl_input_keeps_id_types_and_empty_lines(run):
    lines = [json.dumps({"id": 12, "text": POS}), "", json.dumps({"id": "b", "text": NEG}),
             json.dumps({"text": None})]
    result = predict(run, "-", "--input-format", "jsonl", "--id-column", "id", "--format",
                     "jsonl", input="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    got = records(result.stdout)
    assert [r["id"] for r in got] == [12, None, "b", None]
    assert [r["text"] for r in got] == [POS, "", NEG, ""]
    assert list(got[0])[:2] == ["id", "text"]

    tsv = predict(run, "-", "--input-format", "jsonl", "--id-column", "id",
                  input="\n".join(lines) + "\n")
    assert [line.split("\t")[0] for line in tsv.stdout.splitlines()] == ["12", "", "b", ""]


def test_jsonl_errors_name_the_line(run):
    result = predict(run, "-", "--input-format", "jsonl",
                     input='{"text": "great"}\n{"text": broken\n')
    assert result.returncode == 2
    assert "<stdin>:2: not valid JSON" in result.stderr
    assert len(result.stdout.splitlines()) == 1
    result = predict(run, "-", "--input-format", "jsonl", input='{"review": "x"}\n')
    assert "<stdin>:1: no key 'text'" in result.stderr


def test_id_column_needs_a_structured_input(run):
    result = predict(run, "-", "--id-column", "id", input="x\n")
    assert result.returncode == 2
    assert "--id-column needs --input-format tsv or jsonl" in result.stderr


def test_parse_records_in_process():
    batches = [["name\tid", "hello\t1", ""], ["bye\t2"]]
    got = list(parse_records(iter(batches), "tsv", "name", "id"))
    assert got == [[("1", "hello"), (None, "")], [("2", "bye")]]
    with pytest.raises(UserError, match="f.jsonl:2: expected a JSON object"):
        list(parse_records(iter([['{"text": "a"}', "[1]"]]), "jsonl", source="f.jsonl"))


def test_jsonl_nested_keys_as_in_training():
    lines = ['{"meta": {"review": "fine", "id": 7}}', '{"meta.review": "dotted key", "meta": {}}',
             '{"meta": {"review": null}}']
    got = list(parse_records(iter([lines]), "jsonl", "meta.review", "meta.id"))
    assert got == [[(7, "fine"), (None, "dotted key"), (None, "")]]
    with pytest.raises(UserError, match=r"f.jsonl:1: no key 'meta.review'.*meta\.review"):
        list(parse_records(iter([['{"meta": {"text": "a"}}']]), "jsonl", "meta.review",
                           source="f.jsonl"))


# Alignment with empty and undecodable lines --------------------------------------------------

def test_empty_and_invalid_lines_keep_alignment(run):
    data = f"{POS}\n\n".encode() + b"bad \xff\xfe bytes\n\n" + f"{NEG}\n".encode()
    result = subprocess.run(
        [sys.executable, "-m", "bilstm_cli", "predict", "-", "--model", str(run),
         "--errors", "replace", "--format", "jsonl", "--batch-size", "2"],
        input=data, capture_output=True, cwd=run.parent)
    assert result.returncode == 0, result.stderr
    got = records(result.stdout.decode())
    assert len(got) == 5
    assert [r["text"] for r in got] == [POS, "", "bad \ufffd\ufffd bytes", "", NEG]

    result = subprocess.run(
        [sys.executable, "-m", "bilstm_cli", "predict", "-", "--model", str(run)],
        input=data, capture_output=True, cwd=run.parent)
    assert result.returncode == 2
    assert b"<stdin>:3: invalid UTF-8" in result.stderr and b"--errors replace" in result.stderr
    assert len(result.stdout.splitlines()) == 2  # every line before the bad one was answered
    assert b"Traceback" not in result.stderr


def test_invalid_utf8_in_a_file_names_file_and_line(run, tmp_path):
    data = tmp_path / "reviews.txt"
    data.write_bytes(b"fine\nalso fine\n\xc3\x28\n")
    result = predict(run, "--input", str(data))
    assert result.returncode == 2
    assert f"{data}:3: invalid UTF-8" in result.stderr


# Outputs ------------------------------------------------------------------------------------

def test_output_formats(run):
    tsv = predict(run, POS, NEG).stdout.splitlines()
    assert [line.split("\t")[0] for line in tsv] == ["pos", "neg"]
    assert all(len(line.split("\t")) == 2 for line in tsv)

    assert predict(run, POS, NEG, "--format", "label").stdout == "pos\nneg\n"

    top2 = predict(run, POS, "--top-k", "2").stdout.strip().split("\t")
    assert top2[0] == "pos" and top2[2] == "neg"
    assert abs(float(top2[1]) + float(top2[3]) - 1) < 1e-5

    full = predict(run, POS, "--probabilities").stdout.strip().split("\t")
    assert len(full) == 4 and full[0] == "pos"
    assert float(full[1]) == float(full[3])  # columns in label order: neg, pos
    assert abs(float(full[2]) + float(full[3]) - 1) < 1e-5
    assert predict(run, POS, "--format", "label", "--probabilities").stdout.count("\t") == 2

    record = records(predict(run, POS, "--format", "jsonl", "--top-k", "2").stdout)[0]
    assert set(record) == {"text", "label", "probability", "probabilities", "top_k"}
    assert [t["label"] for t in record["top_k"]] == ["pos", "neg"]

    clamped = predict(run, POS, "--top-k", "5")
    assert clamped.stdout.count("\t") == 3  # both labels, each with its probability
    assert "--top-k 5: the model has 2 labels, so each answer lists all 2" in clamped.stderr


def test_threshold(run):
    assert predict(run, NEG, "--threshold", "0", "--format", "label").stdout == "pos\n"
    assert predict(run, POS, "--threshold", "1", "--format", "label").stdout == "neg\n"
    three = SimpleNamespace(labels=["a", "b", "c"])
    with pytest.raises(UserError, match="--threshold needs a two-class model"):
        Classifier.decide(three, np.array([[0.2, 0.3, 0.5]]), 0.5)


# Streaming and pipes ------------------------------------------------------------------------

def _read_line(process, timeout=120.0):
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no answer before stdin was closed"
    return process.stdout.readline().decode()


def test_each_line_is_answered_before_stdin_closes(run):
    env = {k: v for k, v in os.environ.items() if k != "BILSTM_NATIVE_LOGS"}
    process = subprocess.Popen(
        # The default --batch-size (1024): a batch still goes out when no more input waits.
        [sys.executable, "-m", "bilstm_cli", "predict", "-", "--model", str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=run.parent, env=env, bufsize=0)  # unbuffered: select() sees every pending line
    try:
        process.stdin.write(f"{POS}\n".encode())
        process.stdin.flush()
        assert _read_line(process).startswith("pos\t")
        process.stdin.write(f"{NEG}\n\n".encode())
        process.stdin.flush()
        assert _read_line(process).startswith("neg\t")
        assert _read_line(process).count("\t") == 1  # the empty line, answered too
        process.stdin.close()
        assert process.wait(timeout=60) == 0
        assert process.stdout.read() == b""
    finally:
        process.kill()
        process.wait()


def test_head_ends_quietly(run):
    lines = "".join(f"great film {i}\n" for i in range(20000))
    command = (f"{sys.executable} -m bilstm_cli predict - --model {run} --batch-size 8 "
               "| head -1; echo \"status ${PIPESTATUS[0]}\" >&2")
    result = subprocess.run(["bash", "-c", command], input=lines, text=True,
                            capture_output=True, cwd=run.parent)
    assert result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert "Exception ignored" not in result.stderr
    assert "status 141" in result.stderr  # 128 + SIGPIPE, as for any Unix filter


# Engines ------------------------------------------------------------------------------------

def test_engines_agree_through_the_cli(run, tmp_path):
    texts = [POS, NEG, "", "zzz qqq", "Très émouvant ★ 映画", " ".join([POS, NEG] * 30)]
    texts += [" ".join(t for t, _ in toy_examples(3, seed=s)) for s in range(20)]
    stdin = "\n".join(texts) + "\n"
    onnx = predict(run, "-", "--format", "jsonl", "--engine", "onnx", input=stdin)
    tf = predict(run, "-", "--format", "jsonl", "--engine", "tf", input=stdin)
    assert onnx.returncode == 0 and tf.returncode == 0, onnx.stderr + tf.stderr
    assert "absl" not in tf.stderr and "I0000" not in tf.stderr  # TensorFlow's start-up chatter
    a, b = records(onnx.stdout), records(tf.stdout)
    assert len(a) == len(b) == len(texts)
    for x, y in zip(a, b):
        assert abs(x["probabilities"]["pos"] - y["probabilities"]["pos"]) <= 1.1e-5
        assert x["label"] == y["label"] or abs(x["probabilities"]["pos"] - 0.5) < 1e-5


def test_onnx_predict_from_stdin_never_imports_tensorflow(run):
    result = run_cli_without_tensorflow("predict", "-", "--model", str(run), cwd=run.parent,
                                        input=f"{POS}\n\n", also_imports=("onnxruntime",))
    assert len(result.stdout.splitlines()) == 2


def test_onnx_evaluate_never_imports_tensorflow(run, tmp_path):
    from conftest import write_jsonl

    data = write_jsonl(tmp_path / "test.jsonl", toy_examples(20, seed=6))
    result = run_cli_without_tensorflow("evaluate", "--model", str(run), "--data", str(data),
                                        "--json", cwd=tmp_path)
    assert json.loads(result.stdout)["examples"] == 20


def test_outdated_onnx_falls_back_to_tensorflow_with_a_warning(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    os.utime(copy / "model.onnx", (1, 1))
    result = predict(copy, POS, "--format", "label")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pos\n"
    assert "older than model.keras" in result.stderr and "bilstm export" in result.stderr


def test_run_without_model_onnx(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "model.onnx").unlink()
    result = predict(copy, POS, "--engine", "onnx")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model.onnx is missing" in result.stderr and "bilstm export" in result.stderr
    result = predict(copy, POS, "--format", "label")  # auto: TensorFlow, with a hint
    assert result.returncode == 0 and result.stdout == "pos\n"
    assert "has no model.onnx" in result.stderr and "bilstm export" in result.stderr


def test_evaluate_with_both_engines(run, tmp_path):
    from conftest import write_jsonl

    data = write_jsonl(tmp_path / "test.jsonl", toy_examples(40, seed=5))
    reports = []
    for engine in ("onnx", "tf"):
        result = run_cli("evaluate", "--model", str(run), "--data", str(data), "--json",
                         "--engine", engine, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        reports.append(json.loads(result.stdout))
    assert reports[0]["accuracy"] == reports[1]["accuracy"] > 0.8
    assert abs(reports[0]["loss"] - reports[1]["loss"]) < 1e-5
