"""A short job end to end: one epoch of the seed's model on IMDB, whole process against whole
process, the seed Keras script against `bilstm train`.

    BILSTM_DATA_DIR=../shared/data python benchmarks/short_job.py [--repeats R] [--examples N]

(a) the seed script (train_speed.py's reference: Embedding(10,000, 128) -> Bidirectional(LSTM(64))
    -> Dropout(0.5) -> Dense(1, sigmoid), 200 pre-padded tokens, batch 128, Adam): it reads
    IMDB, tokenizes, trains one epoch with validation, then scores the 25,000 test reviews;
(b) `bilstm train --bidirectional --epochs 1` with the same model and training, every extra off
    (train_speed.py's command), which also validates, scores the test reviews and exports ONNX.
Each is a fresh process, timed from the shell to its exit. (b) runs first on an empty data
cache (a temporary BILSTM_CACHE_DIR sharing the compiled kernel), then on the filled one: its
first run and a later one. (a) and (b) alternate. Each side's stderr (b) or its own clock (a)
splits the seconds: until the data is ready, until training starts (TensorFlow's import, the
model), the epoch, and the rest (the final evaluation, the export, the exit).
Goal (issue 31): (b) at least 1.6x faster than (a) whole process against whole process (aim 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import emit  # benchmarks/report.py

sys.path.insert(0, str(Path(__file__).parent))
import train_speed  # noqa: E402 - the reference script and the like-for-like command

# (b)'s stderr lines that end a phase: the summary table (data ready), the run folder
# (TensorFlow imported, training set up), the epoch's line (trained).
MARKS = (("data", "| train"), ("start-up", "run folder:"), ("epoch", "epoch 1/1"))


def reference_child(examples: int | None) -> dict:
    """(a): the seed script, one epoch, then the test set; its own clock for the phases."""
    started = time.perf_counter()
    x_train, y_train, x_val, y_val, x_test, y_test = train_speed.load_training_ids(examples,
                                                                                    test=True)
    data = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    pad = keras.utils.pad_sequences
    x_train, x_val, x_test = (pad(x, maxlen=train_speed.LENGTH) for x in (x_train, x_val, x_test))
    model = train_speed.reference_model()
    fit_started = time.perf_counter()
    model.fit(x_train, np.array(y_train), batch_size=train_speed.BATCH, epochs=1,
              validation_data=(x_val, np.array(y_val)), verbose=0)
    fitted = time.perf_counter()
    _, accuracy = model.evaluate(x_test, np.array(y_test), batch_size=train_speed.BATCH,
                                 verbose=0)
    return {"data": data - started, "start-up": fit_started - data, "epoch": fitted - fit_started,
            "test_accuracy": accuracy, "examples": len(x_train)}


def run_reference(examples: int | None) -> dict:
    """(a) in a fresh process; what its clock did not see (the interpreter's start, the test
    set, the exit) is the rest."""
    command = [sys.executable, __file__, "--child"] + (
        ["--examples", str(examples)] if examples else [])
    started = time.perf_counter()
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    result["whole"] = time.perf_counter() - started
    return _with_rest(result)


def run_bilstm(examples: int | None, output: Path, cache: Path) -> dict:
    command = train_speed.bilstm_command(examples, output, epochs=1)
    env = {**os.environ, "BILSTM_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    assert process.stderr is not None and process.stdout is not None
    marks: dict[str, float] = {}
    for line in process.stderr:
        for phase, start in MARKS:
            if phase not in marks and line.lstrip("|│ ").startswith(start.lstrip("| ")):
                marks[phase] = time.perf_counter() - started
    stdout = process.stdout.read()
    if process.wait() != 0:
        raise SystemExit(f"bilstm train failed ({process.returncode})")
    whole = time.perf_counter() - started
    accuracy = next((float(line.split()[-1]) for line in stdout.splitlines()
                     if line.startswith("test accuracy")), float("nan"))
    at = [marks.get(phase, float("nan")) for phase, _ in MARKS]
    return _with_rest({"data": at[0], "start-up": at[1] - at[0], "epoch": at[2] - at[1],
                       "whole": whole, "test_accuracy": accuracy})


def _with_rest(result: dict) -> dict:
    result["rest"] = result["whole"] - result["data"] - result["start-up"] - result["epoch"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side (median)")
    parser.add_argument("--examples", type=int, default=None,
                        help="cap the training split (a quick check of the script)")
    parser.add_argument("--markdown", type=Path, help="append the result table to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(reference_child(args.examples)))
        return

    user_cache = Path(os.environ.get("BILSTM_CACHE_DIR") or
                      Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                      / "bilstm")
    results: dict[str, list[dict]] = {"reference": [], "first": [], "later": []}
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        cache.mkdir()
        if (user_cache / "kernels").is_dir():
            (cache / "kernels").symlink_to(user_cache / "kernels")
        for repeat in range(args.repeats):
            for side in (("reference", "bilstm") if repeat % 2 == 0 else ("bilstm", "reference")):
                if side == "reference":
                    result = run_reference(args.examples)
                else:
                    kind = "first" if not results["first"] else "later"
                    result = run_bilstm(args.examples, Path(scratch) / f"runs-{repeat}", cache)
                    side = kind
                results[side].append(result)
                print(f"{side}: " + json.dumps({k: round(v, 2) for k, v in result.items()
                                                 if isinstance(v, float)}), file=sys.stderr)
        if args.repeats == 1:  # a second bilstm run, so that "later" has one
            results["later"].append(run_bilstm(args.examples, Path(scratch) / "runs-x", cache))

    names = {"reference": "(a) seed Keras script", "first": "(b) bilstm train, first run "
             "(empty data cache)", "later": "(b) bilstm train, a later run (data cached)"}
    phases = ("data", "start-up", "epoch", "rest", "whole")
    lines = ["| | " + " | ".join(f"{p} s" for p in phases) + " | test accuracy | a/b |",
             "| --- |" + " --- |" * (len(phases) + 2)]
    reference = statistics.median(r["whole"] for r in results["reference"])
    for side, runs in results.items():
        cells = [f"{statistics.median(r[p] for r in runs):.1f}" for p in phases]
        whole = statistics.median(r["whole"] for r in runs)
        accuracy = statistics.median(r["test_accuracy"] for r in runs)
        ratio = "" if side == "reference" else f"**{reference / whole:.2f}x**"
        lines.append(f"| {names[side]} ({len(runs)} run(s)) | " + " | ".join(cells)
                     + f" | {accuracy:.4f} | {ratio} |")
    lines += ["", "Medians. data: to the tokenized data (b: the data summary); start-up: "
              "TensorFlow's import and the model, to the first step; epoch: one epoch with its "
              "validation; rest: (a) the test set, the exit; (b) the final evaluation of "
              "validation and test, the ONNX export, the exit."]
    emit("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
