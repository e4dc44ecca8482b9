"""The default recipe on many data sets, beside the peers people reach for instead.

    BILSTM_DATA_DIR=../shared/data python benchmarks/suite.py [FOLDER ...] [--builtin imdb sst2]
        [--seeds 42 43 44] [--unidirectional] [--set KEY=VALUE ...] [--no-peers]
        [--validation-only | --holdout FRACTION] [--markdown FILE]

Each FOLDER holds `train.tsv` and `test.tsv` (headered `text<TAB>label`); without folders, every
sub-folder of $BILSTM_DATA_DIR/suite. For each data set and seed it runs, as a user would,

    bilstm train --set data.train=FOLDER/train.tsv --set data.test=FOLDER/test.tsv \\
        --bidirectional --seed SEED [--set KEY=VALUE ...]

the README's way to train on your own files, so the recipe under test is what a user gets: the
defaults (configs/reference.yaml), with any --set given here.
`--builtin imdb sst2` adds `bilstm train -c imdb|sst2 --bidirectional --seed SEED` (15 and 5
minutes here). Settings are chosen on validation, so the test split is read only for this table;
`--validation-only` leaves the test files out of the runs (for choosing settings), and
`--holdout 0.2` tests on a fifth of each training file instead of its test file, training on the
rest (the same fifth every time; peers included): held-out accuracy for choosing settings,
unlike the validation accuracy of the epoch chosen on it.

Peers, trained and scored in the same run on the same train/test files (the optional `bench`
extra: pip install -e '.[bench]'): fastText (10 epochs; unigrams, and with bigrams) and TF-IDF
of word 1-2 grams (sublinear tf) with scikit-learn's logistic regression (C=4), as in
$BILSTM_DATA_DIR/suite/README.md. Without them installed the table says so.

The table: test accuracy and macro-F1 (mean over seeds, each seed's accuracy), training minutes
(all epochs and members, from metrics.json) and the whole command's wall time, then the peers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import emit  # benchmarks/report.py

csv.field_size_limit(1 << 30)


def read_tsv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def train_bilstm(data: str | Path, seed: int, bidirectional: bool, overrides: list[str],
                 output: Path, test: bool = True) -> dict:
    """One `bilstm train` in its own process; its metrics and times. Without `test`, the test
    file is not given to it (choosing settings: the run reads only train and validation)."""
    if isinstance(data, Path):
        command = ["--set", f"data.train={data / 'train.tsv'}"]
        command += ["--set", f"data.test={data / 'test.tsv'}"] if test else []
    else:
        command = ["-c", data]
    command = [sys.executable, "-m", "bilstm_cli", "train", *command,
               "--bidirectional" if bidirectional else "--unidirectional",
               "--seed", str(seed), "--output", str(output),
               *(item for o in overrides for item in ("--set", o))]
    start = time.perf_counter()
    finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")
    metrics = json.loads((output / "latest" / "metrics.json").read_text())
    test = metrics["test"] or {"accuracy": float("nan"), "macro_avg": {"f1": float("nan")}}
    return {"accuracy": test["accuracy"], "macro_f1": test["macro_avg"]["f1"],
            "validation": metrics["validation"]["accuracy"],
            "training_minutes": metrics["training_seconds"] / 60,
            "epochs": [(m["best_epoch"], m["epochs_run"])
                       for m in metrics.get("members") or [metrics]],
            "wall": time.perf_counter() - start}


def fasttext_accuracy(folder: Path, bigrams: bool, seed: int, scratch: Path) -> float | None:
    try:
        import fasttext
    except ImportError:
        return None
    train = scratch / "fasttext-train.txt"
    rows = list(zip(*read_tsv(folder / "train.tsv")))
    # fastText reads its file in order: a file sorted by label (IMDB's folders, written out
    # class by class) left it at 0.50 on IMDB. Shuffled with the seed, as our runs are.
    random.Random(seed).shuffle(rows)
    with open(train, "w", encoding="utf-8") as handle:
        for text, label in rows:
            handle.write(f"__label__{label} {text.lower()}\n")
    model = fasttext.train_supervised(str(train), epoch=10, wordNgrams=2 if bigrams else 1,
                                      seed=seed, thread=1, verbose=0)
    texts, labels = read_tsv(folder / "test.tsv")
    # A list in one call: fastText's one-text path breaks on NumPy 2 (np.array(copy=False)).
    labels_out = model.predict([t.lower() for t in texts])[0]
    predicted = [found[0].removeprefix("__label__") for found in labels_out]
    return statistics.mean(p == y for p, y in zip(predicted, labels))


def tfidf_accuracy(folder: Path) -> float | None:
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None
    train_texts, train_labels = read_tsv(folder / "train.tsv")
    test_texts, test_labels = read_tsv(folder / "test.tsv")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(C=4.0, max_iter=2000)
    model.fit(vectorizer.fit_transform(train_texts), train_labels)
    return float(model.score(vectorizer.transform(test_texts), test_labels))


def hold_out(folder: Path, fraction: float, scratch: Path) -> Path:
    """A folder whose test.tsv is `fraction` of FOLDER/train.tsv (shuffled with a fixed seed) and
    whose train.tsv is the rest: a test set for choosing settings that is not the real one."""
    texts, labels = read_tsv(folder / "train.tsv")
    rows = list(zip(texts, labels))
    random.Random(7).shuffle(rows)
    cut = int(len(rows) * fraction)
    target = scratch / "holdout" / folder.name
    target.mkdir(parents=True)
    for name, part in (("test.tsv", rows[:cut]), ("train.tsv", rows[cut:])):
        with open(target / name, "w", encoding="utf-8") as handle:
            handle.write("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part))
    return target


def peers(folder: Path, seeds: list[int], scratch: Path) -> dict[str, float | None]:
    def mean(values: list[float | None]) -> float | None:
        return None if None in values else statistics.mean(values)  # type: ignore[arg-type]

    return {
        "fastText": mean([fasttext_accuracy(folder, False, s, scratch) for s in seeds]),
        "fastText bigrams": mean([fasttext_accuracy(folder, True, s, scratch) for s in seeds]),
        "TF-IDF + LR": tfidf_accuracy(folder),
    }


def row(name: str, runs: list[dict], peer: dict[str, float | None]) -> str:
    def cell(key: str) -> str:
        if key not in peer:
            return "-"  # a built-in: its peers are in benchmarks/RESULTS.md
        value = peer[key]
        return "not installed" if value is None else f"{value:.3f}"

    accuracy = statistics.mean(r["accuracy"] for r in runs)
    seeds = " / ".join(f"{r['accuracy']:.3f}" for r in runs)
    best_peer = max((v for v in peer.values() if v is not None), default=None)
    ahead = "" if best_peer is None else (" ahead" if accuracy > best_peer else " behind")
    return (f"| {name} | **{accuracy:.4f}** ({seeds}){ahead} | "
            f"{statistics.mean(r['macro_f1'] for r in runs):.4f} | "
            f"{statistics.mean(r['validation'] for r in runs):.4f} | "
            f"{max(r['training_minutes'] for r in runs):.1f} | "
            f"{max(r['wall'] for r in runs) / 60:.1f} | "
            + " | ".join(cell(k) for k in ("fastText", "fastText bigrams", "TF-IDF + LR"))
            + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="*")
    parser.add_argument("--builtin", nargs="*", default=[], choices=["imdb", "sst2"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--unidirectional", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-peers", action="store_true")
    choosing = parser.add_mutually_exclusive_group()
    choosing.add_argument("--validation-only", action="store_true",
                          help="choosing settings: leave out the test files (and the peers)")
    choosing.add_argument("--holdout", type=float, metavar="FRACTION",
                          help="choosing settings: test on this fraction of each train.tsv, "
                               "train on the rest (the real test files unread)")
    parser.add_argument("--markdown", type=Path, help="append the table to this file")
    args = parser.parse_args()
    folders = args.folders
    if not folders and not args.builtin:
        suite = Path(os.environ.get("BILSTM_DATA_DIR", "../shared/data")) / "suite"
        folders = sorted(p for p in suite.iterdir() if (p / "train.tsv").is_file())
    lines = ["| data set | test accuracy (per seed) | macro-F1 | validation | training min "
             "| wall min | fastText | fastText bigrams | TF-IDF + LR |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as scratch:
        if args.holdout:
            folders = [hold_out(f, args.holdout, Path(scratch)) for f in folders]
        for data in [*folders, *args.builtin]:
            name = data.name if isinstance(data, Path) else data
            runs = []
            for seed in args.seeds:
                runs.append(train_bilstm(data, seed, not args.unidirectional, args.overrides,
                                         Path(scratch) / f"{name}-{seed}",
                                         test=not args.validation_only))
                print(name, seed, json.dumps(runs[-1]), file=sys.stderr, flush=True)
            found = ({} if args.no_peers or args.validation_only or not isinstance(data, Path)
                     else peers(data, args.seeds, Path(scratch)))
            lines.append(row(name, runs, found))
            print(lines[-1], file=sys.stderr, flush=True)
    model = "LSTM" if args.unidirectional else "BiLSTM"
    lines.append(f"\n{model}, seeds {', '.join(map(str, args.seeds))}; overrides: "
                 f"{' '.join(args.overrides) or 'none'}")
    emit("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
