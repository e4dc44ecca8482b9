"""The config schema, YAML loading and `--set` overrides.

Every key has a default here; `configs/reference.yaml` documents them. Errors are collected and
reported all at once, each with its key path (and the YAML line when the key came from a file).
"""

from __future__ import annotations

import copy
import difflib
import os
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bilstm_cli.errors import UserError

BUILTIN_DATASETS = ("imdb", "sst2")

# Keys that were removed (tried and not kept, benchmarks/HISTORY.md), with the value that meant
# "off". A run's config.yaml written before their removal holds that value: it is dropped. Any
# other value is an error that says so.
REMOVED_KEYS: dict[tuple[str, ...], Any] = {
    ("training", "ema_momentum"): 0.0,
    ("model", "normalize_embeddings"): False,
}


# Keys added after runs were made whose default has since changed, with what a run did before
# the key existed. A run's config.yaml that lacks one reads as that (`as_run_did`), not as
# today's default; every other added key's default is what runs did before it.
ADDED_KEYS: dict[tuple[str, str], Any] = {
    ("model", "word_dropout"): 0.0,  # d8ab3ad, 2026-11-29
    ("model", "ensemble"): 1,  # dd49999, 2026-11-30
    ("training", "lr_schedule"): "constant",  # 807f86e, 2026-11-30
    ("model", "embedding_init"): "random",  # 7b9b71a, 2026-12-01
    ("model", "word_dropout_by"): "uniform",  # d7dad95, 2026-12-06
}


def as_run_did(raw: Any) -> Any:
    """A run's config.yaml as what that run did: each of ADDED_KEYS it lacks, as it was before
    the key existed (a resumed run goes on as it started; compare sees what an old run was
    trained with). `word_dropout_by` is left out where the run had no word dropout: there it
    means nothing, and today's default keeps compare from seeing a difference."""
    if not isinstance(raw, dict):
        return raw
    raw = copy.deepcopy(raw)
    for (section, key), then in ADDED_KEYS.items():
        values = raw.get(section)
        if isinstance(values, dict) and key not in values:
            if key != "word_dropout_by" or values.get("word_dropout"):
                values[key] = then
    return raw


