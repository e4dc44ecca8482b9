"""A cache of what training reads before its first step: the parsed splits, the tokenizer with
the token ids and data summary, and the co-occurrence word vectors.

A second `bilstm train` on the same data loads these in well under a second instead of reading
the archive, tokenizing every text and factorizing the co-occurrence matrix again. Entries live
in `$BILSTM_CACHE_DIR/data` (default `~/.cache/bilstm/data`), one `.npz` file each, named by the
SHA-256 of their key:

- splits: the source files' identity (resolved path, size, mtime_ns and inode of each file,
  of each file in a folder, or of the built-in archive), the data section's reading and
  splitting keys, training.seed (the validation split) and the code that reads data;
- tokens: the splits' key plus the *resolved* tokenizer keys (after `auto`), the tokenizers
  version and the code that tokenizes;
- vectors: the tokens' key plus the embedding size, the seed and the word vectors' code.

A changed file changes the key, so it is read again; nothing is invalidated in place. An entry
is written to a temporary file and renamed (`runs.write_atomic`), so two trainings filling a
cold cache at once each write a complete, identical entry, and a reader never sees half of one.
Every entry holds its key and a SHA-256 of its arrays: one that fails to load, is for another
key or fails its checksum is deleted and rebuilt, never used. A cache that cannot be written (a
full disk, a read-only folder) is warned about once and training goes on without it.
`BILSTM_DATA_CACHE=0` turns it off; deleting the folder clears it. Each kind keeps its
MAX_ENTRIES most recently used entries.

Arrays are stored without pickling (texts as UTF-8 bytes with offsets, ids concatenated with
offsets), so loading an entry runs no code from it. Importing this module imports no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from bilstm_cli import __version__
from bilstm_cli.errors import UserError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from bilstm_cli.data.splits import Splits

FORMAT = 1
MAX_ENTRIES = 6  # per kind: an IMDB training's three entries take about 135 MB
STALE_TEMPORARY_SECONDS = 3600  # a temporary file this old is from a process that died
# The data section's keys that choose the tokenizer; the others say how data is read and split.
TOKENIZER_KEYS = ("tokenizer", "max_tokens", "min_frequency", "lowercase", "max_length",
                  "truncate")
# The code an entry's contents come from: a change to it changes the key.
_PACKAGE = Path(__file__).resolve().parent.parent
CODE = {
    "splits": ("data/readers.py", "data/splits.py", "data/builtin.py", "records.py"),
    "tokens": ("text.py", "data/splits.py"),
    "vectors": ("word_vectors.py",),
}

Log = Callable[[str], None]
T = TypeVar("T")
# What a hit is logged as (the word vectors' is in train.py's own line).
HITS = {"splits": "the data read", "tokens": "the tokenizer and token ids"}


@dataclass
class Tokens:
    """What training reads besides the splits: the tokenizer, the data summary and the token
    ids of train and validation; `key` names its cache entry (None when not cached)."""

    tokenizer: Tokenizer
    summary: dict[str, Any]
    train_ids: list[np.ndarray]
    validation_ids: list[np.ndarray]
    key: str | None = None
    cache: DataCache | None = None

    def word_vectors(self, dim: int, seed: int, versions: Sequence[str],
                     build: Callable[[], np.ndarray]) -> np.ndarray:
        """The co-occurrence vectors of these ids: cached, or `build()` (then stored)."""
        if self.cache is None:
            return build()
        return self.cache.vectors(self.key, dim, seed, versions, build)


def enabled() -> bool:
    return os.environ.get("BILSTM_DATA_CACHE", "1").strip().lower() not in ("0", "off", "false")


def cache_dir() -> Path:
    """$BILSTM_CACHE_DIR/data, else the data sets' cache folder's `data` (~/.cache/bilstm)."""
    from bilstm_cli.data.download import cache_dir as user_cache

    override = os.environ.get("BILSTM_CACHE_DIR")
    return (Path(override).expanduser() if override else user_cache()) / "data"


def entry_name(kind: str, key: str) -> str:
    return f"{kind}-{key[:32]}.npz"


def digest(*parts: Any) -> str:
    """SHA-256 of JSON-serialized parts: a cache key."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_digest(kind: str) -> str:
    hasher = hashlib.sha256()
    for name in CODE[kind]:
        hasher.update((_PACKAGE / name).read_bytes())
    return hasher.hexdigest()


def _file_identity(path: Path) -> list[Any]:
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):  # a pipe (`<(...)`) reads differently every time
        raise OSError(f"{path} is not a regular file")
    return [str(path.resolve()), status.st_size, status.st_mtime_ns, status.st_ino]


def path_identity(value: str) -> list[Any] | None:
    """A data file's (or folder's: every file in it) identity; None for stdin, a pipe, or a
    path that cannot be read (its reader then says why)."""
    if value == "-":
        return None
    path = Path(value).expanduser()
    try:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            return [str(path.resolve()), [_file_identity(f) for f in files]]
        return _file_identity(path)
    except OSError:
        return None


