"""Inference: a trained run as a classifier, and streaming prediction over lines of text.

The classifier needs only the run folder's tokenizer, labels and model. Texts are tokenized here,
outside TensorFlow; the engine maps padded id batches to class probabilities.
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
from bilstm_cli.runs import MODEL_FILE, TOKENIZER_FILE, read_labels
from bilstm_cli.text import encode, length_batches, load_tokenizer, pad


def class_probabilities(outputs: Any, num_classes: int) -> np.ndarray:
    """One column per class (the binary model's sigmoid gives only P(second class))."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if num_classes == 2:
        positive = outputs.reshape(-1)
        return np.stack([1.0 - positive, positive], axis=1)
    return outputs


class TensorFlowEngine:
    """Runs the Keras model (imports TensorFlow: several seconds on a cold start)."""

    name = "tf"

    def __init__(self, model: Any) -> None:
        if isinstance(model, (str, Path)):
            from bilstm_cli.backend import keras
            from bilstm_cli.model import MaskedGlobalMaxPooling1D  # noqa: F401 - registers it

            path = Path(model)
            if not path.is_file():
                raise UserError(f"{path} is missing: the run folder has no Keras model")
            model = keras.saving.load_model(path, compile=False)
        self.model = model

    def run(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(ids))


class Classifier:
    def __init__(self, run_dir: Path, engine: Any | None = None) -> None:
        self.run_dir = run_dir
        self.tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
        self.labels = read_labels(run_dir)
        self.engine = engine or TensorFlowEngine(run_dir / MODEL_FILE)

    def predict_ids(self, ids: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Probabilities (N, classes), in input order; batches group texts of similar length."""
        result = np.zeros((len(ids), len(self.labels)), dtype=np.float64)
        lengths = np.array([len(x) for x in ids])
        for batch in length_batches(lengths, batch_size):
            outputs = self.engine.run(pad([ids[i] for i in batch]))
            result[batch] = class_probabilities(outputs, len(self.labels))
        return result

    def predict(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self.predict_ids(encode(self.tokenizer, texts), batch_size)

    def decide(self, probabilities: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Class index per row: the most probable, or P(second class) >= threshold for two."""
        if threshold is not None and len(self.labels) == 2:
            return (probabilities[:, 1] >= threshold).astype(np.int64)
        return probabilities.argmax(axis=1)


def format_prediction(
    text: str,
    probabilities: np.ndarray,
    choice: int,
    labels: Sequence[str],
    output_format: str = "tsv",
    top_k: int = 1,
) -> str:
    """One output line for one input text."""
    order = [choice] + [int(i) for i in np.argsort(-probabilities, kind="stable") if i != choice]
    top = order[: max(1, top_k)]
    if output_format == "label":
        return labels[choice]
    if output_format == "tsv":
        return "\t".join(f"{labels[i]}\t{probabilities[i]:.6f}" for i in top)
    record: dict[str, Any] = {
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


def _decode(raw: bytes, source: str, number: int, errors: str) -> str:
    line = raw.rstrip(b"\n").rstrip(b"\r")
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
    sent through a slow pipe is answered at once instead of waiting for a full batch.
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
        if not chunk:
            break
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            number += 1
            batch.append(_decode(raw, source, number, errors))
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if pending:
        number += 1
        batch.append(_decode(pending, source, number, errors))
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


def predict_lines(
    classifier: Classifier,
    batches: Iterable[list[str]],
    output_format: str = "tsv",
    top_k: int = 1,
    threshold: float | None = None,
) -> Iterator[list[str]]:
    """Output lines per input batch, one per input line and in order."""
    for texts in batches:
        probabilities = classifier.predict(texts, batch_size=max(len(texts), 1))
        choices = classifier.decide(probabilities, threshold)
        yield [
            format_prediction(text, p, int(c), classifier.labels, output_format, top_k)
            for text, p, c in zip(texts, probabilities, choices)
        ]
