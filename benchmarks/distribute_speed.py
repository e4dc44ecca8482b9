"""Training speed on one process and on local workers (training.distribute: multi_worker).

    BILSTM_DATA_DIR=../shared/data python benchmarks/distribute_speed.py \\
        [--workers 2] [--examples 2000] [--set key=value ...]

One after the other, the same `bilstm train -c imdb` (one model, `--examples` reviews per split,
two epochs; `--set` adds overrides to every run) as a user runs it:
  (a) one process, training.kernel: auto (the fused CPU kernel: what one machine runs);
  (b) one process, training.kernel: keras (the plain Keras path, which a strategy runs);
  (c) `--workers` processes on 127.0.0.1, each with its own TF_CONFIG, each with
      training.threads = cores / workers (so they share this machine's cores, not fight for
      them): what two machines would run, minus the network and plus the sharing of one CPU.
It reports the second (steady-state) epoch's examples/s from each run's history.csv (the
chief's for (c)) and the ratios to (b). On one machine (c) can only show the cost of the
collectives; the speed-up needs more machines (or GPUs).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def steady_speed(output: Path) -> float:
    with open((output / "latest").resolve() / "history.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return float(rows[-1]["examples_per_second"])


def train(args: list[str], output: Path, workers: int = 1, threads: int | None = None) -> float:
    """examples/s of the last epoch of `bilstm train ARGS` in `workers` processes."""
    command = [sys.executable, "-m", "bilstm_cli", "train", *args, "--output", str(output)]
    if threads:
        command += ["--set", f"training.threads={threads}"]
    cluster = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    processes = []
    for index in range(workers):
        env = dict(os.environ)
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": cluster},
                                           "task": {"type": "worker", "index": index}})
            command_here = [*command, "--set", "training.distribute=multi_worker"]
        else:
            command_here = command
        processes.append(subprocess.Popen(command_here, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
    try:
        for process in processes:
            _, err = process.communicate(timeout=3600)
            if process.returncode:
                raise SystemExit(f"{' '.join(command_here)} failed:\n{err[-2000:]}")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return steady_speed(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    options = parser.parse_args()
    base = ["-c", "imdb", "--epochs", "2", "--set", "model.ensemble=1",
            "--set", f"data.max_examples={options.examples}"]
    for item in options.sets:
        base += ["--set", item]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bilstm-distribute-speed-") as folder:
        runs = {
            "(a) one process, fused kernel": train(base, Path(folder) / "a"),
            "(b) one process, Keras layers": train(
                [*base, "--set", "training.kernel=keras"], Path(folder) / "b"),
            f"(c) {options.workers} local workers": train(
                base, Path(folder) / "c", options.workers, max(1, cores // options.workers)),
        }
    plain = runs["(b) one process, Keras layers"]
    print(f"| run ({cores} cores, {options.examples} reviews, epoch 2) | examples/s | vs (b) |")
    print("| --- | --- | --- |")
    for name, speed in runs.items():
        print(f"| {name} | {speed:.0f} | {speed / plain:.2f}x |")


if __name__ == "__main__":
    main()
