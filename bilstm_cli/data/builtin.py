"""The built-in data sets, read straight out of their published archives (no extraction)."""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bilstm_cli.errors import UserError

LABEL_NAMES = {"neg": "negative", "pos": "positive", "0": "negative", "1": "positive"}


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    filename: str
    url: str
    splits: tuple[str, ...]
    description: str


BUILTIN = {
    "imdb": BuiltinDataset(
        "imdb",
        "aclImdb_v1.tar.gz",
        "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        ("train", "test"),
        "Large Movie Review Dataset: 25,000 train / 25,000 test reviews, binary sentiment",
    ),
    "sst2": BuiltinDataset(
        "sst2",
        "SST-2.zip",
        "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
        ("train", "test"),
        "Stanford Sentiment Treebank (GLUE SST-2): 67,349 train phrases / 872 dev sentences "
        "(used as test)",
    ),
}

_IMDB_MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg)/\d+_\d+\.txt$")


def search_dirs() -> list[Path]:
    """Where a data set archive is looked for: $BILSTM_DATA_DIR, then the user cache."""
    dirs = []
    if os.environ.get("BILSTM_DATA_DIR"):
        dirs.append(Path(os.environ["BILSTM_DATA_DIR"]).expanduser())
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    dirs.append(Path(cache) / "bilstm")
    return dirs


def find_archive(name: str) -> Path:
    info = BUILTIN[name]
    for folder in search_dirs():
        candidate = folder / info.filename
        if candidate.is_file():
            return candidate
    places = " or ".join(str(d) for d in search_dirs())
    raise UserError(
        f"data set {name!r} not found: {info.filename} is not in {places}. Download it from "
        f"{info.url} and put it in one of those folders (or set BILSTM_DATA_DIR to the folder "
        f"that holds it)."
    )


def load_builtin(name: str) -> dict[str, tuple[list[str], list[str]]]:
    """Return {split: (texts, labels)} for a built-in data set."""
    path = find_archive(name)
    try:
        return _load_imdb(path) if name == "imdb" else _load_sst2(path)
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(
            f"{path}: cannot read the {name} archive ({exc}); is it complete?"
        ) from None


def _load_imdb(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    splits: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    with tarfile.open(path, mode="r:gz") as archive:
        for member in archive:
            match = _IMDB_MEMBER.match(member.name)
            if not match or not member.isfile():
                continue  # train/unsup, *.feat, urls_*.txt, README, folders
            handle = archive.extractfile(member)
            assert handle is not None
            texts, labels = splits[match.group(1)]
            texts.append(handle.read().decode("utf-8"))
            labels.append(LABEL_NAMES[match.group(2)])
    for split, (texts, _) in splits.items():
        if not texts:
            raise UserError(f"{path}: no aclImdb/{split}/pos|neg/*.txt reviews in this archive")
    return splits


def _load_sst2(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    splits = {}
    with zipfile.ZipFile(path) as archive:
        for split, member in (("train", "SST-2/train.tsv"), ("test", "SST-2/dev.tsv")):
            try:
                raw = archive.read(member)
            except KeyError:
                raise UserError(f"{path}: {member} is missing from the archive") from None
            reader = csv.reader(io.StringIO(raw.decode("utf-8")), delimiter="\t",
                                quoting=csv.QUOTE_NONE)
            header = next(reader)
            if header[:2] != ["sentence", "label"]:
                raise UserError(f"{path}: {member} should start with the header sentence<TAB>label")
            texts, labels = [], []
            for row in reader:
                if row:
                    texts.append(row[0])
                    labels.append(LABEL_NAMES[row[1]])
            splits[split] = (texts, labels)
    return splits
