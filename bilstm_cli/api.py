"""The Python API: what the `bilstm` commands do, as functions. The CLI calls these too.

    from bilstm_cli import api

    run = api.train({"data": {"dataset": None, "train": "train.tsv"}},
                    ["model.bidirectional=true"])
    print(api.predict(["great film", "dull plot"], run.run_dir))  # [('pos', 0.97), ('neg', 0.91)]
    print(api.evaluate("test.tsv", run.run_dir)["accuracy"])

Importing this module imports no TensorFlow and changes nothing in the process; the functions
that train or run a Keras model prepare the process (backend.setup) and import it on first use.
`compare` trains variants of a config side by side and says whether their difference is real;
`compare_runs` does the same for runs that exist.
Errors in what you pass (a bad config key, a missing file, a malformed row) raise UserError with
the message the CLI prints.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bilstm_cli import backend

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from bilstm_cli.compare.plan import PlannedRun
    from bilstm_cli.config import Config
    from bilstm_cli.data import Dataset, Splits
    from bilstm_cli.data.cache import Tokens
    from bilstm_cli.predict import Classifier
    from bilstm_cli.train import ProgressFactory, TrainResult

Log = Callable[[str], None]
ConfigSource = "Config | Mapping[str, Any] | str | Path | None"


def _quiet(message: str) -> None:
    """The default log from Python: say nothing (pass `log=print` to follow along)."""


def _warn(message: str) -> None:
    """The default for warnings from Python: Python's warnings (a user decides how loud)."""
    warnings.warn(message, UserWarning, stacklevel=3)


def config(source: ConfigSource = None, overrides: Sequence[str] = (),
           warn: Log | None = None) -> Config:
    """A validated config from a YAML file (a path, or a shipped one by name: imdb, sst2), a
    dict shaped like the YAML, a Config, or None (as `bilstm train` without --config: the shipped
    config of the built-in data set, or for your own files the defaults); then `overrides`,
    as `--set` takes them: ["model.units=128", "training.epochs=2"]."""
    from bilstm_cli.config import Config, default_config, load_config, resolve_config_path

    if isinstance(source, Config):
        source = source.model_dump(mode="json")
    if source is None:
        source = default_config(overrides)
    elif not isinstance(source, Mapping):
        source = resolve_config_path(str(source))
    return load_config(source, list(overrides), warn=warn)


@dataclass
class Training:
    """A training about to start: its config, data and data summary are ready (`prepare`), so
    the caller can show the summary first; `run` trains."""

    config: Config
    splits: Splits
    tokenizer: Tokenizer
    summary: dict[str, Any]
    run_dir: Path | None = None
    resume: bool = False
    tokens: Tokens | None = None  # the token ids, and the word vectors' cache

    def run(self, log: Log = _quiet, warn: Log = _warn,
            progress: ProgressFactory | None = None, command: list[str] | None = None
            ) -> TrainResult:
        """Train into a new run folder (or the resumed one); returns its folder and metrics.
        Ctrl-C or SIGTERM raise TrainingInterrupted after a checkpoint is saved."""
        backend.setup(filter_native_logs=False)
        from bilstm_cli.train import train as run_training

        return run_training(self.config, log, run_dir=self.run_dir, command=command,
                            splits=self.splits, summary=self.summary, resume=self.resume,
                            warn=warn, tokenizer=self.tokenizer, progress=progress,
                            tokens=self.tokens)


