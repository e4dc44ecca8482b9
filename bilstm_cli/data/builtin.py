"""The built-in data sets, read straight out of their published archives (no extraction).

Finding or downloading the archives is `download.py`'s job; this module reads them.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import tarfile
import zipfile
from pathlib import Path

from bilstm_cli.data.download import (
    ARCHIVE_ERRORS,
    BUILTIN,
    Progress,
    ensure_archive,
    read_member,
    search_dirs,
    unreadable,
)
from bilstm_cli.errors import UserError

__all__ = ["BUILTIN", "find_archive", "load_builtin", "search_dirs"]

LABEL_NAMES = {"neg": "negative", "pos": "positive", "0": "negative", "1": "positive"}

_IMDB_MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg)/\d+_\d+\.txt$")


def find_archive(name: str, progress: Progress | None = None) -> Path:
    """The archive in BILSTM_DATA_DIR or the cache; downloaded (and verified) when absent.
    Reading it checks its layout (the loaders below name what is missing)."""
    return ensure_archive(name, progress)


def load_builtin(
    name: str, progress: Progress | None = None
) -> dict[str, tuple[list[str], list[str]]]:
    """Return {split: (texts, labels)} for a built-in data set."""
    path = find_archive(name, progress)
    try:
        return _load_imdb(path) if name == "imdb" else _load_sst2(path)
    except (*ARCHIVE_ERRORS, UnicodeDecodeError) as exc:
        raise unreadable(name, path, exc) from None


def _load_imdb(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    splits: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    with gzip.open(path, "rb") as stream:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                match = _IMDB_MEMBER.match(member.name)
                if not match or not member.isfile():
                    continue  # train/unsup, *.feat, urls_*.txt, README, folders
                handle = archive.extractfile(member)
                assert handle is not None
                texts, labels = splits[match.group(1)]
                texts.append(handle.read().decode("utf-8"))
                labels.append(LABEL_NAMES[match.group(2)])
        # To the end of the gzip stream, past the tar's end marker: its checksum is there,
        # and a file damaged inside a review is caught by it alone.
        while stream.read(1 << 20):
            pass
    for split, (_, labels) in splits.items():
        missing = sorted({"positive", "negative"} - set(labels))
        if missing:
            raise UserError(
                f"{path}: no {' or '.join(missing)} reviews in aclImdb/{split}/ (expected "
                f"aclImdb/{split}/pos/*.txt and aclImdb/{split}/neg/*.txt); is it the IMDB "
                "archive?"
            )
    return splits


def _load_sst2(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    splits = {}
    with zipfile.ZipFile(path) as archive:
        for split, member in (("train", "SST-2/train.tsv"), ("test", "SST-2/dev.tsv")):
            if member not in archive.namelist():
                raise UserError(f"{path}: {member} is missing from the archive")
            raw = read_member(archive, path, "sst2", member)
            reader = csv.reader(io.StringIO(raw.decode("utf-8")), delimiter="\t",
                                quoting=csv.QUOTE_NONE)
            header = next(reader, [])
            if header[:2] != ["sentence", "label"]:
                raise UserError(f"{path}: {member} should start with the header sentence<TAB>label")
            texts, labels = [], []
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < 2 or row[1] not in LABEL_NAMES:
                    raise UserError(f"{path}: {member}:{line}: expected a sentence, a tab and a "
                                    "label 0 or 1; is it GLUE's SST-2 archive?")
                texts.append(row[0])
                labels.append(LABEL_NAMES[row[1]])
            splits[split] = (texts, labels)
    return splits
