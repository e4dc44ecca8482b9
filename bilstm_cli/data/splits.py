"""Train/validation/test splits from a built-in data set or the user's files.

Validation comes from `data.validation` or a stratified, seeded fraction of train: never from test.
A fraction of train is a fraction of its texts, of its sentences (phrase-level data such as
SST-2's train), or of blocks of consecutive texts (data in groups, such as IMDB's reviews, which
come movie by movie): `data.validation_by`.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from bilstm_cli.config import Config, DataConfig
from bilstm_cli.data.builtin import BUILTIN, load_builtin
from bilstm_cli.data.readers import BadRows, read_rows
from bilstm_cli.errors import UserError
from bilstm_cli.text import UNK_ID, tokenizer_for


@dataclass
class Dataset:
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    source: str = ""
    skipped: int = 0  # bad rows skipped (data.on_bad_row: skip) while reading the source
    bad_rows: list[str] = field(default_factory=list)  # the first few of them, file:line: why
    notes: list[str] = field(default_factory=list)  # what was read past on purpose

    def __len__(self) -> int:
        return len(self.texts)

    def class_counts(self) -> Counter:
        return Counter(self.labels)

    def fingerprint(self) -> str:
        """A hash of the texts and labels, in order: two splits with the same fingerprint hold
        the same examples (what `bilstm compare` checks its runs by)."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels):
            digest.update(f"{len(text)}:{text}{len(label)}:{label}".encode())
        return digest.hexdigest()[:16]

    def subset(self, indices: np.ndarray) -> Dataset:
        """The chosen examples; the skipped-row report stays with the full data set."""
        return Dataset([self.texts[i] for i in indices], [self.labels[i] for i in indices],
                       self.source)

    def reading_report_from(self, other: Dataset) -> Dataset:
        self.skipped, self.bad_rows, self.notes = other.skipped, other.bad_rows, other.notes
        return self


@dataclass
class Splits:
    train: Dataset
    validation: Dataset
    test: Dataset | None
    labels: list[str] = field(default_factory=list)  # the model's classes, in output order

    def items(self) -> list[tuple[str, Dataset]]:
        named = [("train", self.train), ("validation", self.validation)]
        return named + ([("test", self.test)] if self.test is not None else [])


def read_labelled(path: str, data: DataConfig, format: str | None = None,
                  skip_hint: str = "set data.on_bad_row=skip") -> Dataset:
    """All good rows of a file (or folder); skipped bad rows are counted on the Dataset.
    `format` overrides data.format; if it is auto, data.format still serves a file whose
    extension names no format (a run's `test.txt` in fastText, as its `train.txt` was)."""
    dataset = Dataset(source=path)
    bad = BadRows(path, data.on_bad_row, skip_hint)
    for _, text, label in read_rows(
        path, format or data.format, data.text_column, data.label_column, data.header,
        data.label_prefix, data.labels, bad, fallback_format=data.format,
    ):
        dataset.texts.append(text)
        dataset.labels.append(label)
    dataset.skipped, dataset.bad_rows, dataset.notes = bad.count, bad.messages, bad.notes
    if not dataset.texts:
        if bad.count:
            raise UserError(f"{path}: no examples: all {bad.count} row(s) were bad and skipped\n"
                            + bad.summary())
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
    labels = _label_order(data, train)
    rng = np.random.default_rng(seed)
    if validation is None:
        full = train
        if data.validation_by == "sentence":
            train, validation, left_out = sentence_split(train, data.validation_split, rng)
            validation.source = (f"{train.source} ({data.validation_split:.0%} of its "
                                 f"sentences; {left_out:,} of their phrases unused)")
        elif data.validation_by == "block":
            train, validation = block_split(train, data.validation_split, rng)
            validation.source = (f"{train.source} ({data.validation_split:.0%} held out in "
                                 "blocks)")
        else:
            train, validation = stratified_split(train, data.validation_split, rng)
            validation.source = f"{train.source} ({data.validation_split:.0%} held out)"
        train.reading_report_from(full)
    if data.max_examples is not None:
        train = _limit(train, data.max_examples, rng)
        validation = _limit(validation, data.max_examples, rng)
        test = _limit(test, data.max_examples, rng) if test is not None else None
    listed_in = "data.labels" if data.labels is not None else (
        f"the training data (data.max_examples={data.max_examples} sampled none of them)"
        if data.max_examples is not None else "the training data")
    _check_labels(train, validation, test, labels, listed_in)
    if data.validation or test is not None:
        training_texts = set(train.texts)
        if data.validation:
            _note_training_texts(training_texts, validation, "validation")
        if test is not None:
            _note_training_texts(training_texts, test, "test")
    return Splits(train, validation, test, labels)


