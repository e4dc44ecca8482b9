"""Readers for labelled files: TSV, CSV and JSONL.

Each reader yields (line_number, text, label) lazily and names the file and line of every bad row:
nothing is dropped silently.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from bilstm_cli.errors import UserError

FORMATS = {".tsv": "tsv", ".tab": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MAX_REPORTED = 10

csv.field_size_limit(sys.maxsize)

Row = tuple[int, str, str]


def detect_format(path: str, format: str) -> str:
    if format != "auto":
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise UserError(
            f"{path}: cannot tell the format from the extension {suffix or '(none)'!r} (known: "
            f"{known}); say it with data.format (tsv, csv or jsonl)"
        )
    return FORMATS[suffix]


def read_rows(
    path: str,
    format: str = "auto",
    text_column: str | int = "text",
    label_column: str | int | None = "label",
    header: bool | str = "auto",
) -> Iterator[Row]:
    """Yield (line, text, label) for each row; label is "" when label_column is None."""
    kind = detect_format(path, format)
    problems = _Problems(path)
    with _open_binary(path) as handle:
        lines = _decoded_lines(handle)
        if kind == "jsonl":
            rows = _jsonl_rows(lines, text_column, label_column, problems)
        else:
            rows = _table_rows(lines, kind, text_column, label_column, header, problems)
        yield from rows
    problems.raise_if_any()


class _Problems:
    """Collects bad rows so that one error lists the first few and counts the rest."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.messages: list[str] = []
        self.count = 0

    def add(self, line: int, message: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_REPORTED:
            self.messages.append(f"{self.path}:{line}: {message}")

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = self.count - len(self.messages)
        tail = f"\n  ... and {more} more" if more else ""
        listed = "\n".join(f"  {m}" for m in self.messages)
        raise UserError(f"{self.count} bad row(s) in {self.path}:\n{listed}{tail}")


def _open_binary(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's with-block
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; give a .tsv, .csv or .jsonl file") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def _decoded_lines(handle: BinaryIO) -> Iterator[tuple[int, str]]:
    """(line number, text) per physical line; invalid UTF-8 is kept as surrogates to report."""
    for number, raw in enumerate(handle, start=1):
        line = raw.decode("utf-8", errors="surrogateescape")
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield number, line


def _has_invalid_utf8(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _jsonl_rows(
    lines: Iterable[tuple[int, str]],
    text_key: str | int,
    label_key: str | int | None,
    problems: _Problems,
) -> Iterator[Row]:
    for number, line in lines:
        if not line.strip():
            continue
        if _has_invalid_utf8(line):
            problems.add(number, "invalid UTF-8")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.add(number, f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            problems.add(number, "expected a JSON object per line")
            continue
        text = record.get(str(text_key))
        label = "" if label_key is None else record.get(str(label_key))
        if not isinstance(text, str) or not text.strip():
            problems.add(number, f"missing or empty text (key {text_key!r})")
        elif label is None or label == "" or isinstance(label, (dict, list)):
            problems.add(number, f"missing label (key {label_key!r})")
        else:
            yield number, text, _label_str(label)


def _label_str(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


def _table_rows(
    lines: Iterable[tuple[int, str]],
    kind: str,
    text_column: str | int,
    label_column: str | int | None,
    header: bool | str,
    problems: _Problems,
) -> Iterator[Row]:
    by_name = isinstance(text_column, str) or isinstance(label_column, str)
    has_header = by_name if header == "auto" else bool(header)
    if by_name and not has_header:
        raise UserError(
            f"{problems.path}: columns are given by name but data.header is false; give column "
            f"indexes (e.g. data.text_column=0) or set data.header=true"
        )
    consumed = [0]  # physical lines read so far, to give each row its first line number

    def physical() -> Iterator[str]:
        for number, line in lines:
            consumed[0] = number
            yield line

    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {}
    reader = csv.reader(physical(), **dialect)
    text_index = label_index = None
    width = None
    if has_header:
        names = next(reader, None)
        if names is None:
            return
        names = [n.strip() for n in names]
        text_index = _column_index(names, text_column, "text_column", problems.path)
        label_index = (
            None if label_column is None
            else _column_index(names, label_column, "label_column", problems.path)
        )
        width = len(names)
    else:
        text_index = int(text_column)
        label_index = None if label_column is None else int(label_column)
    start = consumed[0] + 1
    for row in reader:
        number, start = start, consumed[0] + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if width is None:
            width = len(row)
        if len(row) != width:
            problems.add(number, f"expected {width} columns, found {len(row)}")
            continue
        if any(_has_invalid_utf8(field) for field in row):
            problems.add(number, "invalid UTF-8")
            continue
        needed = max(text_index, -1 if label_index is None else label_index)
        if needed >= len(row):
            problems.add(number, f"no column {needed} (the row has {len(row)})")
            continue
        text = row[text_index]
        label = "" if label_index is None else row[label_index].strip()
        if not text.strip():
            problems.add(number, "empty text")
        elif label_index is not None and not label:
            problems.add(number, "missing label")
        else:
            yield number, text, label


def _column_index(names: list[str], column: str | int, key: str, path: str) -> int:
    if isinstance(column, int):
        if column >= len(names):
            raise UserError(f"{path}: data.{key}={column} but the header has {len(names)} columns")
        return column
    if column not in names:
        raise UserError(
            f"{path}: no column named {column!r} for data.{key} (the header has: "
            f"{', '.join(names)})"
        )
    return names.index(column)