def whole_number_or_auto(value: Any, minimum: int) -> Any:
    """A key that takes `auto` (resolved from the training data: auto.py) or a number; one
    clear message instead of one per union member."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                           and value >= minimum):
        return value
    raise ValueError(f"expected auto or a whole number >= {minimum} (got {value!r})")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    dataset: Literal["imdb", "sst2"] | None = "imdb"
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    format: Literal["auto", "tsv", "csv", "jsonl", "fasttext", "folder", "parquet"] = "auto"
    text_column: str | int = "text"
    label_column: str | int = "label"
    header: bool | Literal["auto"] = "auto"
    label_prefix: str = Field("__label__", min_length=1)
    labels: list[str] | None = Field(None, min_length=2)
    on_bad_row: Literal["error", "skip"] = "error"
    validation_split: float = Field(0.1, gt=0.0, lt=1.0)
    validation_by: Literal["text", "sentence", "block"] = "text"
    max_examples: int | None = Field(None, ge=2)
    tokenizer: Literal["word", "wordpiece"] = "word"
    max_tokens: int | Literal["auto"] = "auto"
    min_frequency: int = Field(1, ge=1)
    lowercase: bool = True
    max_length: int | Literal["auto"] = "auto"
    truncate: Literal["end", "start"] = "end"

    @field_validator("labels", mode="before")
    @classmethod
    def _distinct_labels(cls, labels: Any) -> Any:
        """Labels are strings (YAML reads `[0, 1]` as numbers), each listed once."""
        if isinstance(labels, list):
            labels = [str(label).strip() for label in labels]
            if "" in labels:
                raise ValueError("a label is empty")
            for label in labels:
                control = next((ch for ch in label if unicodedata.category(ch) == "Cc"), None)
                if control is not None:
                    raise ValueError(f"label {label!r} holds a control character "
                                     f"(U+{ord(control):04X}); remove it")
            if len(set(labels)) != len(labels):
                raise ValueError(f"a label is listed twice ({', '.join(labels)})")
        return labels

    @field_validator("max_tokens", "max_length", mode="before")
    @classmethod
    def _sizes(cls, value: Any, info: ValidationInfo) -> Any:
        return whole_number_or_auto(value, 3 if info.field_name == "max_tokens" else 1)

    @model_validator(mode="after")
    def _dataset_or_files(self) -> DataConfig:
        if self.dataset is None and self.train is None:
            raise ValueError("give data.dataset (imdb or sst2) or data.train (a file)")
        if self.dataset is not None and self.train is not None:
            raise ValueError(
                "data.dataset and data.train are both set: set data.dataset to null to train "
                "on your own files"
            )
        if self.dataset is not None and (self.validation or self.test):
            key = "data.validation" if self.validation else "data.test"
            raise ValueError(
                f"{key} is read only with your own data.train; data.dataset "
                f"({self.dataset}) brings its own test split and holds validation out of its "
                f"training set: set data.dataset to null and give data.train too, or drop {key}"
            )
        return self


class ModelConfig(Section):
    bidirectional: bool = False
    layers: int = Field(1, ge=1, le=8)
    units: int = Field(64, ge=1)
    embedding_dim: int = Field(256, ge=1)
    embedding_init: Literal["random", "cooccurrence"] = "cooccurrence"
    embedding_init_scale: float = Field(4.0, gt=0.0)
    word_dropout: float = Field(0.25, ge=0.0, lt=1.0)
    word_dropout_by: Literal["uniform", "frequency"] = "frequency"
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    recurrent_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    merge_mode: Literal["concat", "sum", "ave", "mul"] = "concat"
    pooling: Literal["last", "max", "mean", "max_mean"] = "max_mean"
    ensemble: int = Field(3, ge=1, le=16)


class TrainingConfig(Section):
    epochs: int | Literal["auto"] = "auto"
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(0.002, gt=0.0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    clipnorm: float | None = Field(1.0, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    adversarial: float = Field(0.0, ge=0.0)
    consistency: float = Field(0.0, ge=0.0)
    early_stopping_patience: int = Field(2, ge=0)
    monitor: Literal["val_loss", "val_accuracy"] = "val_accuracy"
    seed: int = Field(42, ge=0)
    bucket_by_length: bool = True
    threads: int | None = Field(None, ge=1)
    tensorboard: bool = False
    # auto: the fused CPU kernel where it runs (bilstm_cli/accel), else Keras' own layers.
    kernel: Literal["auto", "keras", "fused"] = "auto"
    checkpoint_every: Literal["epoch"] | Annotated[int, Field(ge=1)] = "epoch"
    deterministic: bool = False
    # tf.distribute (distribute.py): auto is mirrored when more than one GPU is visible.
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs(cls, value: Any) -> Any:
        return whole_number_or_auto(value, 1)

    @field_validator("checkpoint_every", mode="before")
    @classmethod
    def _checkpoint_every(cls, value: Any) -> Any:
        """One clear message instead of one per union member."""
        if value == "epoch" or (isinstance(value, int) and not isinstance(value, bool)
                                and value >= 1):
            return value
        raise ValueError(f"expected epoch or a number of steps >= 1 (got {value!r})")
    class_weight: Literal["none", "balanced"] | dict[str, float] = "none"

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_weight(cls, value: Any) -> Any:
        """One clear message instead of one per union member; label keys as strings."""
        if value is None:
            return "none"
        if isinstance(value, dict):
            for label, weight in value.items():
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                    raise ValueError(f"the weight of {label!r} must be a positive number "
                                     f"(got {weight!r})")
            return {str(label): float(weight) for label, weight in value.items()}
        if value not in ("none", "balanced"):
            raise ValueError(f"expected none, balanced, or a mapping {{label: weight}} "
                             f"(got {value!r})")
        return value

    @model_validator(mode="after")
    def _one_extra_loss(self) -> TrainingConfig:
        if self.adversarial and self.consistency:
            raise ValueError(
                "training.adversarial and training.consistency are both set: each learns every "
                "batch a second way, and bilstm does one at a time; set the other to 0"
            )
        return self


class OutputConfig(Section):
    dir: str = "runs"
    name: str | None = None
    quantize: bool = False


class Config(Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    output: OutputConfig = OutputConfig()


def builtin_config_dir() -> Path:
    """The shipped configs: inside the installed package, or `configs/` in a source checkout."""
    packaged = Path(__file__).parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "configs"


def resolve_config_path(name_or_path: str | None) -> Path:
    """`--config` takes a path, or the name of a shipped config (`imdb`, `sst2`); default imdb."""
    if name_or_path is None:
        name_or_path = "imdb"
    path = Path(name_or_path)
    if path.is_file():
        return path
    # A folder that happens to share a shipped config's name (a data folder `sst2/`) is not it.
    shipped = builtin_config_dir() / f"{name_or_path}.yaml"
    if "/" not in name_or_path and shipped.exists():
        return shipped
    if path.is_dir():
        raise UserError(f"--config {name_or_path} is a folder: give a YAML config file")
    names = sorted(p.stem for p in builtin_config_dir().glob("*.yaml") if p.stem != "reference")
    raise UserError(
        f"config file not found: {name_or_path} (give a YAML file, or one of the shipped "
        f"configs: {', '.join(names)})"
    )


def default_config(overrides: Sequence[str] = ()) -> Path | dict[str, Any]:
    """What a training without --config starts from: for a built-in data set (data.dataset,
    imdb unless the overrides name another), its shipped config; for your own files
    (data.train given, data.dataset not), the schema's defaults, the recipe for any data set
    (configs/reference.yaml), the same a config file naming only data keys gets."""
    named: dict[str, Any] = {}
    for item in overrides:
        keys, value = parse_override(item)
        if keys in (("data", "dataset"), ("data", "train")):
            named[keys[1]] = value
    dataset = named["dataset"] if "dataset" in named else (
        None if named.get("train") is not None else "imdb")
    if dataset is None:
        return {}
    shipped = builtin_config_dir() / f"{dataset}.yaml"
    # An unknown name: the shipped default, whose data.dataset the schema then refuses by name.
    return shipped if shipped.is_file() else builtin_config_dir() / "imdb.yaml"


DATA_PATH_KEYS = ("data.train", "data.validation", "data.test")


def absolute_data_path(value: Any) -> Any:
    """A data file's path as an absolute one (`-`, stdin, and unset stay as they are): a run's
    config.yaml must name the same files wherever `train --resume` runs from."""
    if not isinstance(value, str) or value == "-" or not value:
        return value
    return os.path.abspath(os.path.expanduser(value))


def with_absolute_data_paths(config: Config) -> Config:
    data = config.data
    return config.model_copy(update={"data": data.model_copy(update={
        key: absolute_data_path(getattr(data, key)) for key in ("train", "validation", "test")
    })})


def load_config(
    path: str | Path | Mapping[str, Any] | None = None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    extra_names: dict[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
    run_file: bool = False,
) -> Config:
    """Read a YAML config (or take a mapping shaped like one), apply `--set` overrides then
    the CLI shortcuts, and validate. `run_file`: it is a run folder's config.yaml (`as_run_did`).
    `extra_names`: the option that set each shortcut key, for error messages (`--epochs`).
    `warn`: called once per key given (in the file or on the command line) that has no effect
    in the resulting config (`unused_settings`)."""
    raw: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    source = "<defaults>"
    if isinstance(path, Mapping):
        raw, source = copy.deepcopy(dict(path)), "<dict>"
    elif path is not None:
        config_path = Path(path)
        source = str(config_path)
        raw, lines = read_yaml_mapping(config_path)
    if run_file:
        raw = as_run_did(raw)
    merged = copy.deepcopy(raw)
    overridden: dict[tuple[str, ...], str] = {}  # key -> where the command line set it
    for item in overrides or []:
        keys, value = parse_override(item)
        _set_path(merged, keys, value)
        overridden[keys] = "--set"
    for dotted, value in (extra or {}).items():
        keys = tuple(dotted.split("."))
        _set_path(merged, keys, value)
        overridden[keys] = (extra_names or {}).get(dotted, "command line")
    data = merged.get("data")
    if isinstance(data, dict) and data.get("train") is not None and "dataset" not in data:
        data["dataset"] = None  # your own files: no built-in data set unless one is named
    config = validate_config(merged, source=source, lines=lines, overridden=overridden)
    if warn is not None:
        for message in unused_settings(config, _given_keys(merged)):
            warn(message)
    return config


def validate_config(
    raw: dict[str, Any],
    source: str = "<config>",
    lines: dict[tuple[str, ...], int] | None = None,
    overridden: dict[tuple[str, ...], str] | None = None,
) -> Config:
    lines = lines or {}
    overridden = overridden or {}
    raw = without_removed_keys(raw)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(err, raw, source, lines, overridden) for err in exc.errors()]
        listed = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        raise UserError(f"invalid config ({len(problems)} {noun}):\n{listed}") from None


def without_removed_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` less the removed keys that hold their "off" value (a run's older config.yaml)."""
    if not isinstance(raw, dict):
        return raw
    raw = copy.deepcopy(raw)
    for (section, key), off in REMOVED_KEYS.items():
        values = raw.get(section)
        if isinstance(values, dict) and key in values and values[key] == off:
            del values[key]
    return raw


def parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    """`section.key=value`, the value parsed as YAML (so `null`, `true`, `0.5`, `[a, b]` work)."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected section.key=value, e.g. --set model.units=128")
    dotted, text = item.split("=", 1)
    keys = tuple(k.strip() for k in dotted.strip().split("."))
    if len(keys) < 2 or not all(keys):
        raise UserError(
            f"--set {item!r}: the key must be section.key, e.g. --set training.epochs=3"
        )
    # "-" (stdin, as in data.train=-) would be YAML for a list holding null.
    if text.strip() == "-":
        return keys, "-"
    try:
        value = _parse_yaml(text)[1] if text.strip() else None
    except DuplicateKeyError as exc:
        raise UserError(f"--set {item!r}: the key {exc.key!r} is given twice: keep one") from None
    except (yaml.YAMLError, RecursionError) as exc:
        problem = getattr(exc, "problem", None) or "nested too deeply"
        raise UserError(f"--set {item!r}: the value is not valid YAML ({problem})") from None
    return keys, value


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that gives one key twice (`units: 64` ... `units: 128`)."""

    def __init__(self, key: Any, first: yaml.Node, second: yaml.Node) -> None:
        super().__init__("while constructing a mapping", first.start_mark,
                         f"found duplicate key {key!r}", second.start_mark)
        self.key, self.first, self.second = key, first, second


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML's python tags stay refused) that also refuses a key given
    twice in one mapping, where PyYAML would keep the last one silently. Keys brought in by a
    merge (`<<: *base`) may be overridden, as YAML means them to be."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if earlier is not key_node:
                raise DuplicateKeyError(key, earlier, key_node)
        return super().construct_mapping(node, deep)