def _note_training_texts(training_texts: set[str], other: Dataset, name: str) -> None:
    """A validation or test file that repeats the training texts (the same file given twice, or
    an overlapping export) scores memory, not new text: said in the data summary's notes.
    Below 1% it is the usual duplicates (IMDB's test set repeats 123 training reviews)."""
    shared = sum(text in training_texts for text in other.texts)
    if other.texts and shared >= 0.01 * len(other.texts):
        other.notes.append(
            f"{name} ({other.source}): {shared:,} of its {len(other):,} texts "
            f"({shared / len(other):.0%}) are training texts too; its accuracy says how well "
            "the model remembers them, not how it does on new text")


def _label_order(data: DataConfig, train: Dataset) -> list[str]:
    """data.labels (its order is the model's output order), else the training labels sorted."""
    found = sorted(set(train.labels))
    if data.labels is None:
        return found
    if data.dataset is not None and set(data.labels) != set(found):
        raise UserError(
            f"data.labels ({', '.join(data.labels)}) must list the labels of {data.dataset}: "
            f"{', '.join(found)}"
        )
    return list(data.labels)


def _held_out_count(fraction: float, members: int) -> int:
    """How many of a class's `members` to hold out: at least one, and never all, when it has
    two or more; none of a class of one."""
    if members < 2:
        return 0
    return min(max(int(round(fraction * members)), 1), members - 1)


def stratified_split(
    dataset: Dataset, fraction: float, rng: np.random.Generator
) -> tuple[Dataset, Dataset]:
    """Hold out `fraction` of every class (at least one example of each class with two or more)."""
    labels = np.array(dataset.labels)
    held: list[np.ndarray] = []
    for label in sorted(set(dataset.labels)):
        members = rng.permutation(np.flatnonzero(labels == label))
        held.append(members[:_held_out_count(fraction, len(members))])
    held_out = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    keep = np.setdiff1d(np.arange(len(dataset)), held_out)
    return dataset.subset(keep), dataset.subset(held_out)


MAX_BLOCK = 100


