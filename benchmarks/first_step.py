"""Time to the first training step: from the shell to the end of `bilstm train`'s first batch.

    BILSTM_DATA_DIR=../shared/data python benchmarks/first_step.py [--repeats R] [--config imdb]

Each run is a fresh process running `bilstm train --bidirectional` with the shipped config (any
`--set` added), as a user starts it; the process ends itself when the first batch of the first
model is done. The first run starts on an empty data cache (a temporary BILSTM_CACHE_DIR that
shares the compiled kernel), the following ones find it filled: "cold" and "warm". Each run's
stderr lines are timed as they arrive, so the table also says where the seconds go (the data,
the summary, TensorFlow's import, the word vectors, the model, the first step).
`--no-cache` runs every start with BILSTM_DATA_CACHE=0 (all cold).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import emit  # benchmarks/report.py

# The child: `bilstm train` as the CLI runs it, ending at its first batch.
CHILD = """
import os, sys, time
from bilstm_cli import console

class FirstStep(console.TrainingDisplay):
    def update(self, batches_done, examples, logs):
        sys.stderr.write(f"FIRST STEP {time.time():.3f}\\n")
        sys.stderr.flush()
        os._exit(0)

console.TrainingDisplay = FirstStep
from bilstm_cli.cli import main
sys.argv = ["bilstm", "train", *sys.argv[1:]]
main()
"""

MARKS = (  # stderr lines that end a phase, in order: (phase, the start of its line)
    ("data and tokens", "| train"),  # the summary table's rows: the data is ready
    ("TensorFlow and the run folder", "run folder:"),
    ("word vectors", "initial word vectors"),
)


def one_start(args: argparse.Namespace, cache: Path, output: Path) -> dict[str, float]:
    """One `bilstm train` to its first step: the seconds to each mark."""
    env = {**os.environ, "BILSTM_CACHE_DIR": str(cache)}
    if args.no_cache:
        env["BILSTM_DATA_CACHE"] = "0"
    command = [sys.executable, "-c", CHILD, "--bidirectional", "--output", str(output),
               *(["--config", args.config] if args.config else []),
               *[part for setting in args.set for part in ("--set", setting)]]
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=env)
    assert process.stderr is not None
    marks: dict[str, float] = {}
    tail: list[str] = []
    for line in process.stderr:
        now = time.time() - started
        tail = (tail + [line])[-20:]
        for phase, start in MARKS:
            if phase not in marks and line.lstrip("|│ ").startswith(start.lstrip("| ")):
                marks[phase] = now
        if line.startswith("FIRST STEP"):
            marks["first step"] = float(line.split()[2]) - started
    process.wait()
    if "first step" not in marks:
        raise SystemExit("the training ended before its first step:\n" + "".join(tail))
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm runs after the cold one")
    parser.add_argument("--config", default=None, help="a shipped config or file (default imdb)")
    parser.add_argument("--set", action="append", default=[], help="a config override")
    parser.add_argument("--no-cache", action="store_true", help="BILSTM_DATA_CACHE=0")
    parser.add_argument("--markdown", type=Path, help="append the result table to this file")
    args = parser.parse_args()

    user_cache = Path(os.environ.get("BILSTM_CACHE_DIR") or
                      Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                      / "bilstm")
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        cache.mkdir()
        if (user_cache / "kernels").is_dir():  # the kernel is built once, not timed here
            (cache / "kernels").symlink_to(user_cache / "kernels")
        for repeat in range(args.repeats + 1):
            marks = one_start(args, cache, Path(scratch) / f"runs-{repeat}")
            runs.append(marks)
            print(f"run {repeat + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in marks.items()),
                  file=sys.stderr)

    phases = [phase for phase, _ in MARKS] + ["first step"]

    def row(name: str, chosen: list[dict[str, float]]) -> str:
        cells, before = [], 0.0
        for phase in phases:
            values = [marks[phase] for marks in chosen if phase in marks]
            at = statistics.median(values) if values else before
            cells.append(f"{at - before:.1f}" if values else "-")
            before = at
        return f"| {name} | " + " | ".join(cells) + f" | **{before:.1f}** |"

    cold = "no cache" if args.no_cache else "cold cache"
    lines = ["| start | " + " | ".join(phases) + " | to the first step, s |",
             "| --- |" + " --- |" * (len(phases) + 1),
             row(f"first ({cold})", runs[:1])]
    if args.repeats:
        warm = "no cache" if args.no_cache else "warm cache"
        lines.append(row(f"later ({warm}, median of {args.repeats})", runs[1:]))
    lines.append("")
    lines.append("Seconds in each phase (each ends with the line that starts the next), then "
                 "from the shell to the end of the first batch.")
    emit("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
