"""Train/validation/test splits from a built-in data set or the user's files.

Validation comes from `data.validation` or a stratified, seeded fraction of train: never from test.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bilstm_cli.config import Config, DataConfig
from bilstm_cli.data.builtin import BUILTIN, load_builtin
from bilstm_cli.data.readers import read_rows
from bilstm_cli.errors import UserError
from bilstm_cli.text import token_lengths


@dataclass
class Dataset:
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def class_counts(self) -> Counter:
        return Counter(self.labels)

    def subset(self, indices: np.ndarray) -> Dataset:
        return Dataset([self.texts[i] for i in indices], [self.labels[i] for i in indices],
                       self.source)


@dataclass
class Splits:
    train: Dataset
    validation: Dataset
    test: Dataset | None

    def items(self) -> list[tuple[str, Dataset]]:
        named = [("train", self.train), ("validation", self.validation)]
        return named + ([("test", self.test)] if self.test is not None else [])


def read_labelled(path: str, data: DataConfig, format: str | None = None) -> Dataset:
    dataset = Dataset(source=path)
    for _, text, label in read_rows(
        path, format or data.format, data.text_column, data.label_column, data.header
    ):
        dataset.texts.append(text)
        dataset.labels.append(label)
    if not dataset.texts:
        raise UserError(f"{path}: no examples (the file is empty or has only a header)")
    return dataset


def load_builtin_split(spec: str) -> Dataset:
    """`imdb:test`, `sst2:train`, ... as used by `evaluate --data`."""
    name, _, split = spec.partition(":")
    split = split or "test"
    if name not in BUILTIN or split not in BUILTIN[name].splits:
        raise UserError(f"unknown data set {spec!r}: use imdb:train, imdb:test, sst2:train or "
                        "sst2:test, or a file")
    texts, labels = load_builtin(name)[split]
    return Dataset(texts, labels, spec)


def load_splits(data: DataConfig, seed: int) -> Splits:
    if data.dataset is not None:
        loaded = load_builtin(data.dataset)
        train = Dataset(*loaded["train"], f"{data.dataset}:train")
        test: Dataset | None = Dataset(*loaded["test"], f"{data.dataset}:test")
        validation = None
    else:
        assert data.train is not None
        train = read_labelled(data.train, data)
        validation = read_labelled(data.validation, data) if data.validation else None
        test = read_labelled(data.test, data) if data.test else None
    rng = np.random.default_rng(seed)
    if validation is None:
        train, validation = stratified_split(train, data.validation_split, rng)
        validation.source = f"{train.source} ({data.validation_split:.0%} held out)"
    if data.max_examples is not None:
        train = _limit(train, data.max_examples, rng)
        validation = _limit(validation, data.max_examples, rng)
        test = _limit(test, data.max_examples, rng) if test is not None else None
    _check_labels(train, validation, test)
    return Splits(train, validation, test)


def stratified_split(
    dataset: Dataset, fraction: float, rng: np.random.Generator
) -> tuple[Dataset, Dataset]:
    """Hold out `fraction` of every class (at least one example of each class with two or more)."""
    labels = np.array(dataset.labels)
    held: list[np.ndarray] = []
    for label in sorted(set(dataset.labels)):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(fraction * len(members)))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        else:
            count = 0
        held.append(members[:count])
    held_out = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    keep = np.setdiff1d(np.arange(len(dataset)), held_out)
    return dataset.subset(keep), dataset.subset(held_out)


def _limit(dataset: Dataset, count: int, rng: np.random.Generator) -> Dataset:
    """A seeded, stratified sample of at most `count` examples (for quick runs and smoke tests)."""
    if len(dataset) <= count:
        return dataset
    _, sample = stratified_split(dataset, count / len(dataset), rng)
    return sample


def _check_labels(train: Dataset, validation: Dataset, test: Dataset | None) -> None:
    seen = set(train.labels)
    if len(seen) < 2:
        raise UserError(
            f"{train.source}: the training data has only one class ({', '.join(seen) or 'none'}); "
            "a classifier needs at least two"
        )
    if len(validation) == 0:
        raise UserError(f"{train.source}: too few examples to hold out a validation set")
    for split in (validation, test):
        if split is None:
            continue
        unseen = sorted(set(split.labels) - seen)
        if unseen:
            raise UserError(
                f"{split.source}: label(s) {', '.join(map(repr, unseen))} never occur in the "
                "training data, so the model cannot learn them"
            )


def summarize(splits: Splits, config: Config) -> dict[str, Any]:
    """Examples per split and class, token-length percentiles, and the share cut at max_length."""
    labels = sorted(set(splits.train.labels))
    summary: dict[str, Any] = {"labels": labels, "max_length": config.data.max_length,
                               "splits": {}}
    for name, dataset in splits.items():
        lengths = token_lengths(dataset.texts, config.data.lowercase)
        counts = dataset.class_counts()
        summary["splits"][name] = {
            "source": dataset.source,
            "examples": len(dataset),
            "classes": {label: counts.get(label, 0) for label in sorted(counts)},
            "length_percentiles": {
                key: int(np.percentile(lengths, q)) if len(lengths) else 0
                for key, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("max", 100))
            },
            "truncated_share": float(np.mean(lengths > config.data.max_length))
            if len(lengths) else 0.0,
        }
    return summary
