"""Readers for labelled data: TSV, CSV, JSONL, fastText, a folder per class, and Parquet.

Each reader yields (where, text, label) lazily: `where` is the line number (or, for a folder, the
file's path; for Parquet, the row number). Every bad row is named with its file and line: by
default they end the read with one error listing the first few; with `on_bad_row="skip"` they
are counted in a `BadRows` report that the caller shows and saves. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import unicodedata
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from bilstm_cli.errors import UserError
from bilstm_cli.records import json_field

FORMATS = {
    ".tsv": "tsv", ".tab": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".fasttext": "fasttext", ".ft": "fasttext", ".parquet": "parquet", ".pq": "parquet",
}
FORMAT_NAMES = ("tsv", "csv", "jsonl", "fasttext", "folder", "parquet")
MAX_REPORTED = 10
PARQUET_BATCH = 1024

csv.field_size_limit(sys.maxsize)

Row = tuple[int | str, str, str]


def detect_format(path: str, format: str, fallback: str = "auto") -> str:
    """The format named by data.format / --format, else the file's extension (or a folder),
    else `fallback` (for `evaluate`: the format the run was trained on), if it names one."""
    if format != "auto":
        return format
    fallback = fallback if fallback not in ("auto", "folder") else ""
    if path == "-":
        if fallback:
            return fallback
        raise UserError(
            "reading standard input (-): say its format with data.format (or --format): "
            "tsv, csv, jsonl or fasttext"
        )
    if Path(path).is_dir():
        return "folder"
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS and fallback:
        return fallback
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise UserError(
            f"{path}: cannot tell the format from the extension {suffix or '(none)'!r} (known: "
            f"{known}, or a folder with one sub-folder per class); say it with data.format "
            f"({', '.join(FORMAT_NAMES)})"
        )
    return FORMATS[suffix]


class BadRows:
    """Bad rows of one file: the first few messages and the count. With mode "error", `finish`
    raises one error listing them; with "skip", the caller reports the count."""

    def __init__(self, path: str, mode: str = "error",
                 skip_hint: str = "set data.on_bad_row=skip") -> None:
        self.path = path
        self.mode = mode
        self.skip_hint = skip_hint  # how the command at hand skips them
        self.messages: list[str] = []
        self.count = 0
        self.notes: list[str] = []  # things read past on purpose (e.g. ignored sub-folders)

    def add(self, where: int | str, message: str) -> None:
        """`where`: a line number in this file, or a full location (a file inside a folder)."""
        self.count += 1
        if len(self.messages) < MAX_REPORTED:
            place = f"{self.path}:{where}" if isinstance(where, int) else where
            self.messages.append(f"{place}: {message}")

    def summary(self) -> str:
        more = self.count - len(self.messages)
        tail = f"\n  ... and {more} more" if more else ""
        listed = "\n".join(f"  {m}" for m in self.messages)
        return f"{self.count} bad row(s) in {self.path}:\n{listed}{tail}"

    def finish(self) -> None:
        if self.count and self.mode == "error":
            raise UserError(
                self.summary() + f"\n(fix them, or {self.skip_hint} to skip and count them)"
            )


def read_rows(
    path: str,
    format: str = "auto",
    text_column: str | int = "text",
    label_column: str | int | None = "label",
    header: bool | str = "auto",
    label_prefix: str = "__label__",
    labels: Collection[str] | None = None,
    bad_rows: BadRows | None = None,
    fallback_format: str = "auto",
) -> Iterator[Row]:
    """Yield (line, text, label) for each good row; label is "" when label_column is None.
    `fallback_format`: the format when `format` is auto and the extension names none.

    `labels`, when given, is the only allowed label set: rows with another label are bad rows
    (a folder's other sub-folders are not read, and listed in `bad_rows.notes`). Pass a
    `BadRows` with mode "skip" to skip bad rows and count them instead of raising.
    """
    kind = detect_format(path, format, fallback_format)
    problems = bad_rows if bad_rows is not None else BadRows(path)
    want_label = label_column is not None
    if kind == "folder":
        rows = _folder_rows(path, labels, problems)
    elif kind == "parquet":
        rows = _parquet_rows(path, text_column, label_column, problems)
    else:
        rows = _line_rows(path, kind, text_column, label_column, header, label_prefix, problems)
    allowed = set(labels) if labels is not None and want_label else None
    for where, text, label in rows:
        problem = _label_problem(label) if want_label else None
        if problem:
            problems.add(where, problem)
            continue
        if allowed is not None and label not in allowed:
            problems.add(where, f"label {label!r} is not one of data.labels "
                                f"({', '.join(map(str, labels or []))})")
            continue
        yield where, text, label
    problems.finish()


def _label_problem(label: str) -> str | None:
    """Why a label cannot be a class name: a control character (a NUL, an escape) would make a
    class of its own that no one typed, a tab or line break would break predict's output."""
    if any(ch in label for ch in "\t\r\n"):
        return (f"label {label!r} holds a tab or a line break, which would break predict's "
                "one-line-per-text output")
    for ch in label:
        category = unicodedata.category(ch)
        if category == "Cc":
            return (f"label {label!r} holds a control character (U+{ord(ch):04X}), which would "
                    "make a class of its own; remove it")
        if category == "Cs":  # a byte that is not UTF-8, kept by surrogateescape
            return f"label {label!r} is not valid UTF-8"
    return None


def _line_rows(
    path: str, kind: str, text_column: str | int, label_column: str | int | None,
    header: bool | str, label_prefix: str, problems: BadRows,
) -> Iterator[Row]:
    with _open_binary(path) as handle:
        lines = _decoded_lines(handle)
        if kind == "jsonl":
            yield from _jsonl_rows(lines, text_column, label_column, problems)
        elif kind == "fasttext":
            yield from _fasttext_rows(lines, label_prefix, label_column is not None, problems)
        elif kind in ("tsv", "csv"):
            yield from _table_rows(lines, kind, text_column, label_column, header, problems)
        else:
            raise UserError(f"{path}: unknown format {kind!r} (use one of "
                            f"{', '.join(FORMAT_NAMES)})")


def _open_binary(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's with-block
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder: set data.format to folder (one sub-folder per "
                        "class), or give a file") from None
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
    problems: BadRows,
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
        except (ValueError, RecursionError) as exc:  # a 5,000-digit number; [[[[...]]]]
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            problems.add(number, f"not valid JSON ({why})")
            continue
        if not isinstance(record, dict):
            problems.add(number, "expected a JSON object per line")
            continue
        text = json_field(record, text_key)
        label = "" if label_key is None else json_field(record, label_key)
        if not isinstance(text, str) or not text.strip():
            problems.add(number, f"missing or empty text (key {text_key!r})")
        elif isinstance(label, (dict, list)):
            problems.add(number, f"the label (key {label_key!r}) is a "
                                 f"{'list' if isinstance(label, list) else 'object'}, expected "
                                 "a string or number")
        elif label_key is not None and (label is None or not str(label).strip()):
            problems.add(number, f"missing label (key {label_key!r})")
        else:
            yield number, text, _label_str(label)


def _label_str(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


def _fasttext_rows(
    lines: Iterable[tuple[int, str]], prefix: str, want_label: bool, problems: BadRows
) -> Iterator[Row]:
    """`__label__pos some text`: the leading prefixed words are the labels, the rest the text.
    A line with several labels is a bad row: bilstm trains single-label classifiers."""
    for number, line in lines:
        rest = line.strip()
        if not rest:
            continue
        if _has_invalid_utf8(rest):
            problems.add(number, "invalid UTF-8")
            continue
        found = []
        while rest.startswith(prefix):
            head, *tail = rest.split(None, 1)  # any whitespace ends a label, as in fastText
            found.append(head[len(prefix):])
            rest = tail[0] if tail else ""
        if want_label and not found:
            problems.add(number, f"no label (a line starts with {prefix}LABEL; set "
                                 "data.label_prefix if your files use another prefix)")
        elif want_label and len(found) > 1:
            problems.add(number, f"{len(found)} labels ({', '.join(found)}): bilstm trains "
                                 "single-label classifiers, so give one label per line")
        elif want_label and not found[0]:
            problems.add(number, f"empty label ({prefix} with nothing after it)")
        elif not rest:
            problems.add(number, "empty text")
        else:
            yield number, rest, found[0] if found else ""


class _RowLines:
    """Physical lines for csv.reader that remember those of the row being read, so that a row
    broken by a quote can be reported by its first line and read again from its second."""

    def __init__(self, lines: Iterable[tuple[int, str]]) -> None:
        self.source = iter(lines)
        self.again: list[tuple[int, str]] = []  # lines to give once more, last first
        self.row: list[tuple[int, str]] = []  # (number, line) of the row being read

    def __iter__(self) -> _RowLines:
        return self

    def __next__(self) -> str:
        item = self.again.pop() if self.again else next(self.source)
        self.row.append(item)
        return item[1]

    def read_again(self, lines: list[tuple[int, str]]) -> None:
        self.again.extend(reversed(lines))


def _table_rows(
    lines: Iterable[tuple[int, str]],
    kind: str,
    text_column: str | int,
    label_column: str | int | None,
    header: bool | str,
    problems: BadRows,
) -> Iterator[Row]:
    source = _RowLines(lines)
    # strict: a quote inside a quoted field that is not doubled is an error, not text.
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {"strict": True}
    reader = csv.reader(source, **dialect)
    columns = _table_columns(reader, text_column, label_column, header, problems)
    if columns is None:
        return  # an empty file with a header expected
    text_index, label_index, width = columns
    while True:
        source.row = []
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            _broken_row(source, str(exc), problems)
            continue
        number, last = source.row[0][0], source.row[-1][0]
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        width = width or len(row)  # without a header, the first row sets the width
        problem = _row_problem(row, number, last, width, text_index, label_index)
        if problem:
            problems.add(number, problem)
            continue
        text = row[text_index]
        label = "" if label_index is None else row[label_index].strip()
        if not text.strip():
            problems.add(number, "empty text")
        elif label_index is not None and not label:
            problems.add(number, "missing label")
        else:
            yield number, text, label


def _table_columns(
    reader: Iterator[list[str]], text_column: str | int, label_column: str | int | None,
    header: bool | str, problems: BadRows,
) -> tuple[int, int | None, int | None] | None:
    """(text index, label index or None, the header's width or None), reading the header row
    when there is one; None for an empty file that should have had one."""
    by_name = isinstance(text_column, str) or isinstance(label_column, str)
    has_header = by_name if header == "auto" else bool(header)
    if by_name and not has_header:
        raise UserError(
            f"{problems.path}: columns are given by name but data.header is false; give column "
            f"indexes (e.g. data.text_column=0) or set data.header=true (evaluate: --header)"
        )
    if not has_header:
        return int(text_column), None if label_column is None else int(label_column), None
    try:
        names = next(reader, None)
    except csv.Error as exc:
        raise UserError(f"{problems.path}:1: cannot read the header row ({exc}); fix it "
                        "(a stray carriage return, or a quote?)") from None
    if names is None:
        return None
    names = [n.strip() for n in names]
    text_index = _column_index(names, text_column, "text_column", problems.path)
    label_index = (None if label_column is None
                   else _column_index(names, label_column, "label_column", problems.path))
    return text_index, label_index, len(names)


def _row_problem(row: list[str], number: int, last: int, width: int, text_index: int,
                 label_index: int | None) -> str | None:
    """Why a parsed row (physical lines number..last) cannot be used, or None."""
    if last - number >= MAX_ROW_LINES:
        return (f"lines {number}-{last} read as one row ({last - number + 1} lines; a text "
                f"spans at most {MAX_ROW_LINES}): a quote that is never closed?")
    if len(row) != width:
        spans = (f" (lines {number}-{last} read as one row: a quote that is never closed?)"
                 if last > number else "")
        return f"expected {width} columns, found {len(row)}{spans}"
    if any(_has_invalid_utf8(field) for field in row):
        return "invalid UTF-8"
    needed = max(text_index, -1 if label_index is None else label_index)
    if needed >= len(row):
        return f"no column {needed} (the row has {len(row)})"
    return None


MAX_ROW_LINES = 100  # physical lines one row of text may span (in quotes); more: a lost quote


def _broken_row(source: _RowLines, error: str, problems: BadRows) -> None:
    """A row the csv reader gave up on: a bad row at its first line. When a quote opened there
    ran over the lines after it, those lines are read again as rows of their own."""
    taken = source.row
    number, last = taken[0][0], taken[-1][0]
    if "new-line" in error:  # a stray carriage return inside an unquoted field
        problems.add(number, "a carriage return (\\r) inside the row: remove it")
    elif "end of data" in error:
        problems.add(number, f"a quote opened in this row is never closed (it runs to the end "
                             f"of the file, line {last}); close it, or remove it")
    elif "expected after" in error and last > number:
        problems.add(number, f"a quote opened in this row is never closed (line {last} has a "
                             "quote that neither closes a field nor is doubled); double a quote "
                             'inside a quoted field (""), or remove it')
    elif "expected after" in error:
        problems.add(number, "a quote inside a quoted field is neither doubled nor followed by "
                             'the delimiter; double it (""), or remove it')
    else:
        problems.add(number, f"cannot parse the row ({error})")
    source.read_again(taken[1:])


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


def _folder_rows(path: str, labels: Collection[str] | None, problems: BadRows) -> Iterator[Row]:
    """One sub-folder per class holding one .txt file per text (the aclImdb/train layout).

    With `labels`, only those sub-folders are read (aclImdb/train/unsup is not a class); the
    others are listed in the notes. Files directly in the folder, and files that are not .txt,
    are not texts (aclImdb keeps urls_*.txt and *.feat there)."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"folder not found: {path}")
    folders = sorted((d for d in _entries(root) if d.is_dir() and not d.name.startswith(".")),
                     key=lambda d: d.name)
    if labels is not None:
        for d in folders:
            if d.name not in labels:
                count = sum(1 for f in _entries(d) if f.name.endswith(".txt"))
                problems.notes.append(f"{d.path}: not read, {d.name!r} is not one of data.labels "
                                      f"({count} .txt files)")
        missing = sorted(set(labels) - {d.name for d in folders})
        if missing:
            problems.notes.append(f"{path}: no sub-folder for label(s) {', '.join(missing)}")
        folders = [d for d in folders if d.name in labels]
    if not folders:
        raise UserError(
            f"{path}: no class sub-folders; a folder data set has one sub-folder per class, "
            "each holding one .txt file per text (like aclImdb/train/pos, aclImdb/train/neg)"
        )
    for folder in folders:
        entries = _entries(folder)
        names = sorted(f.name for f in entries if f.is_file())
        others = [n for n in names if not n.endswith(".txt")]
        if others:
            problems.notes.append(f"{folder.path}: {len(others)} file(s) not ending in .txt "
                                  "were not read")
        inner = sum(1 for f in entries if f.is_dir() and not f.name.startswith("."))
        if inner:
            problems.notes.append(f"{folder.path}: {inner} sub-folder(s) inside a class folder "
                                  "were not read")
        if labels is None and len(others) == len(names):
            problems.notes.append(f"{folder.path}: empty class folder (no .txt files), not "
                                  "used as a label")
        for name in names:
            if not name.endswith(".txt"):
                continue
            file = os.path.join(folder.path, name)
            try:
                with open(file, "rb") as handle:
                    raw = handle.read()
            except OSError as exc:
                problems.add(file, f"cannot read ({exc.strerror})")
                continue
            try:
                text = raw.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as exc:
                problems.add(file, f"invalid UTF-8 (byte {exc.start})")
                continue
            if not text.strip():
                problems.add(file, "empty text")
                continue
            yield file, text, folder.name


def _entries(folder: Path | os.DirEntry) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return list(entries)


def _parquet_rows(
    path: str, text_column: str | int, label_column: str | int | None, problems: BadRows
) -> Iterator[Row]:
    """Column by name or index, read in record batches (never the whole file at once)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            f"{path}: reading Parquet needs the optional package pyarrow, which is not "
            "installed: `pip install pyarrow`, or convert the file to TSV or JSONL"
        ) from None
    if path == "-":
        raise UserError("Parquet cannot be read from standard input; give a file")
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own error types
        raise UserError(f"{path}: cannot read it as Parquet ({exc})") from None
    names = list(parquet.schema_arrow.names)
    columns = [names[_column_index(names, text_column, "text_column", path)]]
    if label_column is not None:
        columns.append(names[_column_index(names, label_column, "label_column", path)])
    number = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH, columns=columns):
        texts = batch.column(0).to_pylist()
        labels = batch.column(1).to_pylist() if label_column is not None else [""] * len(texts)
        for text, label in zip(texts, labels):
            number += 1
            where = f"{path}: row {number}"
            if not isinstance(text, str) or not text.strip():
                problems.add(where, "missing or empty text")
            elif label_column is not None and (label is None or not _label_str(label)):
                problems.add(where, "missing label")
            else:
                yield where, text, _label_str(label)
