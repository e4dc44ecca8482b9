"""What `bilstm compare` trains: the variants, each one's config for each seed, and the run
folder of each (OUTPUT/runs/<variant>-s<seed>) with how far an earlier session got with it.

A variant is `NAME:key=value,key=value` (`--set` items, values as YAML) applied on top of the
config and its `--set` items. Every variant trains on the same data, split, vocabulary and
seeds, so a variant may not set `data.*`, `output.*` or `training.seed`. No TensorFlow here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bilstm_cli.compare import VARIANT_HELP
from bilstm_cli.config import (
    Config,
    default_config,
    load_config,
    parse_override,
    resolve_config_path,
)
from bilstm_cli.errors import UserError

# Without --variant: the config's model, one direction and two.
DEFAULT_VARIANTS = ("lstm:model.bidirectional=false", "bilstm:model.bidirectional=true")
RUNS_DIR = "runs"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# A comma starts the next item only where a `section.key=` follows (a YAML list keeps its own).
_ITEM_START = re.compile(r",\s*(?=[A-Za-z_][\w]*\.[\w.]+\s*=)")


@dataclass(frozen=True)
class Variant:
    name: str
    settings: tuple[str, ...]  # key=value items, as given


@dataclass(frozen=True)
class PlannedRun:
    variant: str
    settings: tuple[str, ...]
    seed: int
    config: Config  # output.dir is OUTPUT/runs, training.seed the seed
    folder: Path


def parse_variant(spec: str) -> Variant:
    """`NAME:key=value,...` as a Variant; a UserError saying what is wrong with it."""
    name, colon, items = spec.partition(":")
    name = name.strip()
    if not colon or not _NAME.fullmatch(name):
        raise UserError(f"--variant {spec!r}: expected {VARIANT_HELP} (the name: letters, "
                        "digits, and _ . + -)")
    settings = tuple(item.strip() for item in _ITEM_START.split(items) if item.strip())
    if not settings:
        raise UserError(f"--variant {spec!r}: no settings after {name}: (expected "
                        f"{VARIANT_HELP})")
    for item in settings:
        try:
            keys, _ = parse_override(item)
        except UserError as exc:
            raise UserError(f"--variant {spec!r}: {str(exc).removeprefix('--set ')}") from None
        _check_allowed(spec, ".".join(keys))
    return Variant(name, settings)


def _check_allowed(spec: str, key: str) -> None:
    if key.split(".")[0] in ("data", "output") or key == "training.seed":
        what = "--seeds" if key == "training.seed" else (
            "--output" if key.startswith("output.") else "--set, for all of them")
        raise UserError(f"--variant {spec!r}: {key} cannot differ between variants (they train "
                        f"on the same data, split, vocabulary and seeds): set it with {what}")


def variants_from(specs: Sequence[str]) -> list[Variant]:
    """The variants to compare: those given, or lstm and bilstm; at least two, names unique."""
    variants = [parse_variant(spec) for spec in (specs or DEFAULT_VARIANTS)]
    names = [variant.name for variant in variants]
    if len(variants) < 2:
        raise UserError(f"--variant: give two or more variants to compare ({VARIANT_HELP}), "
                        "or none for lstm and bilstm")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"--variant: the name {repeated[0]} is given twice: name each variant "
                        "once")
    return variants


def _base(source: Any, overrides: Sequence[str]) -> Path | Mapping[str, Any]:
    """A config source as load_config takes it: a YAML file (a path or a shipped config's
    name; None: as `bilstm train` without --config, default_config) or a mapping shaped like
    the YAML (or a Config)."""
    if isinstance(source, Config):
        return source.model_dump(mode="json")
    if isinstance(source, Mapping):
        return source
    if source is None:
        return default_config(overrides)
    return resolve_config_path(str(source))


def variant_config(source: Any, overrides: Sequence[str], variant: Variant,
                   warn: Callable[[str], None] | None = None) -> Config:
    """The config with `overrides`, then the variant's settings (errors name the variant)."""
    extra = {".".join(keys): value for keys, value in map(parse_override, variant.settings)}
    return load_config(_base(source, overrides), list(overrides), extra,
                       dict.fromkeys(extra, f"--variant {variant.name}"), warn=warn)


