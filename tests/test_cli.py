"""End to end through the command line, in real processes, as a user runs it."""

import json
import subprocess
import sys
import zipfile

from conftest import TINY, run_cli, run_cli_without_tensorflow


def test_help_and_version_do_not_import_tensorflow(tmp_path):
    assert "train" in run_cli_without_tensorflow("--help", cwd=tmp_path).stdout
    assert run_cli_without_tensorflow("--version", cwd=tmp_path).stdout.startswith("bilstm ")


def test_help_does_not_build_the_config_models(tmp_path):
    """`bilstm --help` is typed often: it imports no pydantic (the config's models take 0.2 s
    to build), nor NumPy."""
    from conftest import _MODULE_CHECK

    result = subprocess.run([sys.executable, "-c", _MODULE_CHECK, "pydantic,numpy", "",
                             "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_config_error_is_one_message_exit_2(tmp_path):
    result = run_cli("train", "--set", "model.unitz=3", "--set", "training.epochs=0",
                     cwd=tmp_path)
    assert result.returncode == 2
    assert "model.unitz: unknown key (did you mean model.units?)" in result.stderr
    assert "training.epochs" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_option_errors_name_the_option(tmp_path):
    result = run_cli("train", "--epochs", "0", "--dry-run", cwd=tmp_path)
    assert result.returncode == 2 and "training.epochs: " in result.stderr
    assert "[--epochs]" in result.stderr
    result = run_cli("train", "--resume", "nope", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot resume nope: it does not exist (give a run folder" in result.stderr
    (tmp_path / "file.tsv").write_text("x\n")
    result = run_cli("runs", "file.tsv", cwd=tmp_path)
    assert result.returncode == 2 and "file.tsv is a file" in result.stderr
    result = run_cli("train", "--output", "file.tsv/runs", cwd=tmp_path)  # before the data loads
    assert result.returncode == 2 and "file.tsv is a file, not a folder" in result.stderr
    assert "imdb" not in result.stderr


def test_dry_run_prints_config_and_summary(toy_files, tmp_path):
    result = run_cli("train", "--dry-run", "--set", "data.dataset=null",
                     "--set", f"data.train={toy_files['train']}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bidirectional: false" in result.stdout
    assert "| train" in result.stdout and "216" in result.stdout  # 240 - 10% validation
    assert not (tmp_path / "runs").exists()


def test_train_writes_a_complete_run_folder(trained_run):
    for name in ("model.keras", "tokenizer.json", "labels.json", "config.yaml", "history.csv",
                 "metrics.json", "run.json"):
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test"]["examples"] == 60
    assert metrics["test"]["accuracy"] > 0.8  # the toy task is easy
    history = (trained_run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy")
    assert len(history) == 1 + metrics["epochs_run"]
    assert json.loads((trained_run / "labels.json").read_text()) == {"labels": ["neg", "pos"]}


def test_predict_arguments_stdin_and_alignment(trained_run, tmp_path):
    result = run_cli("predict", "--model", str(trained_run), "superb brilliant film",
                     "awful dull plot", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["pos", "neg"]
    assert 0.5 <= float(lines[0].split("\t")[1]) <= 1.0

    stdin = "great movie\n\nterrible boring\n\n\nwonderful\n"
    result = run_cli("predict", "-", "--model", str(trained_run), "--batch-size", "2",
                     "--format", "jsonl", cwd=tmp_path, input=stdin)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == stdin.splitlines()
    assert records[0]["label"] == "pos" and records[2]["label"] == "neg"
    assert set(records[0]["probabilities"]) == {"neg", "pos"}


def test_predict_input_file_label_format_and_latest(trained_run, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("delightful\nweak tedious\n")
    runs = trained_run.parent
    result = run_cli("predict", "--input", str(texts), "--format", "label", "--top-k", "2",
                     cwd=runs.parent)  # --model defaults to runs/latest
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pos\tneg\nneg\tpos\n"  # the top 2 labels, most probable first


def test_predict_without_a_model_is_a_user_error(tmp_path):
    result = run_cli("predict", "hello", cwd=tmp_path)
    assert result.returncode == 2
    assert "no trained model at runs/latest" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_broken_pipe_is_quiet(trained_run, tmp_path):
    lines = "".join(f"great film {i}\n" for i in range(3000))
    command = (f"{sys.executable} -m bilstm_cli predict - --model {trained_run} "
               "--batch-size 1 | head -1")
    result = subprocess.run(["bash", "-c", command], input=lines, text=True,
                            capture_output=True, cwd=tmp_path)
    assert result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_evaluate_tables_and_json(trained_run, toy_files, tmp_path):
    result = run_cli("evaluate", "--model", str(trained_run), "--data",
                     str(toy_files["test_jsonl"]), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert report["examples"] == 60
    assert report["accuracy"] == metrics["test"]["accuracy"]  # same texts as test.tsv
    assert report["confusion_matrix"] == metrics["test"]["confusion_matrix"]

    result = run_cli("evaluate", "--model", str(trained_run), "--data",
                     str(toy_files["test"]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "confusion matrix" in result.stdout
    assert "weighted avg" in result.stdout


def test_evaluate_warns_on_the_training_data(trained_run, toy_files, tmp_path):
    # the same file by another path (relative, from its folder) is still the training file
    result = run_cli("evaluate", "--model", str(trained_run), "--data", "train.tsv",
                     cwd=toy_files["folder"])
    assert result.returncode == 0, result.stderr
    assert "train.tsv is the data this model was trained on" in result.stderr
    assert f"the run's test data is {toy_files['test']}" in result.stderr
    assert "accuracy" in result.stdout

    result = run_cli("evaluate", "--model", str(trained_run), "--data",
                     str(toy_files["test"]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trained on" not in result.stderr


def test_evaluate_unknown_label_is_a_user_error(trained_run, tmp_path):
    data = tmp_path / "odd.tsv"
    data.write_text("text\tlabel\ngreat\tmaybe\n")
    result = run_cli("evaluate", "--model", str(trained_run), "--data", str(data), cwd=tmp_path)
    assert result.returncode == 2
    assert "'maybe' are not among the model's labels" in result.stderr


def test_multiclass_unidirectional_training(toy_files, tmp_path):
    from conftest import toy_examples, write_jsonl

    data = write_jsonl(tmp_path / "three.jsonl", toy_examples(150, seed=4, classes=3))
    result = run_cli("train", "--unidirectional", *TINY, "--set", f"data.train={data}",
                     "--set", "model.pooling=mean", "--set", "training.tensorboard=true",
                     "--output", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    logs = list((tmp_path / "runs" / "latest" / "tensorboard").rglob("events.out.tfevents.*"))
    assert logs, "training.tensorboard writes TensorBoard event files into the run folder"
    assert "validation accuracy" in result.stdout
    result = run_cli("predict", "okay average", "--model", str(tmp_path / "runs" / "latest"),
                     "--format", "jsonl", cwd=tmp_path)
    record = json.loads(result.stdout)
    assert set(record["probabilities"]) == {"meh", "neg", "pos"}
    assert abs(sum(record["probabilities"].values()) - 1) < 1e-4


def test_consistency_training_saves_the_plain_model(toy_files, tmp_path):
    """training.consistency (R-Drop) trains through the CLI, class weights included, and the run
    is the plain functional model that both engines predict alike."""
    result = run_cli("train", "--bidirectional", *TINY, "--set", f"data.train={toy_files['train']}",
                     "--set", "training.consistency=1.0", "--set", "training.class_weight=balanced",
                     "--output", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "latest"
    with zipfile.ZipFile(run_dir / "model.keras") as saved:
        assert json.loads(saved.read("config.json"))["class_name"] == "Functional"
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 5  # a header and 4 epochs
    probabilities = []
    for engine in ("onnx", "tf"):
        result = run_cli("predict", "a fine film", "--model", str(run_dir), "--format", "jsonl",
                         "--engine", engine, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        probabilities.append(json.loads(result.stdout)["probabilities"])
    for label in probabilities[0]:
        assert abs(probabilities[0][label] - probabilities[1][label]) < 1e-5


def test_accuracy_keys_train_and_predict_alike_in_both_engines(toy_files, tmp_path):
    """The keys tried for issue 6, end to end: the ONNX model and the Keras one read the same
    pieces, and an adversarially trained model is saved as the plain functional model."""
    result = run_cli("train", "--bidirectional", *TINY, "--set", f"data.train={toy_files['train']}",
                     "--set", "data.tokenizer=wordpiece", "--set", "model.pooling=max_mean",
                     "--set", "training.lr_schedule=cosine", "--set", "training.adversarial=0.5",
                     "--set", "training.consistency=0",
                     "--set", "model.word_dropout=0.1",
                     "--output", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "latest"
    with zipfile.ZipFile(run_dir / "model.keras") as saved:
        saved_config = json.loads(saved.read("config.json"))
        assert saved_config["class_name"] == "Functional"
        # Keras' own layers and ops (the mask), and our two small layers: no speed-up or
        # regularizer is saved.
        kinds = {(layer["module"], layer["class_name"])
                 for layer in saved_config["config"]["layers"]}
        ours = {("bilstm_cli.model", "WordDropout"),
                ("bilstm_cli.model", "MaskedGlobalMaxPooling1D")}
        assert all(module.startswith("keras.") for module, _ in kinds - ours), kinds
        assert ("keras.layers", "LSTM") not in kinds  # inside Bidirectional
        assert ("keras.layers", "Embedding") in kinds
        assert "optimizer" not in saved.read("model.weights.h5").decode("latin-1")
    tokenizer = json.loads((run_dir / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "WordPiece"
    outputs = {}
    for engine in ("onnx", "tf"):
        result = run_cli("predict", "a wonderfulish film", "unseenword", "--model", str(run_dir),
                         "--format", "jsonl", "--engine", engine, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        outputs[engine] = [json.loads(line)["probabilities"] for line in result.stdout.splitlines()]
    for onnx, keras in zip(outputs["onnx"], outputs["tf"], strict=True):
        for label in onnx:
            assert abs(onnx[label] - keras[label]) < 1e-5
