"""How fast `bilstm predict` answers, cold and in bulk, on ONNX Runtime and on TensorFlow.

    BILSTM_DATA_DIR=../shared/data python benchmarks/predict_speed.py RUN_FOLDER \
        [--repeats 5] [--memory-lines 1000000] [--markdown FILE]

RUN_FOLDER is a trained IMDB run (e.g. runs/latest after `bilstm train --bidirectional`); it
needs model.onnx (`bilstm export RUN_FOLDER` writes it for runs trained before it existed).
Every measurement is a fresh process started as a user starts it (the `bilstm` console script):

- cold start: `bilstm --help` and `bilstm predict "great film"`, median wall time of --repeats
  runs (ONNX, the default engine; `--engine tf` for comparison), and their CPU time, which says
  what the wall time would be on an idle machine when others share its cores;
- throughput: the 25,000 IMDB test reviews, one per line, piped through `bilstm predict -` with
  `--engine onnx`, `--engine tf` and, when the run has model.int8.onnx (`bilstm export RUN
  --quantize`), `--engine onnx-int8`, in the same run: wall time including start-up, reviews/s,
  peak memory (maximum resident set size of that child, from wait4), whether the engines give
  the same labels, and each model file's size;
- the arithmetic limit: the multiply-adds per token of the model as shipped (its LSTMs: 4 gates
  x units x (inputs + units) per direction and layer, times the ensemble's members), the
  reviews' mean tokens (after truncation), this machine's float32 matmul peak through NumPy, and
  the share of it each engine reaches;
- flat memory: --memory-lines short lines through the ONNX engine, peak memory against that of
  1,000 lines.
Speed goals (issue 5): --help <= 0.5 s, cold predict <= 1.0 s, ONNX throughput >= TensorFlow;
(issue 31) int8 at least 1.5x ONNX's reviews/s, about a quarter of its size.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bilstm() -> list[str]:
    """The console script a user runs (falls back to `python -m bilstm_cli`)."""
    script = shutil.which("bilstm")
    return [script] if script else [sys.executable, "-m", "bilstm_cli"]


def timed(command: list[str], stdin: Path | None = None,
          stdout: Path | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (MiB) and CPU seconds (user + system) of one child process, which
    must succeed. CPU time hardly depends on what else the machine runs; wall time does."""
    stdin_file = open(stdin, "rb") if stdin else subprocess.DEVNULL
    stdout_file = open(stdout, "wb") if stdout else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdin=stdin_file, stdout=stdout_file,
                                   stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        errors = process.stderr.read().decode(errors="replace")
        process.stderr.close()
    finally:
        for handle in (stdin_file, stdout_file):
            if hasattr(handle, "close"):
                handle.close()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{errors}")
    return wall, usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime  # maxrss in KiB


def cold(command: list[str], repeats: int) -> tuple[float, list[float], float]:
    """Median wall time, every wall time, and median CPU time of `repeats` fresh processes."""
    runs = [timed(command) for _ in range(repeats)]
    walls = [wall for wall, _, _ in runs]
    return statistics.median(walls), walls, statistics.median(cpu for _, _, cpu in runs)