def plan(source: Any, overrides: Sequence[str], specs: Sequence[str], seeds: int,
         output: Path, warn: Callable[[str], None] | None = None) -> list[PlannedRun]:
    """Every variant x seed to train, seed by seed (a stop leaves whole seeds done); refused
    when two variants come out the same, or a run folder already there was trained with
    another config."""
    base = load_config(_base(source, overrides), list(overrides), warn=warn)
    if base.data.dataset is None and not base.data.test:
        raise UserError("compare scores the variants on a test set, and the config gives none: "
                        "add --set data.test=FILE")
    variants = variants_from(specs)
    configs = {variant.name: variant_config(source, overrides, variant) for variant in variants}
    dumps: dict[str, str] = {}
    for name, config in configs.items():
        same = dumps.setdefault(config.model_dump_json(), name)
        if same != name:
            raise UserError(f"--variant: {same} and {name} come out as the same config: "
                            "nothing to compare between them")
    first = base.training.seed
    runs = []
    for seed in range(first, first + seeds):
        for variant in variants:
            config = configs[variant.name]
            config = config.model_copy(update={
                "training": config.training.model_copy(update={"seed": seed}),
                "output": config.output.model_copy(update={"dir": str(output / RUNS_DIR)}),
            })
            run = PlannedRun(variant.name, variant.settings, seed, config,
                             output / RUNS_DIR / f"{variant.name}-s{seed}")
            check_folder(run)
            runs.append(run)
    return runs


def state(run: PlannedRun) -> str:
    """`finished` (kept as it is), `resume` (an earlier session started it) or `new`."""
    from bilstm_cli.runs import CONFIG_FILE, METRICS_FILE, RUN_FILE
    from bilstm_cli.runstate import read_json

    if not (run.folder / CONFIG_FILE).is_file():
        return "new"  # nothing of a training there yet (or only its first files)
    record = read_json(run.folder / RUN_FILE) or {}
    # Finished with the planned epochs, or stopped early: more epochs would change nothing.
    if record.get("state") == "finished" and (run.folder / METRICS_FILE).is_file() and (
            record.get("stopped_early") or not _differences(run, with_epochs=True)):
        return "finished"
    return "resume"


def check_folder(run: PlannedRun) -> None:
    """A run folder an earlier session made must hold this run's config (more epochs aside:
    resuming trains it longer)."""
    if state(run) == "new":
        return
    differences = _differences(run, with_epochs=False)
    if differences:
        listed = "\n".join(f"  - {d}" for d in differences)
        raise UserError(
            f"{run.folder} was trained with another config (the run's -> now):\n{listed}\n"
            f"Give another --output for a new comparison, or delete {run.folder} to train it "
            "again")


def _differences(run: PlannedRun, with_epochs: bool) -> list[str]:
    """The config keys (resume-safe ones aside) where the folder's run differs from the plan;
    an `auto` in the plan matches whatever the run resolved it to."""
    from bilstm_cli.checkpoint import config_differences
    from bilstm_cli.config import without_removed_keys
    from bilstm_cli.runs import read_config_mapping

    saved = without_removed_keys(read_config_mapping(run.folder) or {})
    planned = run.config.model_dump(mode="json")
    for section, key in (("data", "max_tokens"), ("data", "max_length"), ("training", "epochs")):
        if planned[section][key] == "auto":
            planned[section][key] = _get(saved, section, key)
    differences = config_differences(saved, planned, Config().model_dump(mode="json"))
    epochs = _get(saved, "training", "epochs")
    if with_epochs and epochs != planned["training"]["epochs"]:
        differences.append(f"training.epochs: {epochs} -> {planned['training']['epochs']}")
    return differences


def _get(mapping: dict[str, Any], section: str, key: str) -> Any:
    values = mapping.get(section)
    return values.get(key) if isinstance(values, dict) else None


# Keys that say nothing about what was trained (where files went, threads, logging).
_NOT_A_SETTING = ("training.seed", "training.threads", "training.tensorboard",
                  "training.checkpoint_every", "output.dir", "output.name")


def groups_of(folders: Sequence[Path], configs: Sequence[Config]
              ) -> list[tuple[str, list[str], list[Path]]]:
    """Existing runs (`--from`) as variants: runs whose configs differ only in the seed (and
    where files went) are one variant, named by the keys that set the variants apart; in the
    order given (the first run's variant is the baseline)."""
    from bilstm_cli.checkpoint import flatten, show_value
    from bilstm_cli.config import absolute_data_path

    settings = []
    for config in configs:
        flat = flatten(config.model_dump(mode="json"))
        settings.append({k: absolute_data_path(v) if k.startswith("data.") else v
                         for k, v in flat.items() if k not in _NOT_A_SETTING})
    distinct: list[dict[str, Any]] = []
    for flat in settings:
        if flat not in distinct:
            distinct.append(flat)
    if len(distinct) < 2:
        raise UserError("--from: the runs differ in their seeds alone, so there are no variants "
                        "to compare: give runs of two or more configs (e.g. an LSTM's and a "
                        "BiLSTM's)")
    apart = [k for k in distinct[0] if len({repr(flat.get(k)) for flat in distinct}) > 1]
    groups = []
    for flat in distinct:
        items = [f"{k}={show_value(flat.get(k))}" for k in apart]
        name = (("bilstm" if flat["model.bidirectional"] else "lstm")
                if apart == ["model.bidirectional"] else ",".join(
                    item.split(".", 1)[1] for item in items))
        groups.append((name, items, [f for f, s in zip(folders, settings) if s == flat]))
    return groups