def block_split(
    dataset: Dataset, fraction: float, rng: np.random.Generator
) -> tuple[Dataset, Dataset]:
    """Hold out `fraction` of every class in blocks of consecutive texts (in the data's order).

    IMDB's reviews come movie by movie, up to 30 of each, and its test set is of other movies.
    Held out one by one, a validation review has the training reviews of its movie beside it,
    and validation rewards remembering the movie (its title, its cast): it reads about a point
    above test. Held out in blocks, most validation reviews have no movie in training. Blocks
    are up to MAX_BLOCK texts, fewer on small data, so that each class holds out about ten."""
    labels = np.array(dataset.labels)
    held: list[np.ndarray] = []
    for label in sorted(set(dataset.labels)):
        members = np.flatnonzero(labels == label)  # in the data's order
        wanted = _held_out_count(fraction, len(members))
        size = max(1, min(MAX_BLOCK, wanted // 10))
        blocks = [members[start:start + size] for start in range(0, len(members), size)]
        taken = 0
        for block in rng.permutation(len(blocks)):
            if taken >= wanted:
                break
            held.append(blocks[block][:wanted - taken])
            taken += len(held[-1])
    held_out = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    keep = np.setdiff1d(np.arange(len(dataset)), held_out)
    return dataset.subset(keep), dataset.subset(held_out)


def sentence_split(
    dataset: Dataset, fraction: float, rng: np.random.Generator
) -> tuple[Dataset, Dataset, int]:
    """Hold out `fraction` of the sentences of phrase-level data, stratified by label.

    SST-2's train is 67,349 phrases, most of them parts of longer ones. Held out at random, a
    validation phrase has usually been trained on as part of a longer phrase, or its own parts
    have: validation then scores memory, not the unseen sentences of the test set. Here a
    sentence is a text that no other text contains (as a run of whole words). Validation is
    the held-out sentences; training is every text inside a training sentence. Phrases found
    only inside held-out sentences go to neither side. Returns train, validation and how many
    texts were left out."""
    by_text: dict[str, list[int]] = defaultdict(list)
    for index, text in enumerate(dataset.texts):
        by_text[" ".join(text.split())].append(index)
    texts = sorted(by_text, key=lambda text: -len(text.split()))
    frequency = Counter(word for text in texts for word in set(text.split()))

    containing: dict[str, list[str]] = defaultdict(list)  # word -> the sentences that have it

    def containers(text: str) -> Iterator[str]:
        """The sentences so far that hold `text` (all of them hold its rarest word)."""
        padded = f" {text} "
        rarest = min(text.split() or [""], key=lambda word: frequency[word])
        return (sentence for sentence in containing[rarest] if padded in f" {sentence} ")

    # Longest first, so a text's containers are known before it: it is a sentence if none is.
    sentences: list[str] = []
    for text in texts:
        if next(containers(text), None) is None:
            sentences.append(text)
            for word in set(text.split()):
                containing[word].append(text)

    labels = np.array([dataset.labels[by_text[sentence][0]] for sentence in sentences])
    held: set[str] = set()
    for label in sorted(set(labels)):
        members = rng.permutation(np.flatnonzero(labels == label))
        held.update(sentences[i] for i in members[:_held_out_count(fraction, len(members))])

    keep: list[int] = []
    for text in texts:
        if text not in held and any(sentence not in held for sentence in containers(text)):
            keep.extend(by_text[text])
    held_out = sorted(index for sentence in held for index in by_text[sentence])
    left_out = len(dataset) - len(keep) - len(held_out)
    return dataset.subset(np.array(sorted(keep), dtype=int)), \
        dataset.subset(np.array(held_out, dtype=int)), left_out


def _limit(dataset: Dataset, count: int, rng: np.random.Generator) -> Dataset:
    """A seeded, stratified sample of about `count` examples (for quick runs and smoke tests):
    a class with one example in the whole set may be left out, and the sample may exceed `count`
    by a few to keep one of each other class."""
    if len(dataset) <= count:
        return dataset
    _, sample = stratified_split(dataset, count / len(dataset), rng)
    sample.source = dataset.source
    return sample.reading_report_from(dataset)


def _check_labels(
    train: Dataset, validation: Dataset, test: Dataset | None, labels: list[str],
    listed_in: str = "data.labels",
) -> None:
    seen = set(train.labels)
    if len(seen) < 2:
        raise UserError(
            f"{train.source}: the training data has only one class ({', '.join(seen) or 'none'}); "
            "a classifier needs at least two"
        )
    absent = [label for label in labels if label not in seen]
    if absent:
        raise UserError(
            f"{train.source}: no training example has the label(s) {', '.join(map(repr, absent))} "
            f"listed in {listed_in}, so the model cannot learn them"
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


def class_weights(
    spec: str | dict[str, float], labels: list[str], train_labels: list[str]
) -> dict[str, float] | None:
    """training.class_weight as {label: weight}, or None for none.

    balanced: n / (classes * count of the label), scikit-learn's definition, so every class
    carries the same total weight. A mapping gives weights by label name; labels it leaves out
    weigh 1, and a name that is not a label is an error (a typo would otherwise do nothing)."""
    if spec == "none":
        return None
    counts = Counter(train_labels)
    if spec == "balanced":
        return {label: len(train_labels) / (len(labels) * counts[label]) for label in labels}
    assert isinstance(spec, dict)
    unknown = sorted(set(spec) - set(labels))
    if unknown:
        raise UserError(
            f"training.class_weight: {', '.join(map(repr, unknown))} is not a label of the "
            f"training data (the labels are: {', '.join(labels)})"
        )
    return {label: float(spec.get(label, 1.0)) for label in labels}


def summarize(splits: Splits, config: Config, tokenizer: Tokenizer | None = None
              ) -> dict[str, Any]:
    """Examples per split and class, token-length percentiles, the share cut at max_length,
    vocabulary coverage, and the bad rows skipped while reading. `tokenizer`: the one training
    uses (text.tokenizer_for), so that it is built once."""
    labels = splits.labels or sorted(set(splits.train.labels))
    data = config.data
    # The training vocabulary without truncation: one pass over each split gives both its token
    # counts and the share of tokens it knows.
    tokenizer = Tokenizer.from_str((tokenizer or tokenizer_for(data, splits.train.texts)).to_str())
    tokenizer.no_truncation()
    summary: dict[str, Any] = {
        "labels": labels, "max_length": data.max_length, "vocabulary_size":
        tokenizer.get_vocab_size(), "on_bad_row": data.on_bad_row,
        "class_weight": class_weights(config.training.class_weight, labels,
                                      splits.train.labels),
        "splits": {},
    }
    for name, dataset in splits.items():
        encodings = tokenizer.encode_batch(dataset.texts, add_special_tokens=False)
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
        unknown = sum(e.ids.count(UNK_ID) for e in encodings)
        counts = dataset.class_counts()
        summary["splits"][name] = {
            "source": dataset.source,
            "examples": len(dataset),
            "fingerprint": dataset.fingerprint(),
            "classes": {label: counts.get(label, 0) for label in labels},
            "length_percentiles": {
                key: int(np.percentile(lengths, q)) if len(lengths) else 0
                for key, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("max", 100))
            },
            "truncated_share": float(np.mean(lengths > data.max_length))
            if len(lengths) else 0.0,
            "vocabulary_coverage": 1.0 - unknown / max(int(lengths.sum()), 1),
            "skipped_rows": dataset.skipped,
            "bad_rows": dataset.bad_rows,
            "notes": dataset.notes,
        }
    return summary