def prepare(cfg: Config, resume: Path | None = None, force: bool = False,
            check_folders: bool = True, like: Training | None = None, log: Log = _quiet,
            warn: Log = _warn) -> Training:
    """Check the run folder (a resumed one must hold a compatible config: `force` trains it
    again from the start; a dry run passes check_folders=False), read the data, resolve the
    `auto` settings from it (auto.py), fit the tokenizer and tokenize: each from the data cache
    (data/cache.py) when the same files were prepared so before. Imports no TensorFlow.
    `like`: a Training with the same data settings and seed (`bilstm compare`'s variants): its
    split, tokenizer and token ids are taken as they are, not made again."""
    from bilstm_cli import auto, distribute
    from bilstm_cli.checkpoint import check_resume
    from bilstm_cli.data import load_splits
    from bilstm_cli.data.cache import DataCache
    from bilstm_cli.data.splits import class_weights
    from bilstm_cli.runs import check_output_dir

    def check(resolved: Config) -> bool:
        return check_folders and check_resume(resume, resolved.model_dump(mode="json"), force)

    distribute.check(cfg.training.distribute, resume is not None)  # TF_CONFIG, before the data
    continuing = False
    if resume is None and check_folders:
        check_output_dir(cfg.output.dir)
    elif resume is not None and not auto.has_auto(cfg):
        continuing = check(cfg)  # before the data is read: a refusal comes at once
    cache = DataCache.open(log, warn)
    splits, key = (like.splits, None) if like else cache.splits(
        cfg.data, cfg.training.seed, lambda: load_splits(cfg.data, cfg.training.seed))
    resolved, notes = auto.resolve(cfg, splits.train.texts)
    if resume is not None and resolved is not cfg:
        continuing = check(resolved)
    if like is None:
        tokens = cache.tokens(key, resolved.data, lambda: _tokenize(resolved, splits))
    elif (like.config.data, like.config.training.seed) != (resolved.data, resolved.training.seed):
        raise ValueError("prepare(like=...): the data settings or the seed differ")
    else:
        tokens = like.tokens or _tokenize(resolved, splits, like.tokenizer)
    # The class weights follow training.class_weight, which is not part of the cache's key.
    summary = {**tokens.summary, "settings": notes,
               "class_weight": class_weights(resolved.training.class_weight,
                                             splits.labels or sorted(set(splits.train.labels)),
                                             splits.train.labels)}
    return Training(resolved, splits, tokens.tokenizer, summary, resume, continuing, tokens)


def _tokenize(config: Config, splits: Splits, tokenizer: Tokenizer | None = None) -> Tokens:
    """The tokenizer fitted on the training texts (or the one given), the data summary, the
    token ids."""
    from bilstm_cli.data import summarize
    from bilstm_cli.data.cache import Tokens
    from bilstm_cli.text import encode, tokenizer_for

    tokenizer = tokenizer or tokenizer_for(config.data, splits.train.texts)
    return Tokens(tokenizer, summarize(splits, config, tokenizer),
                  encode(tokenizer, splits.train.texts), encode(tokenizer, splits.validation.texts))


def train(source: ConfigSource = None, overrides: Sequence[str] = (),
          resume: Path | None = None, log: Log = _quiet) -> TrainResult:
    """Train from a config (see `config`) and return the run: `.run_dir`, `.metrics`."""
    return prepare(config(source, overrides), resume).run(log)


def load(run: str | Path | None = None, engine: str = "auto", warn: Log = _warn
         ) -> Classifier:
    """A trained run as a classifier (default runs/latest). engine: auto (ONNX Runtime when
    the run has an up-to-date model.onnx, else Keras: `warn` says why), onnx, onnx-int8 (the
    int8 model `export(quantize=True)` writes) or tf. `run` may name an int8 ONNX file
    (RUN/model.int8.onnx): that file is run."""
    from bilstm_cli.errors import UserError
    from bilstm_cli.predict import Classifier, OnnxEngine, choose_engine
    from bilstm_cli.quantize import is_int8_file
    from bilstm_cli.runs import ONNX_FILE, resolve_model

    run_dir = resolve_model(None if run is None else str(run))
    if run is not None and Path(run).is_file() and is_int8_file(Path(run)):
        if engine not in ("auto", "onnx-int8"):
            raise UserError(f"{run} is an int8 ONNX model, which engine {engine} does not run: "
                            "leave the engine at auto (--engine auto), or give the run folder")
        return Classifier(run_dir, OnnxEngine(Path(run)))
    chosen = choose_engine(run_dir, engine)
    if engine == "auto" and chosen == "tf":
        if (run_dir / ONNX_FILE).is_file():
            warn(f"{run_dir / ONNX_FILE} is older than model.keras, using TensorFlow; "
                 f"refresh it with `bilstm export {run_dir}`")
        else:
            warn(f"{run_dir} has no {ONNX_FILE}, so TensorFlow is loaded (seconds); "
                 f"`bilstm export {run_dir}` writes it once for fast starts")
    if chosen == "tf":
        backend.setup(filter_native_logs=False)
    return Classifier(run_dir, chosen)