def write_reviews(path: Path, limit: int | None) -> int:
    """The IMDB test reviews, one per line (a review holds no newline; made sure anyway)."""
    from bilstm_cli.data import load_builtin_split

    texts = load_builtin_split("imdb:test").texts[:limit]
    with open(path, "w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(" ".join(text.split()) + "\n")
    return len(texts)


def write_short_lines(path: Path, count: int) -> None:
    phrases = ["great film", "awful plot", "", "a moving, wonderful story", "dull and long",
               "not bad at all", "the worst acting I have seen", "ok"]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(f"{phrases[i % len(phrases)]}\n")


def labels_of(path: Path) -> list[str]:
    return [line.split("\t", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]


def probabilities_of(path: Path) -> list[float]:
    return [float(line.split("\t")[1]) for line in path.read_text(encoding="utf-8").splitlines()]


def macs_per_token(run: Path) -> int:
    """Multiply-adds per token of the run's model: its LSTMs (4 gates x units x (inputs +
    units) per direction and layer), for every ensemble member; the embedding lookup, pooling
    and dense head are negligible next to them."""
    from bilstm_cli.runs import read_config

    model = read_config(run).model
    directions = 2 if model.bidirectional else 1
    inputs, total = model.embedding_dim, 0
    for _ in range(model.layers):
        total += directions * 4 * model.units * (inputs + model.units)
        inputs = model.units * (2 if model.bidirectional and model.merge_mode == "concat" else 1)
    return total * model.ensemble


def mean_tokens(run: Path, reviews: Path) -> float:
    """Tokens per review as the model reads them (the run's tokenizer, truncation included)."""
    from bilstm_cli.text import encode, load_tokenizer

    texts = reviews.read_text(encoding="utf-8").splitlines()
    return sum(len(ids) for ids in encode(load_tokenizer(run / "tokenizer.json"), texts)) \
        / max(1, len(texts))


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul rate (large sgemm through NumPy's BLAS), best of a few."""
    import numpy as np

    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = np.random.default_rng(1).random((size, size), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained IMDB run folder with model.onnx")
    parser.add_argument("--repeats", type=int, default=5, help="cold-start runs per command")
    parser.add_argument("--memory-lines", type=int, default=1_000_000,
                        help="lines for the flat-memory check (0: skip it)")
    parser.add_argument("--reviews", type=int, help="only the first N test reviews (a quick "
                        "check of the script; the goals are measured on all 25,000)")
    parser.add_argument("--cold-only", action="store_true",
                        help="only the cold-start table (e.g. again when the machine is quieter)")
    parser.add_argument("--markdown", type=Path, help="also append the report to this file")
    args = parser.parse_args()
    run = args.run.resolve()
    if not (run / "model.onnx").is_file():
        raise SystemExit(f"{run} has no model.onnx: run `bilstm export {run}` first")

    cli = bilstm()
    lines = [f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
             f"load average before: {os.getloadavg()[0]:.2f}; run: `{run}`", ""]
    results: dict[str, float] = {}

    great = [*cli, "predict", "--model", str(run), "great film"]
    commands = [("`bilstm --help`", [*cli, "--help"], args.repeats, "<= 0.5 s"),
                ('`bilstm predict "great film"` (ONNX)', great, args.repeats, "<= 1.0 s"),
                ('`bilstm predict "great film" --engine tf`', [*great, "--engine", "tf"],
                 max(1, args.repeats // 2), "(for comparison)")]
    lines += ["| cold start | median wall | runs (wall, s) | median CPU | goal (wall) |",
              "| --- | --- | --- | --- | --- |"]
    for (name, command, repeats, goal), key in zip(commands, ("help", "predict", "tf")):
        median, walls, cpu = cold(command, repeats)
        results[key] = median
        lines.append(f"| {name} | {median:.2f} s | {', '.join(f'{w:.2f}' for w in walls)} | "
                     f"{cpu:.2f} s | {goal} |")
    lines.append("")
    print("\n".join(lines), flush=True)
    if args.cold_only:
        if args.markdown:
            with open(args.markdown, "a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reviews = folder / "imdb_test.txt"
        count = write_reviews(reviews, args.reviews)
        rows = ["| engine | reviews | wall (s, with start-up) | reviews/s | peak RSS |",
                "| --- | --- | --- | --- | --- |"]
        print("\n".join(rows), flush=True)
        outputs = {}
        engines = ["onnx", "tf"] + (["onnx-int8"] if (run / "model.int8.onnx").is_file() else [])
        for engine in engines:
            outputs[engine] = folder / f"{engine}.tsv"
            wall, rss, _ = timed([*cli, "predict", "-", "--model", str(run), "--engine", engine],
                              stdin=reviews, stdout=outputs[engine])
            answered = len(labels_of(outputs[engine]))
            if answered != count:
                raise SystemExit(f"{engine}: {answered} output lines for {count} reviews")
            results[f"{engine}_rate"] = count / wall
            rows.append(f"| {engine} | {count:,} | {wall:.1f} | {count / wall:.0f} | "
                        f"{rss} MiB |")
            print(rows[-1], flush=True)
        printed = len(rows)
        rows.append("")
        for other in engines[1:]:
            same = sum(a == b for a, b in zip(labels_of(outputs["onnx"]),
                                              labels_of(outputs[other])))
            gap = max(abs(a - b) for a, b in zip(probabilities_of(outputs["onnx"]),
                                                  probabilities_of(outputs[other])))
            rows.append(f"- Same label from onnx and {other}: {same:,} of {count:,} reviews; "
                        f"largest difference of the printed probability: {gap:.6f}.")
        for engine in engines[2:]:
            rows.append(f"- {engine}: {results[f'{engine}_rate'] / results['onnx_rate']:.2f}x "
                        f"onnx's reviews/s, {results[f'{engine}_rate'] / results['tf_rate']:.2f}x "
                        "tf's.")
        rows += _arithmetic(run, reviews, engines, results) + [""]

        if args.memory_lines:
            small, big = folder / "small.txt", folder / "big.txt"
            write_short_lines(small, 1000)
            write_short_lines(big, args.memory_lines)
            command = [*cli, "predict", "-", "--model", str(run), "--format", "label"]
            _, small_rss, _ = timed(command, stdin=small)
            wall, big_rss, _ = timed(command, stdin=big, stdout=folder / "big.out")
            answered = sum(1 for _ in open(folder / "big.out", encoding="utf-8"))
            rows.append(f"Flat memory (ONNX, `--format label`): {args.memory_lines:,} short "
                        f"lines in {wall:.1f} s ({args.memory_lines / wall:.0f} lines/s, "
                        f"{answered:,} output lines), peak RSS {big_rss} MiB against "
                        f"{small_rss} MiB for 1,000 lines.")
        print("\n".join(rows[printed:]), flush=True)
        lines += rows

    int8 = ""
    if "onnx-int8_rate" in results:
        faster = results["onnx-int8_rate"] >= 1.5 * results["onnx_rate"]
        int8 = f", int8 >= 1.5x ONNX {'met' if faster else 'MISSED'}"
    verdict = [
        "",
        f"Goals: --help {'met' if results['help'] <= 0.5 else 'MISSED'}, "
        f"cold predict {'met' if results['predict'] <= 1.0 else 'MISSED'}, ONNX throughput >= "
        f"TensorFlow {'met' if results['onnx_rate'] >= results['tf_rate'] else 'MISSED'} "
        f"({results['onnx_rate'] / results['tf_rate']:.2f}x){int8}. Load average after: "
        f"{os.getloadavg()[0]:.2f}.",
    ]
    print("\n".join(verdict))
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines + verdict) + "\n")


def _arithmetic(run: Path, reviews: Path, engines: list[str],
                results: dict[str, float]) -> list[str]:
    """Each engine's reviews/s against the arithmetic limit at this machine's matmul peak, and
    the model files' sizes."""
    macs, tokens, peak = macs_per_token(run), mean_tokens(run, reviews), matmul_gflops()
    limit = peak * 1e9 / (2 * macs * tokens)
    rows = [f"- Arithmetic: {macs:,} multiply-adds per token (the LSTMs of the model as "
            f"shipped), {tokens:.0f} tokens per review, so {2 * macs * tokens / 1e6:.0f} MFLOP "
            f"per review; at this machine's float32 matmul peak ({peak:.0f} GFLOP/s, NumPy) "
            f"that is at most {limit:,.0f} reviews/s."]
    rows += [f"- {engine}: {results[f'{engine}_rate']:.0f} reviews/s = "
             f"{results[f'{engine}_rate'] / limit:.1%} of that limit "
             f"({1000 / results[f'{engine}_rate']:.2f} ms per review against "
             f"{1000 / limit:.2f})" for engine in engines]
    sizes = {"model.onnx": run / "model.onnx", "model.int8.onnx": run / "model.int8.onnx",
             "model.keras": run / "model.keras"}
    rows.append("- Model files: " + ", ".join(f"{name} {path.stat().st_size / 2**20:.1f} MiB"
                                             for name, path in sizes.items() if path.is_file()))
    return rows


if __name__ == "__main__":
    main()
