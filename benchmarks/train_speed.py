"""Training speed: the Keras BiLSTM script this tool grew from vs `bilstm train`, same data.

    BILSTM_DATA_DIR=../shared/data python benchmarks/train_speed.py [--examples N] [--repeats R]

One after the other, each in its own process (so peak memory is its own):
  (a) the reference: Embedding(10,000, 128) -> Bidirectional(LSTM(64)) -> Dropout(0.5) ->
      Dense(1, sigmoid), texts cut and padded to 200 tokens (Keras' `pad_sequences`: pre-padding,
      no mask), batch 128, Adam, two epochs, each followed by validation;
  (b) `bilstm train --bidirectional` with the same sizes (vocabulary 10,000, 200 tokens, units 64,
      embedding 128, batch 128, two epochs, last-state pooling, no word or embedding dropout,
      Adam's default learning rate 0.001: the reference's model and training), as a user runs it.
Both read the same IMDB training split (the 90% that `bilstm` trains on) through the same
tokenizer. It reports, per epoch, examples/s (training only), seconds, validation seconds and
accuracy, then peak RSS, the ratios b/a, and the share of this machine's CPU float32 matmul peak
(measured here, once, through NumPy) that each achieves; where TensorFlow trains on a GPU that
share says nothing, and examples/s and seconds are the numbers to read. The second epoch is the
steady state: the first also pays for tracing the training graph (once for (a), a few times for
(b), whose batches vary in length).

`--baseline SRC` adds (c): the same `bilstm train` from another checkout's source folder (e.g. a
`git worktree` of an older commit, run with PYTHONPATH=SRC), alternated with (b) in every repeat,
and the ratio b/c: a change's effect on training speed, both sides measured in the same run.
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

UNITS, EMBEDDING, VOCAB, LENGTH, BATCH, EPOCHS = 64, 128, 10_000, 200, 128, 2


def macs_per_example(steps: float, directions: int = 2) -> float:
    """Multiply-adds of one example through the LSTM, forward and backward pass.

    Each step of one direction costs 4 gates x units x (inputs + units) multiply-adds forward;
    the backward pass costs about twice the forward (gradients for inputs and for weights).
    The embedding lookup and the dense head are negligible next to it.
    """
    forward = steps * directions * 4 * UNITS * (EMBEDDING + UNITS)
    return 3 * forward


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul rate (large sgemm through NumPy's BLAS), best of a few."""
    import numpy as np

    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = np.random.default_rng(1).random((size, size), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def load_training_ids(examples: int | None, test: bool = False):
    """IMDB's training split as `bilstm` holds it out (seed 42), tokenized by its tokenizer:
    train ids and labels, validation ids and labels (then test's, with `test`)."""
    from bilstm_cli.config import load_config
    from bilstm_cli.data import load_splits
    from bilstm_cli.text import build_tokenizer, encode

    config = load_config(None, [f"data.max_tokens={VOCAB}", f"data.max_length={LENGTH}",
                                "data.validation_by=text"]
                         + ([f"data.max_examples={examples}"] if examples else []))
    splits = load_splits(config.data, config.training.seed)
    tokenizer = build_tokenizer(splits.train.texts, VOCAB, max_length=LENGTH)
    def labels(dataset):
        return [1.0 if label == "positive" else 0.0 for label in dataset.labels]

    kept = [splits.train, splits.validation] + ([splits.test] if test else [])
    return tuple(part for dataset in kept
                 for part in (encode(tokenizer, dataset.texts), labels(dataset)))


def reference_model():
    """The reference's model, compiled as the script compiles it."""
    import keras

    keras.utils.set_random_seed(42)
    model = keras.Sequential([
        keras.Input(shape=(None,), dtype="int32"),
        keras.layers.Embedding(VOCAB, EMBEDDING),
        keras.layers.Bidirectional(keras.layers.LSTM(UNITS)),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    return model


def reference_child(examples: int | None) -> dict:
    """(a): the plain Keras script, written out as people write it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    x_train, y_train, x_val, y_val = load_training_ids(examples)
    x_train = keras.utils.pad_sequences(x_train, maxlen=LENGTH)
    x_val = keras.utils.pad_sequences(x_val, maxlen=LENGTH)
    y_train, y_val = np.array(y_train), np.array(y_val)

    model = reference_model()

    class EpochTimes(keras.callbacks.Callback):
        """Training seconds per epoch (to its last batch) and validation seconds after it."""

        def on_train_begin(self, logs=None):
            self.epochs: list[dict] = []
            self.step_seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = self.last = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.step_seconds.append(now - self.last)
            self.last = now

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append({
                "train_seconds": self.last - self.start,
                "validation_seconds": time.perf_counter() - self.last,
                "validation_accuracy": logs["val_accuracy"],
            })

    times = EpochTimes()
    model.fit(x_train, y_train, batch_size=BATCH, epochs=EPOCHS, callbacks=[times],
              validation_data=(x_val, y_val), verbose=0)
    steps = len(times.step_seconds) // EPOCHS
    steady = times.step_seconds[steps + 1:] or times.step_seconds
    return {
        "examples": len(x_train),
        "epochs": [dict(epoch, examples_per_second=len(x_train) / epoch["train_seconds"])
                   for epoch in times.epochs],
        "median_step_ms": 1000 * statistics.median(steady),
        "mean_steps": float(LENGTH),
    }


def bilstm_command(examples: int | None, output: Path, epochs: int = EPOCHS) -> list[str]:
    """`bilstm train` with the reference's model and training: every extra off."""
    return [
        sys.executable, "-m", "bilstm_cli", "train", "--bidirectional", "--epochs", str(epochs),
        "--batch-size", str(BATCH), "--output", str(output),
        "--set", f"data.max_tokens={VOCAB}", "--set", f"data.max_length={LENGTH}",
        "--set", f"model.units={UNITS}", "--set", f"model.embedding_dim={EMBEDDING}",
        "--set", "model.pooling=last", "--set", "model.layers=1",
        "--set", "model.word_dropout=0", "--set", "model.embedding_dropout=0",
        "--set", "training.learning_rate=0.001", "--set", "training.lr_schedule=constant",
        "--set", "data.tokenizer=word", "--set", "data.validation_by=text",
        "--set", "training.adversarial=0",
        "--set", "training.consistency=0",
        "--set", "model.ensemble=1",
        "--set", "model.embedding_init=random",  # as the script's: like for like at equal epochs
        "--set", "output.name=speed",
    ] + (["--set", f"data.max_examples={examples}"] if examples else [])


def bilstm_child(examples: int | None, output: Path) -> dict:
    """(b): `bilstm train` through its CLI, with the reference's sizes."""
    import csv

    import numpy as np

    command = bilstm_command(examples, output)
    finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    if finished.returncode != 0:
        raise SystemExit(f"bilstm train failed:\n{finished.stderr}")
    run = output / "latest"
    rows = list(csv.DictReader(open(run / "history.csv")))
    train_ids, _, _, _ = load_training_ids(examples)
    return {
        "examples": len(train_ids),
        "epochs": [{
            "train_seconds": float(row["train_seconds"]),
            "examples_per_second": float(row["examples_per_second"]),
            "validation_seconds": float(row["validation_seconds"]),
            "validation_accuracy": float(row["val_accuracy"]),
        } for row in rows],
        # Bucketing trims each batch to its longest text: the LSTM runs this many steps on average.
        "mean_steps": float(np.mean([min(len(x), LENGTH) for x in train_ids])),
    }


def run_child(kind: str, examples: int | None, output: Path, source: Path | None = None) -> dict:
    """Run one side in a fresh process and read its peak RSS from the kernel. `source`: the
    bilstm_cli package's folder to run `bilstm train` from (default: the installed one)."""
    command = [sys.executable, __file__, "--child", kind, "--output", str(output)]
    if examples:
        command += ["--examples", str(examples)]
    env = {**os.environ, "PYTHONPATH": str(source)} if source else None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{kind} failed (status {status})")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=None,
                        help="cap the training split (default: all 22,500)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side (median)")
    parser.add_argument("--markdown", type=Path, help="append the result table to this file")
    parser.add_argument("--baseline", type=Path,
                        help="also run (c): `bilstm train` from this source folder, alternated")
    parser.add_argument("--child", choices=["reference", "bilstm"], help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "reference":
        print(json.dumps(reference_child(args.examples)))
        return
    if args.child == "bilstm":
        print(json.dumps(bilstm_child(args.examples, args.output)))
        return

    peak = matmul_gflops()
    print(f"CPU float32 matmul peak (NumPy): {peak:.0f} GFLOP/s", file=sys.stderr)
    kinds = ["reference", "bilstm"] + (["baseline"] if args.baseline else [])
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            # (b) and (c) swap places every repeat, so neither always runs on a warmer machine.
            order = kinds if repeat % 2 == 0 else kinds[:1] + kinds[1:][::-1]
            for kind in order:
                print(f"run {repeat + 1}/{args.repeats}: {kind} ...", file=sys.stderr)
                result = run_child("bilstm" if kind == "baseline" else kind, args.examples,
                                   Path(scratch) / f"{kind}-{repeat}",
                                   args.baseline if kind == "baseline" else None)
                results[kind].append(result)
                print(json.dumps(result), file=sys.stderr)

    def median(kind: str, key: str, epoch: int | None = None) -> float:
        return statistics.median(
            r[key] if epoch is None else r["epochs"][epoch][key] for r in results[kind])

    lines = [
        "| | epoch | examples/s | train s | validation s | val acc | peak RSS MB | "
        "LSTM steps/example | achieved GFLOP/s | share of peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {"reference": "(a) Keras reference", "bilstm": "(b) bilstm train",
             "baseline": f"(c) bilstm train from {args.baseline}"}
    for kind in kinds:
        name = names[kind]
        steps = median(kind, "mean_steps")
        for epoch in range(EPOCHS):
            rate = median(kind, "examples_per_second", epoch)
            achieved = rate * macs_per_example(steps) * 2 / 1e9
            lines.append(
                f"| {name} | {epoch + 1} | {rate:.0f} | "
                f"{median(kind, 'train_seconds', epoch):.1f} | "
                f"{median(kind, 'validation_seconds', epoch):.1f} | "
                f"{median(kind, 'validation_accuracy', epoch):.4f} | "
                f"{median(kind, 'peak_rss_mb'):.0f} | {steps:.0f} | {achieved:.1f} | "
                f"{achieved / peak:.1%} |"
            )

    def ratio(epoch: int, against: str = "reference") -> float:
        return (median("bilstm", "examples_per_second", epoch)
                / median(against, "examples_per_second", epoch))

    lines += [
        "",
        f"- ratio b/a, examples/s in the steady state (epoch {EPOCHS}): "
        f"**{ratio(EPOCHS - 1):.2f}x**; in epoch 1 (with tracing): {ratio(0):.2f}x",
        f"- reference: {median('reference', 'median_step_ms'):.0f} ms/step (median of its "
        f"epoch-{EPOCHS} steps)",
        f"- CPU matmul peak (NumPy) measured in this run: {peak:.0f} GFLOP/s; a full-length "
        f"example costs {macs_per_example(LENGTH) * 2 / 1e6:.0f} MFLOP (forward + backward, "
        "both directions)",
        f"- {args.repeats} run(s) of each side, medians; training examples: "
        f"{results['reference'][0]['examples']}",
    ]
    if args.baseline:
        pairs = [b["epochs"][-1]["examples_per_second"] / c["epochs"][-1]["examples_per_second"]
                 for b, c in zip(results["bilstm"], results["baseline"])]
        lines.append(f"- ratio b/c (this code against {args.baseline}), examples/s in epoch "
                     f"{EPOCHS}: **{ratio(EPOCHS - 1, 'baseline'):.3f}x** (pairs: "
                     + ", ".join(f"{r:.3f}x" for r in pairs) + ")")
    emit("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