def predict(texts: Sequence[str], run: str | Path | Classifier | None = None,
            engine: str = "auto") -> list[tuple[str, float]]:
    """The most probable label of each text and its probability, in order."""
    from bilstm_cli.predict import Classifier

    classifier = run if isinstance(run, Classifier) else load(run, engine)
    probabilities = classifier.predict(list(texts))
    best = classifier.decide(probabilities)
    return [(classifier.labels[i], float(p[i])) for i, p in zip(best, probabilities)]


def evaluate(data: str | Path, run: str | Path | None = None, data_format: str = "auto",
             engine: str = "auto", batch_size: int = 256, warn: Log = _warn,
             **columns: Any) -> dict[str, Any]:
    """Accuracy, per-class metrics and the confusion matrix of a run on labelled data: a file,
    a folder of class folders, or imdb:test / sst2:test. `columns` override the run's data
    settings for reading it: text_column, label_column, header, on_bad_row."""
    from bilstm_cli.config import DataConfig
    from bilstm_cli.data import load_builtin_split, read_labelled
    from bilstm_cli.evaluate import evaluate_dataset
    from bilstm_cli.runs import (
        resolve_model,
        run_data_config,
        run_data_section,
        training_data_warning,
    )

    data = str(data)
    run_dir = resolve_model(None if run is None else str(run))
    section = run_data_section(run_dir)
    seen_in_training = training_data_warning(section, data)
    if seen_in_training:
        warn(seen_in_training)
    if ":" in data and not Path(data).exists():
        dataset = load_builtin_split(data)
    else:
        settings = {**run_data_config(section),
                    **{k: v for k, v in columns.items() if v is not None}}
        dataset = read_labelled(data, DataConfig(dataset=None, train=data, **settings),
                                data_format, skip_hint="pass --on-bad-row skip")
        if dataset.skipped:
            warn(f"{dataset.skipped} bad row(s) of {data} skipped (on_bad_row: skip), "
                 f"e.g. {dataset.bad_rows[0]}")
        for note in dataset.notes:  # e.g. a sub-folder that is not one of the labels
            warn(note)
    report = evaluate_dataset(load(run or run_dir, engine, warn), dataset, batch_size)
    report["skipped_rows"] = dataset.skipped
    return report


def export(run: str | Path | None = None, output: Path | None = None,
           quantize: bool = False) -> Path:
    """Write a run's model as ONNX (default RUN/model.onnx) and return the file's path. With
    `quantize`, also its int8 twin next to it (model.int8.onnx: `quantize.int8_path`), which
    `load(run, "onnx-int8")` runs; an int8 twin already there is rewritten either way."""
    from bilstm_cli.runs import resolve_model

    backend.setup(filter_native_logs=False)
    from bilstm_cli.export import export_run

    return export_run(resolve_model(None if run is None else str(run)), output, quantize)


def runs(folder: str | Path = "runs") -> list[dict[str, Any]]:
    """The run folders in `folder`: data set, uni/bi, epochs, accuracies, state, latest."""
    from bilstm_cli.runstate import list_runs

    return list_runs(Path(folder))


def datasets(warn: Log = _warn) -> list[dict[str, str]]:
    """The built-in data sets: name, status (available / not downloaded / unreadable), where
    (its file, or the address it downloads from and the cache it goes to), description."""
    from bilstm_cli.data.download import BUILTIN, cache_dir, locate, url_for, verify_archive
    from bilstm_cli.errors import UserError

    rows = []
    for name, info in BUILTIN.items():
        found = locate(name)
        if found is None:
            rows.append({"name": name, "status": "not downloaded",
                         "where": f"{url_for(name)} -> {cache_dir()}",
                         "description": info.description})
            continue
        where = "BILSTM_DATA_DIR" if found.where == "data dir" else "cache"
        status = f"available ({where})"
        try:
            verify_archive(name, found)
        except UserError as exc:
            warn(str(exc))
            status = f"unreadable ({where})"
        rows.append({"name": name, "status": status, "where": str(found.path),
                     "description": info.description})
    return rows


def download(name: str, log: Log = _quiet, warn: Log = _warn) -> Path:
    """A built-in data set's archive, downloaded into the cache (checksum verified) unless it
    is already here and intact; returns its path."""
    from bilstm_cli.data.download import fetch, locate, verify_archive
    from bilstm_cli.errors import UserError

    found = locate(name)
    try:
        if found is not None:
            verify_archive(name, found)
    except UserError as exc:
        if found is None or found.where == "data dir":
            raise  # the user's own file: theirs to replace
        warn(f"{exc}: downloading it again")
        found = None
    if found is None:
        return fetch(name)
    log(f"{name}: already here")
    return found.path