def _parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for line numbers) and its value, by ConfigLoader."""
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def read_yaml_mapping(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """The mapping in a YAML config file (the user's, or a run's config.yaml) and the line of
    each key path. One UserError naming the file (and the line) when it cannot be read, is not
    UTF-8 text or not YAML, gives a key twice, or is not a mapping."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}): a config is "
            "a YAML text file; is it the right file?"
        ) from None
    try:
        node, raw = _parse_yaml(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise UserError(_yaml_problem(exc, path, text)) from None
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the config must be a mapping of sections (data, model, ...)")
    lines: dict[tuple[str, ...], int] = {}
    _collect_lines(node, (), lines)
    return raw, lines


def _yaml_problem(exc: BaseException, path: Path, text: str) -> str:
    """One line naming the file, the line and the problem."""
    if isinstance(exc, RecursionError):
        return f"{path}: nested too deeply to be a config (lists or mappings inside each other)"
    if isinstance(exc, DuplicateKeyError):
        first, second = exc.first.start_mark.line + 1, exc.second.start_mark.line + 1
        dotted = ".".join(_key_path(_parse_nodes(text), exc.second) or [str(exc.key)])
        return f"{path}:{second}: {dotted} is given twice (lines {first} and {second}): keep one"
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        return (f"{path}:{line}:{column}: not YAML text: the character U+{exc.character:04X} is "
                "not allowed in YAML; is it the right file?")
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{where}: YAML syntax error: {problem}"


def _parse_nodes(text: str) -> yaml.Node | None:
    """The node tree alone (it composes even where constructing fails)."""
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _key_path(node: yaml.Node | None, target: yaml.Node) -> list[str] | None:
    """The keys leading to the key node at `target`'s position, e.g. ["model", "units"]."""
    children: list[tuple[str, yaml.Node, yaml.Node | None]] = []
    if isinstance(node, yaml.MappingNode):
        children = [(str(k.value), v, k) for k, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [(str(i), v, None) for i, v in enumerate(node.value)]
    for name, child, key in children:
        if key is not None and key.start_mark.index == target.start_mark.index:
            return [name]
        below = _key_path(child, target)
        if below is not None:
            return [name, *below]
    return None


def _collect_lines(node: yaml.Node, prefix: tuple[str, ...], out: dict) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            keys = prefix + (str(key_node.value),)
            out[keys] = key_node.start_mark.line + 1
            _collect_lines(value_node, keys, out)


def _given_keys(raw: dict[str, Any]) -> set[tuple[str, ...]]:
    """The (section, key) pairs a config file and the command line gave."""
    return {(section, key) for section, keys in raw.items() if isinstance(keys, dict)
            for key in keys}


def unused_settings(config: Config, given: Collection[tuple[str, ...]]) -> list[str]:
    """One line per key in `given`, set to other than its default, that has no effect in
    `config` (merge_mode on a unidirectional model, ...): the key and why, in schema order."""
    reasons = dict(_unused_data_settings(config.data))
    if not config.model.bidirectional:
        reasons[("model", "merge_mode")] = ("it merges the two directions of a bidirectional "
                                            "LSTM, and model.bidirectional is false")
    if config.model.embedding_init != "cooccurrence":
        reasons[("model", "embedding_init_scale")] = (
            f"it scales the co-occurrence vectors, and model.embedding_init is "
            f"{config.model.embedding_init}")
    defaults = Config()
    messages = []
    for section in Config.model_fields:
        values, default = getattr(config, section), getattr(defaults, section)
        for key in type(values).model_fields:
            why = reasons.get((section, key))
            if why and (section, key) in given and getattr(values, key) != getattr(default, key):
                messages.append(f"{section}.{key} has no effect: {why}")
    return messages


def _unused_data_settings(data: DataConfig) -> dict[tuple[str, str], str]:
    """The data keys that do nothing with this data: a built-in set's archive has its own
    layout; columns, header and label prefix belong to some formats only."""
    if data.dataset is not None:
        why = f"data.dataset ({data.dataset}) is read from its own archive"
        return {("data", key): why for key in ("format", "text_column", "label_column",
                                               "header", "label_prefix", "on_bad_row")}
    reasons: dict[tuple[str, str], str] = {}
    if data.validation:
        for key in ("validation_split", "validation_by"):
            reasons[("data", key)] = "data.validation gives the validation set"
    formats = _file_formats(data)
    if formats is None:
        return reasons
    kinds = set(formats.values())
    read_as = (f"{', '.join(formats)} {'is' if len(formats) == 1 else 'are'} read as "
               f"{', '.join(sorted(kinds))}")
    if not kinds & {"tsv", "csv", "jsonl", "parquet"}:
        for key in ("text_column", "label_column"):
            reasons[("data", key)] = (f"fastText files and class folders have no columns, and "
                                      f"{read_as}")
    if not kinds & {"tsv", "csv"}:
        reasons[("data", "header")] = f"only tsv and csv files have a header row, and {read_as}"
    if "fasttext" not in kinds:
        reasons[("data", "label_prefix")] = (f"only fastText files have label prefixes, and "
                                             f"{read_as}")
    return reasons


def _file_formats(data: DataConfig) -> dict[str, str] | None:
    """{path: format} of the data files, or None where one's format cannot be told yet
    (reading it will say why)."""
    from bilstm_cli.data.readers import detect_format

    paths = [p for p in (data.train, data.validation, data.test) if p]
    try:
        return {path: detect_format(path, data.format) for path in paths}
    except UserError:
        return None


def _set_path(raw: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _describe(err: dict, raw: dict, source: str, lines: dict, overridden: dict) -> str:
    skipped = ("function-", "literal")
    loc = tuple(str(part) for part in err["loc"] if not str(part).startswith(skipped))
    # pydantic adds the union member tried ("str", "int", "bool", ...) to the location; drop it.
    loc = tuple(p for p in loc if p not in {"str", "int", "float", "bool", "none", "is-instance"})
    key = ".".join(loc) if loc else "(top level)"
    message = err["msg"]
    if err["type"] == "extra_forbidden" and loc in REMOVED_KEYS:
        message = ("this key was removed (tried and not kept: benchmarks/HISTORY.md); "
                   "delete it from the config")
    elif err["type"] == "extra_forbidden":
        message = f"unknown key{_did_you_mean(loc)}"
    elif err["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
        message = "expected a mapping of keys (e.g. `units: 64` on the next lines, indented)"
    elif "input" in err and err["type"] != "missing":
        message = f"{message} (got {err['input']!r})"
    setters = [name for key, name in overridden.items()
               if key[: len(loc)] == loc or loc[: len(key)] == key]
    if setters:
        where = setters[-1]  # the last one wins, as its value does
    elif loc in lines:
        where = f"{source}:{lines[loc]}"
    else:
        where = source
    return f"{key}: {message} [{where}]"


def _did_you_mean(loc: tuple[str, ...]) -> str:
    section: type[BaseModel] = Config
    for part in loc[:-1]:
        field = section.model_fields.get(part)
        if field is None or not isinstance(field.default, BaseModel):
            return ""
        section = type(field.default)
    matches = difflib.get_close_matches(loc[-1], list(section.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {'.'.join(loc[:-1] + (matches[0],))}?)" if matches else ""
