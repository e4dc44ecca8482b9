"""Inference: a trained run as a classifier, and streaming prediction over lines of text.

The classifier needs only the run folder's tokenizer, labels and model. Texts are tokenized here,
outside TensorFlow; the engine maps padded id batches to class probabilities: ONNX Runtime on
`model.onnx` when the run has one (no TensorFlow import, so a cold `predict` answers in well under
a second), else Keras on `model.keras`; or, when asked, ONNX Runtime on `model.int8.onnx`, the
same model with int8 weights (quantize.py).
"""

from __future__ import annotations

import json
import os
import select
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bilstm_cli.errors import UserError
from bilstm_cli.records import MISSING, json_field
from bilstm_cli.runcheck import ModelShape, check_fits, check_keras_file, keras_shape, onnx_shape
from bilstm_cli.runs import (
    INT8_ONNX_FILE,
    MODEL_FILE,
    ONNX_FILE,
    RUN_FILE,
    TOKENIZER_FILE,
    read_labels,
)
from bilstm_cli.text import encode, length_batches, load_tokenizer, pad


def class_probabilities(outputs: Any, num_classes: int) -> np.ndarray:
    """One column per class (the binary model's sigmoid gives only P(second class))."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if num_classes == 2:
        positive = outputs.reshape(-1)
        return np.stack([1.0 - positive, positive], axis=1)
    return outputs


def load_keras_model(path: Path) -> Any:
    """The run's Keras model (imports TensorFlow: several seconds on a cold start). A damaged
    file, or one holding code (a Lambda layer), is refused before TensorFlow is imported."""
    if not path.is_file():
        raise UserError(f"{path} is missing: the run folder has no Keras model")
    check_keras_file(path)
    import keras

    import bilstm_cli.accel.layers  # noqa: F401 - registers the layers of runs saved before 12-05
    import bilstm_cli.model  # noqa: F401 - registers its layers (word dropout, the pooling)

    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        # Keras says what it could not rebuild (an unknown layer, a weight that does not fit)
        # in a message as long as the model's config: its first sentence is enough.
        why = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise UserError(f"{path} cannot be loaded as a bilstm model ({why}): train again, or "
                        "restore the run's own model.keras") from None


def load_run_model(run_dir: Path) -> Any:
    """The run's Keras model, refused unless it fits the run's labels.json and tokenizer.json
    (for `export`, which has no Classifier)."""
    model = load_keras_model(run_dir / MODEL_FILE)
    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    check_fits(run_dir, keras_shape(model, run_dir / MODEL_FILE), read_labels(run_dir),
               tokenizer.get_vocab_size())
    return model


class TensorFlowEngine:
    """Runs the Keras model; an ensemble's members one after another, so that only one
    member's activations are in memory at a time (the mean is the ensemble model's output)."""

    name = "tf"

    def __init__(self, model: Any) -> None:
        self.path = Path(model) if isinstance(model, (str, Path)) else Path(MODEL_FILE)
        # Loaded before model.py is imported: a damaged file is refused without TensorFlow.
        self.model = load_keras_model(self.path) if isinstance(model, (str, Path)) else model
        from bilstm_cli.ensemble import members_of

        self.members = members_of(self.model)

    def shape(self) -> ModelShape:
        return keras_shape(self.model, self.path)

    def run(self, ids: np.ndarray) -> np.ndarray:
        if len(self.members) == 1:
            return np.asarray(self.model.predict_on_batch(ids))
        return np.mean([np.asarray(member.predict_on_batch(ids)) for member in self.members],
                       axis=0)


class OnnxEngine:
    """Runs `model.onnx` on ONNX Runtime: the same numbers as Keras, without TensorFlow (or
    `model.int8.onnx`: within quantization's rounding of them)."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        from bilstm_cli.quantize import is_int8_file

        if is_int8_file(path):
            self.name = "onnx-int8"
        flag = " --quantize" if is_int8_file(path) else ""
        remake = f"`bilstm export {path.parent}{flag}`"
        if not path.is_file():
            raise UserError(f"{path} is missing: write it with {remake}")
        options = ort.SessionOptions()
        # One LSTM op at a time: the cores go to the op itself (a batch of texts gains little
        # beyond 4 threads, and a pipeline tool should leave cores to its neighbours). Threads do
        # not busy-wait for the next batch, which on a slow pipe may be seconds away.
        options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own, unexported error types
            raise UserError(f"{path}: cannot load the ONNX model ({exc}); re-create it with "
                            f"{remake}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def shape(self) -> ModelShape:
        return onnx_shape(self.session, self.path)

    def run(self, ids: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: ids.astype(np.int32, copy=False)})[0]


ENGINES = ("auto", "onnx", "onnx-int8", "tf")


def choose_engine(run_dir: Path, engine: str = "auto") -> str:
    """`onnx`, `onnx-int8` or `tf` for a run: auto takes ONNX when `model.onnx` is there and not
    older than `model.keras` (an older one would predict with outdated weights), or when the run
    finished: a finished training exports its final model, and a copied run folder (`cp -r`, an
    unzip) has the copy's file times, in any order. auto never takes the int8 model: its
    answers are rounded, so it runs only when asked for."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == "onnx-int8" and not (run_dir / INT8_ONNX_FILE).is_file():
        raise UserError(f"{run_dir} has no int8 model ({INT8_ONNX_FILE}): make it with "
                        f"`bilstm export {run_dir} --quantize`")
    if engine != "auto":
        return engine
    onnx_file, keras_file = run_dir / ONNX_FILE, run_dir / MODEL_FILE
    if not onnx_file.is_file():
        return "tf"
    if keras_file.is_file() and keras_file.stat().st_mtime > onnx_file.stat().st_mtime \
            and not _finished(run_dir):
        return "tf"
    return "onnx"


def _finished(run_dir: Path) -> bool:
    try:
        record = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("state") == "finished"


def make_engine(run_dir: Path, engine: str = "auto") -> OnnxEngine | TensorFlowEngine:
    chosen = choose_engine(run_dir, engine)
    if chosen in ("onnx", "onnx-int8"):
        return OnnxEngine(run_dir / (ONNX_FILE if chosen == "onnx" else INT8_ONNX_FILE))
    return TensorFlowEngine(run_dir / MODEL_FILE)


# Padded tokens per inference batch: 256 texts of up to 256 tokens, 81 of 800. Each LSTM
# direction holds about 4 x units floats per token for its input projection (67 MB at 64 units).
BATCH_TOKENS = 65_536


class Classifier:
    """A run folder as a text classifier. `engine`: an engine object, or one of ENGINES."""

    def __init__(self, run_dir: Path, engine: Any = "auto") -> None:
        self.run_dir = run_dir
        self.tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
        self.labels = read_labels(run_dir)
        self.engine = make_engine(run_dir, engine) if isinstance(engine, str) else engine
        shape = getattr(self.engine, "shape", None)  # a stand-in engine may not say
        if callable(shape):
            check_fits(run_dir, shape(), self.labels, self.tokenizer.get_vocab_size())

    def predict_ids(self, ids: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Probabilities (N, classes), in input order; batches group texts of similar length,
        and batches of long texts hold fewer of them (at most BATCH_TOKENS padded tokens), so
        memory stays flat however long the texts are."""
        result = np.zeros((len(ids), len(self.labels)), dtype=np.float64)
        lengths = np.array([len(x) for x in ids])
        for bucket in length_batches(lengths, batch_size):
            start = 0
            while start < len(bucket):
                # As many texts as fit in BATCH_TOKENS when padded to the longest of them (the
                # bucket is sorted by length: one long text does not shrink every batch).
                end, longest = start + 1, max(1, int(lengths[bucket[start]]))
                while end < len(bucket):
                    longest = max(longest, int(lengths[bucket[end]]))
                    if (end + 1 - start) * longest > BATCH_TOKENS:
                        break
                    end += 1
                batch = bucket[start:end]
                outputs = self.engine.run(pad([ids[i] for i in batch]))
                result[batch] = class_probabilities(outputs, len(self.labels))
                start = end
        return result

    def predict(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self.predict_ids(encode(self.tokenizer, texts), batch_size)

    def decide(self, probabilities: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Class index per row: the most probable, or P(second class) >= threshold for two."""
        if threshold is not None:
            if len(self.labels) != 2:
                raise UserError(f"--threshold needs a two-class model; this one has "
                                f"{len(self.labels)} labels ({', '.join(self.labels)})")
            return (probabilities[:, 1] >= threshold).astype(np.int64)
        return probabilities.argmax(axis=1)


def format_prediction(
    text: str,
    probabilities: np.ndarray,
    choice: int,
    labels: Sequence[str],
    output_format: str = "tsv",
    top_k: int = 1,
    identifier: Any = None,
    with_id: bool = False,
    all_probabilities: bool = False,
) -> str:
    """One output line for one input text.

    label: the label (then the next of the top k); tsv: label<TAB>probability (then the next
    of the top k). `with_id` puts the input's id first (a jsonl "id" key);
    `all_probabilities` appends one column per class, in the model's label order, to label and
    tsv lines.
    """
    order = [choice] + [int(i) for i in np.argsort(-probabilities, kind="stable") if i != choice]
    top = order[: max(1, top_k)]
    if output_format in ("label", "tsv"):
        if output_format == "label":
            fields = [labels[i] for i in top]
        else:
            fields = [f"{labels[i]}\t{probabilities[i]:.6f}" for i in top]
        if all_probabilities:
            fields += [f"{p:.6f}" for p in probabilities]
        if with_id:
            fields.insert(0, _id_field(identifier))
        return "\t".join(fields)
    record: dict[str, Any] = {"id": identifier} if with_id else {}
    record |= {
        "text": text,
        "label": labels[choice],
        "probability": round(float(probabilities[choice]), 6),
        "probabilities": {label: round(float(p), 6) for label, p in zip(labels, probabilities)},
    }
    if top_k > 1:
        record["top_k"] = [
            {"label": labels[i], "probability": round(float(probabilities[i]), 6)} for i in top
        ]
    return json.dumps(record, ensure_ascii=False)


def _id_field(identifier: Any) -> str:
    """An id as one TSV field: strings as they are, other JSON values as JSON, none as empty."""
    if identifier is None:
        return ""
    text = identifier if isinstance(identifier, str) else json.dumps(identifier)
    return text.replace("\t", " ").replace("\n", " ")


def _decode(raw: bytes, source: str, number: int, errors: str) -> str:
    line = raw.rstrip(b"\n").rstrip(b"\r")
    if number == 1:
        line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not text
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        if errors == "replace":
            return line.decode("utf-8", errors="replace")
        raise UserError(
            f"{source}:{number}: invalid UTF-8 (fix the input, or pass --errors replace)"
        ) from None


def line_batches(
    fd: int, batch_size: int, source: str = "<stdin>", errors: str = "strict"
) -> Iterator[list[str]]:
    """Lines from a file descriptor, in batches of at most `batch_size`.

    A batch is handed on as soon as no more input is waiting, so a line typed on a terminal or
    sent through a slow pipe is answered at once instead of waiting for a full batch. A line that
    is not UTF-8 (with errors="strict") first hands on the lines before it, then raises.
    """
    pending = b""
    batch: list[str] = []
    number = 0
    while True:
        waiting = bool(select.select([fd], [], [], 0)[0]) if batch else True
        if not waiting:
            yield batch
            batch = []
            continue
        chunk = os.read(fd, 1 << 16)
        if chunk:
            *complete, pending = (pending + chunk).split(b"\n")
        else:  # end of input: a last line without a newline is a line too
            complete, pending = ([pending] if pending else []), b""
        for raw in complete:
            number += 1
            try:
                batch.append(_decode(raw, source, number, errors))
            except UserError:
                if batch:
                    yield batch
                raise
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if not chunk:
            break
    if batch:
        yield batch


def file_line_batches(
    path: str, batch_size: int, errors: str = "strict"
) -> Iterator[list[str]]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise UserError(f"input file not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    try:
        yield from line_batches(fd, batch_size, path, errors)
    finally:
        os.close(fd)


Record = tuple[Any, str]  # (id or None, text): one input line


def parse_records(
    batches: Iterable[list[str]],
    input_format: str = "text",
    text_column: str = "text",
    id_column: str | None = None,
    source: str = "<stdin>",
) -> Iterator[list[Record]]:
    """(id, text) for every input line, in batches as they came.

    text: the line is the text. tsv: tab-separated fields, no quoting (one record per line);
    columns are 0-based indices, or names read from a header line when any column is a name
    (the header gives no output). jsonl: one object per line, columns are keys. An empty line is
    an empty text with no id, so the output stays aligned with the input.
    """
    if input_format == "text":
        for lines in batches:
            yield [(None, line) for line in lines]
        return
    if input_format not in ("tsv", "jsonl"):
        raise UserError(f"unknown input format {input_format!r}: choose text, tsv or jsonl")
    parse = _jsonl_record if input_format == "jsonl" else _tsv_record
    columns: dict[str, str | int] = {"text": text_column}
    if id_column is not None:
        columns["id"] = id_column
    if input_format == "tsv":
        columns = {role: int(c) if c.isdigit() else c for role, c in columns.items()}
    needs_header = any(isinstance(c, str) for c in columns.values()) and input_format == "tsv"
    number = 0
    for lines in batches:
        records: list[Record] = []
        for line in lines:
            number += 1
            try:
                if needs_header:
                    columns = _header_columns(line.split("\t"), columns, f"{source}:{number}")
                    needs_header = False
                elif not line.strip():
                    records.append((None, ""))
                else:
                    records.append(parse(line, columns, f"{source}:{number}"))
            except UserError:
                if records:  # the lines before the bad one still get their answers
                    yield records
                raise
        if records:
            yield records


def _header_columns(
    header: list[str], columns: dict[str, str | int], where: str
) -> dict[str, str | int]:
    """Column names to indices, from a TSV header line."""
    resolved = dict(columns)
    for role, column in columns.items():
        if isinstance(column, str):
            if column not in header:
                raise UserError(
                    f"{where}: the header has no column {column!r} (it has: "
                    f"{', '.join(header)}); choose one with --{role}-column NAME or a 0-based "
                    "index (then the file has no header)"
                )
            resolved[role] = header.index(column)
    return resolved


def _tsv_record(line: str, columns: dict[str, str | int], where: str) -> Record:
    fields = line.split("\t")
    needed = max(int(c) for c in columns.values())
    if needed >= len(fields):
        raise UserError(f"{where}: {len(fields)} tab-separated field(s), but column {needed} "
                        "(0-based) is needed")
    identifier = fields[int(columns["id"])] if "id" in columns else None
    return identifier, fields[int(columns["text"])]


def _jsonl_record(line: str, columns: dict[str, str | int], where: str) -> Record:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object per line")
    key = str(columns["text"])
    text = json_field(row, key, MISSING)
    if text is MISSING:
        raise UserError(f"{where}: no key {key!r} (keys: {', '.join(map(str, row))}); choose "
                        "one with --text-column (nested keys with dots: meta.review)")
    if text is None:
        text = ""
    elif isinstance(text, (int, float, bool)):
        text = json.dumps(text)
    elif not isinstance(text, str):
        raise UserError(f"{where}: the value of {key!r} is not a string")
    identifier = json_field(row, columns["id"]) if "id" in columns else None
    return identifier, text


def predict_lines(
    classifier: Classifier,
    batches: Iterable[list[Record]],
    output_format: str = "tsv",
    top_k: int = 1,
    threshold: float | None = None,
    probabilities: bool = False,
    with_id: bool = False,
) -> Iterator[list[str]]:
    """Output lines per input batch, one per input record and in order."""
    for records in batches:
        texts = [text for _, text in records]
        scores = classifier.predict(texts, batch_size=max(len(texts), 1))
        choices = classifier.decide(scores, threshold)
        yield [
            format_prediction(text, p, int(c), classifier.labels, output_format, top_k,
                              identifier, with_id, probabilities)
            for (identifier, text), p, c in zip(records, scores, choices)
        ]