COMPARE_FILES = ("compare.json", "compare.md", "compare.png")


@dataclass
class Comparison:
    """What `compare` found (compare.json's content) and the files it wrote."""

    report: dict[str, Any]
    files: list[Path]


def compare(source: ConfigSource = None, overrides: Sequence[str] = (),
            variants: Sequence[str] = (), seeds: int = 3, output: str | Path = "compare",
            log: Log = _quiet, warn: Log = _warn, progress: ProgressFactory | None = None,
            command: list[str] | None = None) -> Comparison:
    """Train each variant (`NAME:key=value,...`; default lstm and bilstm) of a config for
    `seeds` seeds, each an ordinary run folder in OUTPUT/runs/<variant>-s<seed> on the same
    split and vocabulary, then compare them (`compare_runs`). Run again after a stop, it keeps
    the finished runs and resumes the others. Ctrl-C raises TrainingInterrupted."""
    from dataclasses import replace

    from bilstm_cli.compare import measure
    from bilstm_cli.compare.plan import plan, state

    output = Path(output)
    runs = plan(source, overrides, variants, seeds, output, warn)
    tests: dict[str, Dataset] = {}
    like: Training | None = None
    for number, run in enumerate(runs, start=1):
        where = f"{run.variant}, seed {run.seed} ({number} of {len(runs)}): {run.folder}"
        status = state(run)
        if status == "finished":
            log(f"compare: {where}: finished before, kept")
            continue
        log(f"compare: {where}{' (resuming)' if status == 'resume' else ''}")
        same_data = like is not None and like.config.training.seed == run.seed
        training = prepare(run.config, run.folder if status == "resume" else None,
                           like=like if same_data else None, log=log, warn=warn)
        like = like if same_data else training
        if training.splits.test is not None:
            tests[measure.test_key(training.config)] = training.splits.test
        replace(training, run_dir=run.folder).run(log, warn, progress, command)
    return _compare(_planned_groups(runs), output, log, warn, command, tests)


def _planned_groups(runs: list[PlannedRun]) -> list[tuple[str, list[str], list[Path]]]:
    groups: dict[str, tuple[str, list[str], list[Path]]] = {}
    for run in runs:
        groups.setdefault(run.variant, (run.variant, list(run.settings), []))[2].append(
            run.folder)
    return list(groups.values())


def compare_runs(runs: Sequence[str | Path], output: str | Path = "compare",
                 log: Log = _quiet, warn: Log = _warn, command: list[str] | None = None
                 ) -> Comparison:
    """Compare finished runs tested on the same test set: runs whose configs differ only in
    the seed are one variant (the first run's is the baseline). Writes compare.json,
    compare.md and (with matplotlib) compare.png into `output`."""
    from bilstm_cli.compare import measure, plan

    folders = [Path(run) for run in runs]
    groups = plan.groups_of(folders, [measure.finished_run(folder) for folder in folders])
    return _compare(groups, Path(output), log, warn, command)


def _compare(groups: list[tuple[str, list[str], list[Path]]], output: Path, log: Log,
             warn: Log, command: list[str] | None, tests: dict[str, Dataset] | None = None
             ) -> Comparison:
    """Measure every run on its test set, then write and return the comparison."""
    from bilstm_cli.compare import measure, plot, report, tables
    from bilstm_cli.runs import write_json_atomic, write_text_atomic

    cache = dict(tests or {})
    measured = []
    for name, settings, folders in groups:
        runs = []
        for folder in folders:
            config = measure.finished_run(folder)
            test = measure.test_set(folder, config, cache)
            log(f"compare: predicting {len(test):,} test texts with {folder}")
            runs.append(measure.measure(folder, config, load(folder, warn=warn), test))
        runs.sort(key=lambda run: run.config.training.seed)
        measured.append(report.Group(name, settings, runs))
    notes: list[str] = []
    result = report.build(measured, notes, command)
    json_file, markdown_file, picture = (output / name for name in COMPARE_FILES)
    missing = plot.write(result, picture)
    if missing:
        notes.append(missing)
    write_json_atomic(json_file, result)
    write_text_atomic(markdown_file, tables.markdown(result, None if missing else picture.name))
    for note in notes:
        warn(note)
    return Comparison(result, [json_file, markdown_file] + ([] if missing else [picture]))
