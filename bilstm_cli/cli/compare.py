"""`bilstm compare`: variants and seeds (or existing runs) -> api.compare (or api.compare_runs)
-> the comparison's tables (a terminal), Markdown (a pipe) or JSON (--json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bilstm_cli import api
from bilstm_cli import console as ui
from bilstm_cli.cli.common import user_errors
from bilstm_cli.compare import VARIANT_HELP
from bilstm_cli.errors import UserError


def compare(
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="A YAML config file, or a shipped one by name: imdb, sst2. "
        "Default: as for `bilstm train` (the shipped config of data.dataset; with data.train, "
        "the defaults).", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Override a key for every variant: section.key=value. Repeatable.")]
        = None,
    variant: Annotated[list[str] | None, typer.Option(
        "--variant", "-V", help=f"A variant to train: {VARIANT_HELP}. Repeatable; the first "
        "is the baseline.", show_default="lstm:model.bidirectional=false and "
        "bilstm:model.bidirectional=true")] = None,
    seeds: Annotated[int, typer.Option(
        min=1, help="Seeds per variant: training.seed, +1, ... (3 or more for the test over "
        "seeds).")] = 3,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Where compare.json, compare.md, compare.png and (when "
        "training) the run folders (OUTPUT/runs/<variant>-s<seed>) go.")] = Path("compare"),
    from_: Annotated[list[Path] | None, typer.Option(
        "--from", help="Compare these finished runs instead of training: --from RUN RUN ... "
        "(runs that differ only in the seed are one variant).", show_default=False)] = None,
    more_runs: Annotated[list[Path] | None, typer.Argument(
        help="More runs for --from.", metavar="[RUN]...", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Write the comparison (compare.json) to stdout.")] = False,
) -> None:
    """Train the LSTM and the BiLSTM (or any variants) of one config on the same data, split,
    vocabulary and seeds, and compare them: speed, accuracy, whether the difference is real,
    learning curves, accuracy by text length, disagreements.

    Every variant x seed is an ordinary run folder: run the same command again after Ctrl-C,
    and it keeps the finished runs and resumes the others."""
    from bilstm_cli.runstate import command_line

    with user_errors():
        runs = [*(from_ or []), *(more_runs or [])]
        if more_runs and not from_:
            raise UserError(f"{more_runs[0]}: run folders go after --from (bilstm compare "
                            "--from RUN RUN ...)")
        if runs and (config or set_ or variant):
            raise UserError("--from compares runs that exist; --config, --set and --variant "
                            "choose runs to train: give one or the other")
        if runs:
            result = api.compare_runs(runs, output, ui.info, ui.warn, command_line())
        else:
            result = _train_and_compare(config, set_ or [], variant or [], seeds, output,
                                        command_line())
    ui.info("written: " + ", ".join(str(path) for path in result.files))
    if as_json:
        sys.stdout.write(json.dumps(result.report, indent=2, ensure_ascii=False) + "\n")
        return
    out = ui.stdout_console()
    if out.is_terminal:
        for table in ui.compare_tables(result.report, out):
            out.print(table)
    else:
        sys.stdout.write(_plain(result.report))


def _train_and_compare(config: str | None, overrides: list[str], variants: list[str],
                       seeds: int, output: Path, command: list[str]) -> Any:
    from bilstm_cli.interrupt import TrainingInterrupted

    try:
        return api.compare(config, overrides, variants, seeds, output, ui.info, ui.warn,
                           ui.TrainingDisplay, command)
    except TrainingInterrupted as exc:
        ui.error(f"compare interrupted ({exc})" + (f" while training {exc.run_dir}"
                                                  if exc.run_dir else ""))
        ui.stderr.print("run the same command again to continue: it keeps the finished runs "
                        "and resumes this one from its checkpoint", markup=False,
                        soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _plain(report: dict[str, Any]) -> str:
    """Into a pipe: the tables as Markdown (compare.md without its heading)."""
    from bilstm_cli.compare.tables import plain_table, tables

    lines = []
    for table in tables(report):
        lines += [table.title, "", *plain_table(table), *(f"- {n}" for n in table.notes), ""]
    return "\n".join(lines)