def source_identity(data: Any) -> list[Any] | None:
    """What a data section reads, as file identities: the built-in archive where it is now
    (None before it is downloaded), or data.train, data.validation and data.test."""
    from bilstm_cli.data.download import locate

    if data.dataset is not None:
        found = locate(data.dataset)
        return None if found is None else [data.dataset, path_identity(str(found.path))]
    parts: list[Any] = []
    for role in ("train", "validation", "test"):
        value = getattr(data, role)
        if value is not None:
            identity = path_identity(value)
            if identity is None:
                return None
            parts.append([role, identity])
    return parts


def splits_key(data: Any, seed: int, identity: list[Any]) -> str:
    reading = {k: v for k, v in data.model_dump(mode="json").items() if k not in TOKENIZER_KEYS}
    return digest("splits", FORMAT, __version__, code_digest("splits"), np.__version__,
                  identity, reading, seed)


def tokens_key(splits: str, data: Any) -> str:
    """The tokenizer's keys as resolved (`auto` already replaced by numbers)."""
    import tokenizers

    settings = {key: getattr(data, key) for key in TOKENIZER_KEYS}
    assert "auto" not in settings.values(), "resolve the auto settings before the key"
    return digest("tokens", splits, code_digest("tokens"), tokenizers.__version__, settings)


def vectors_key(tokens: str, dim: int, seed: int, *versions: str) -> str:
    return digest("vectors", tokens, code_digest("vectors"), dim, seed, versions)


