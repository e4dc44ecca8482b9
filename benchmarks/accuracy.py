"""Accuracy and wall time of the shipped configs: IMDB and SST-2, unidirectional and bidirectional.

    BILSTM_DATA_DIR=../shared/data python benchmarks/accuracy.py [--markdown FILE] [--only imdb]
        [--model lstm|bilstm] [--seeds 42 43 44]

Each run is `bilstm train -c CONFIG --unidirectional|--bidirectional` as a user types it, in its
own process; the table gives test accuracy (IMDB test, SST-2 dev), validation accuracy, the best
epoch (each member's, for an ensemble), seconds per epoch, minutes of training (the epochs of
every member, without data loading and evaluation), the run's wall time and its peak memory
(RSS: loading, training, evaluation and export, all in the one process). It answers the
question this tool exists for: what the backward direction buys, on the same data, config and
seed. With several seeds (one model per seed: the seed also picks the validation split and the
batch order), a second table gives each model's mean and range over them.
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

PEERS = {
    "imdb": "fastText bigrams 0.880-0.884, TF-IDF (1-2 grams) + logistic regression 0.906",
    "sst2": "fastText 0.812-0.813, TF-IDF + logistic regression 0.820",
}


def run(config: str, bidirectional: bool, seed: int | None, output: Path, extra: list[str]
        ) -> dict:
    direction = "--bidirectional" if bidirectional else "--unidirectional"
    command = [sys.executable, "-m", "bilstm_cli", "train", "-c", config, direction,
               "--output", str(output), *(["--seed", str(seed)] if seed is not None else []),
               *extra]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # the run's own peak memory, from the kernel
        wall = time.perf_counter() - start
        if status != 0:
            stderr.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{stderr.read()}")
    metrics = json.loads((output / "latest" / "metrics.json").read_text())
    return {
        "config": config,
        "model": "BiLSTM" if bidirectional else "LSTM",
        "seed": seed,
        "test": metrics["test"]["accuracy"],
        "validation": metrics["validation"]["accuracy"],
        # An ensemble (model.ensemble): each member's best epoch.
        "best_epoch": ", ".join(f"{m['best_epoch']}/{m['epochs_run']}"
                                for m in metrics.get("members") or [metrics]),
        "seconds_per_epoch": metrics["seconds_per_epoch"],
        "training_minutes": metrics["training_seconds"] / 60,
        "wall": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["imdb", "sst2"], help="one data set")
    parser.add_argument("--markdown", type=Path, help="append the table to this file")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="passed to every run as --set")
    parser.add_argument("--model", choices=["lstm", "bilstm"],
                        help="one model (default: both, the LSTM first)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="train each model once per seed (default: the config's seed)")
    args = parser.parse_args()
    extra = [item for override in args.overrides for item in ("--set", override)]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for config in (args.only,) if args.only else ("imdb", "sst2"):
            for bidirectional in (False, True) if args.model is None else (
                    args.model == "bilstm",):
                for seed in args.seeds or [None]:
                    result = run(config, bidirectional, seed,
                                 Path(scratch) / f"{config}-{bidirectional}-{seed}", extra)
                    print(json.dumps(result), file=sys.stderr)
                    rows.append(result)
    # The overrides belong to the config: a table without them would misname what ran.
    label = {config: f"configs/{config}.yaml" + "".join(f" + `{o}`" for o in args.overrides)
             for config in dict.fromkeys(r["config"] for r in rows)}
    lines = [
        "| config | model | seed | test accuracy | validation accuracy | best epoch | s/epoch "
        "| training min | wall s | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {label[r['config']]} | {r['model']} | {r['seed'] or 'config'} | "
                     f"{r['test']:.4f} | {r['validation']:.4f} | {r['best_epoch']} | "
                     f"{r['seconds_per_epoch']:.0f} | {r['training_minutes']:.1f} | "
                     f"{r['wall']:.0f} | {r['peak_rss_mb']:.0f} |")
    if args.seeds and len(args.seeds) > 1:
        lines += ["", "| config | model | seeds | test accuracy: mean (range) | "
                  "validation accuracy: mean (range) |", "| --- | --- | --- | --- | --- |"]
        for config, model in dict.fromkeys((r["config"], r["model"]) for r in rows):
            group = [r for r in rows if (r["config"], r["model"]) == (config, model)]
            cells = [f"{statistics.mean(r[key] for r in group):.4f} "
                     f"({min(r[key] for r in group):.4f}-{max(r[key] for r in group):.4f})"
                     for key in ("test", "validation")]
            lines.append(f"| {label[config]} | {model} | {len(group)} | {cells[0]} | "
                         f"{cells[1]} |")
    lines.append("")
    for config in dict.fromkeys(r["config"] for r in rows):
        lines.append(f"- {config} peers on the same test set: {PEERS[config]}")
    emit("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