def pack_texts(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of all texts, and the offsets where each starts (and the last ends)."""
    encoded = [text.encode("utf-8", "surrogatepass") for text in texts]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


def unpack_texts(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    data = blob.tobytes()
    bounds = offsets.tolist()
    return [data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(bounds, bounds[1:])]


def pack_ids(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    flat = np.concatenate(rows).astype(np.int32) if len(rows) else np.zeros(0, np.int32)
    return flat, offsets


def unpack_ids(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, offsets[1:-1]) if len(offsets) > 1 else []


def check_offsets(offsets: np.ndarray, total: int) -> None:
    """Offsets that cut `total` items into rows: from 0, never decreasing, to the end."""
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != total \
            or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets do not fit the data")


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    hasher = hashlib.sha256()
    for name in sorted(arrays):
        hasher.update(name.encode("utf-8"))
        hasher.update(np.ascontiguousarray(arrays[name]).data)
    return hasher.hexdigest()


class DataCache:
    """The cache folder for one training's preparation: entries read, written, pruned; a
    failure to write is warned about once (`warn`), a damaged entry noted (`log`)."""

    def __init__(self, folder: Path | None, log: Log, warn: Log) -> None:
        self.folder = folder  # None: the cache is off
        self.log, self.warn = log, warn
        self.writable = folder is not None

    @classmethod
    def open(cls, log: Log, warn: Log) -> DataCache:
        return cls(cache_dir() if enabled() else None, log, warn)

    def path(self, kind: str, key: str) -> Path | None:
        return None if self.folder is None else self.folder / entry_name(kind, key)

    def load(self, kind: str, key: str | None, parse: Callable[[dict[str, Any],
             dict[str, np.ndarray]], T]) -> T | None:
        """An entry, as `parse(metadata, arrays)` makes it; None when it is absent, the cache
        is off, or the entry is damaged (then it is deleted, to be rebuilt)."""
        path = self.path(kind, key) if key is not None else None
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
            if meta.get("key") != key:
                raise ValueError("the entry is for another key")
            if meta.get("checksum") != _checksum(arrays):
                raise ValueError("its checksum does not match its contents")
            value = parse(meta, arrays)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, it is not used
            self.discard(path, f"{type(exc).__name__}: {exc}")
            return None
        try:
            os.utime(path)  # recently used: pruned last
        except OSError:
            pass
        if kind in HITS:
            self.log(f"{HITS[kind]} from the data cache: {path}")
        return value

    def discard(self, path: Path, why: str) -> None:
        self.log(f"data cache: {path.name} is damaged ({why[:200]}); rebuilding it")
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass

    def save(self, kind: str, key: str, arrays: dict[str, np.ndarray],
             meta: dict[str, Any]) -> None:
        """Write an entry atomically; on failure warn (once) and go on without the cache."""
        from bilstm_cli.runs import write_atomic

        path = self.path(kind, key)
        if path is None or not self.writable:
            return
        document = {**meta, "key": key, "format": FORMAT, "checksum": _checksum(arrays),
                    "written": time.time()}
        encoded = np.frombuffer(json.dumps(document, ensure_ascii=False).encode("utf-8"),
                                np.uint8)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, meta=encoded, **arrays)

        try:
            write_atomic(path, write)
        except UserError as exc:
            self.writable = False
            self.warn(f"the data cache cannot be written ({exc}); training goes on without "
                      "it (set BILSTM_CACHE_DIR to a writable folder, or BILSTM_DATA_CACHE=0)")
            return
        self.prune(kind)

    def prune(self, kind: str) -> None:
        """Keep the MAX_ENTRIES most recently used entries of a kind; remove temporary files
        left by processes that died while writing."""
        assert self.folder is not None
        try:
            entries = sorted(self.folder.glob(f"{kind}-*.npz"),
                             key=lambda p: p.stat().st_mtime, reverse=True)
            for old in entries[MAX_ENTRIES:]:
                old.unlink(missing_ok=True)
            for tmp in self.folder.glob(f".{kind}-*.npz.*"):
                if time.time() - tmp.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                    tmp.unlink(missing_ok=True)
        except OSError:  # another process pruned first: nothing to do
            pass

    # What each kind of entry holds: `build` makes it on a miss, and it is then stored.

    def splits(self, data: Any, seed: int, build: Callable[[], Splits]
               ) -> tuple[Splits, str | None]:
        """The train/validation/test splits of a data section, and their key (None when the
        source cannot be identified: stdin, a file that is not there)."""
        identity = source_identity(data) if self.folder is not None else None
        key = splits_key(data, seed, identity) if identity is not None else None
        cached = self.load("splits", key, _unpack_splits)
        if cached is not None:
            return cached, key
        splits = build()
        # Kept only if the source is as it was when identified (not changed, nor downloaded,
        # while it was read).
        after = source_identity(data) if self.folder is not None else None
        if after is None or (identity is not None and after != identity):
            return splits, None
        key = splits_key(data, seed, after)
        self.save("splits", key, *_pack_splits(splits))
        return splits, key

    def tokens(self, splits: str | None, data: Any, build: Callable[[], Tokens]) -> Tokens:
        """The tokenizer, token ids and summary for the splits of key `splits` and the
        (resolved) tokenizer settings in `data`."""
        key = tokens_key(splits, data) if splits is not None else None
        tokens = self.load("tokens", key, _unpack_tokens)
        if tokens is None:
            tokens = build()
            if key is not None:
                self.save("tokens", key, *_pack_tokens(tokens))
        tokens.key, tokens.cache = key, self
        return tokens

    def vectors(self, tokens: str | None, dim: int, seed: int, versions: Sequence[str],
                build: Callable[[], np.ndarray]) -> np.ndarray:
        """The co-occurrence word vectors made from the token ids of key `tokens`."""
        key = vectors_key(tokens, dim, seed, *versions) if tokens is not None else None

        def parse(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> np.ndarray:
            table = arrays["vectors"]
            if table.ndim != 2 or table.shape[1] != dim or table.dtype != np.float32:
                raise ValueError(f"a {table.dtype} table of shape {table.shape}, not [*, {dim}]")
            return table

        table = self.load("vectors", key, parse)
        if table is None:
            table = build()
            if key is not None:
                self.save("vectors", key, {"vectors": np.asarray(table, np.float32)}, {})
        return table

def _pack_splits(splits: Splits) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    names = sorted({label for _, dataset in splits.items() for label in dataset.labels})
    index = {name: i for i, name in enumerate(names)}
    arrays: dict[str, np.ndarray] = {}
    reports: dict[str, Any] = {}
    for name, dataset in splits.items():
        arrays[f"{name}.text"], arrays[f"{name}.offsets"] = pack_texts(dataset.texts)
        arrays[f"{name}.label"] = np.array([index[label] for label in dataset.labels], np.int32)
        reports[name] = {"source": dataset.source, "skipped": dataset.skipped,
                         "bad_rows": dataset.bad_rows, "notes": dataset.notes}
    return arrays, {"labels": splits.labels, "label_names": names, "splits": reports}


def _unpack_splits(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Splits:
    from bilstm_cli.data.splits import Dataset, Splits

    names = list(meta["label_names"])
    datasets: dict[str, Dataset] = {}
    for name, report in meta["splits"].items():
        blob, offsets, labels = (arrays[f"{name}.{part}"] for part in ("text", "offsets", "label"))
        check_offsets(offsets, len(blob))
        if len(labels) != len(offsets) - 1 or (len(labels) and not
                                               0 <= labels.min() <= labels.max() < len(names)):
            raise ValueError(f"the {name} labels do not fit its texts")
        datasets[name] = Dataset(unpack_texts(blob, offsets), [names[i] for i in labels.tolist()],
                                 str(report["source"]), int(report["skipped"]),
                                 list(report["bad_rows"]), list(report["notes"]))
    return Splits(datasets["train"], datasets["validation"], datasets.get("test"),
                  list(meta["labels"]))


def _pack_tokens(tokens: Tokens) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    for name, rows in (("train", tokens.train_ids), ("validation", tokens.validation_ids)):
        arrays[f"{name}.ids"], arrays[f"{name}.offsets"] = pack_ids(rows)
    return arrays, {"tokenizer": tokens.tokenizer.to_str(), "summary": tokens.summary}


def _unpack_tokens(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Tokens:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(meta["tokenizer"])
    rows = []
    for name in ("train", "validation"):
        flat, offsets = arrays[f"{name}.ids"], arrays[f"{name}.offsets"]
        check_offsets(offsets, len(flat))
        if len(flat) and not 0 <= flat.min() <= flat.max() < tokenizer.get_vocab_size():
            raise ValueError(f"the {name} ids are outside the vocabulary")
        rows.append(unpack_ids(flat, offsets))
    return Tokens(tokenizer, dict(meta["summary"]), rows[0], rows[1])
