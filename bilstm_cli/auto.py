"""Settings that follow the data: what `auto` means for the keys that take it.

No fixed number serves 5,000 questions of 10 words and 25,000 reviews of 250. Three keys take
`auto` (their default; the shipped imdb and sst2 configs name numbers) and are resolved here
from the training split, before the tokenizer and the model are made; the resolved numbers are
what the run's config.yaml records, and `bilstm train --dry-run` shows them with the reason:

- data.max_tokens: every word seen at least MIN_COUNT times (or data.min_frequency, if more)
  in the training texts, at most MAX_VOCABULARY; the rest are [UNK], which word dropout
  teaches the model to read.
- data.max_length: the 95th percentile of the training texts' lengths in tokens, rounded up to
  a multiple of 8: one text in twenty is cut, and a batch is not padded for the longest outlier.
- training.epochs: enough epochs for about UPDATES optimizer steps (between MIN_EPOCHS and
  MAX_EPOCHS), the schedule spanning them; early stopping ends it sooner when validation says so.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bilstm_cli.config import Config
from bilstm_cli.text import build_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MIN_COUNT = 2
MAX_VOCABULARY = 40_000
LENGTH_PERCENTILE = 95
LENGTH_STEP = 8
UPDATES = 1_000
MIN_EPOCHS, MAX_EPOCHS = 3, 30


def has_auto(config: Config) -> bool:
    return "auto" in (config.data.max_tokens, config.data.max_length, config.training.epochs)


def resolve(config: Config, train_texts: Sequence[str]) -> tuple[Config, list[str]]:
    """`config` with each `auto` replaced by its value for these training texts, and a line per
    key saying what it became and why."""
    if not has_auto(config):
        return config, []
    data, training = config.data, config.training
    notes: list[str] = []
    changes: dict[str, dict[str, int]] = {"data": {}, "training": {}}
    if "auto" in (data.max_tokens, data.max_length):
        # Every word with its count at least MIN_COUNT, nothing truncated: the Rust trainer
        # counts them (always by words: a WordPiece trainer asked for an unbounded vocabulary
        # allocates for it), and a word-level encoding gives the lengths.
        least = max(MIN_COUNT, data.min_frequency)
        counted = build_tokenizer(train_texts, 10**9, least, data.lowercase, 10**9,
                                  data.truncate, "word")
        counted.no_truncation()
        max_tokens = data.max_tokens
        if max_tokens == "auto":
            words = counted.get_vocab_size()
            max_tokens = changes["data"]["max_tokens"] = min(words, MAX_VOCABULARY)
            notes.append(f"data.max_tokens auto: {max_tokens:,} ({words - 2:,} words seen at "
                         f"least {least} times in training, plus [PAD] and [UNK]; at most "
                         f"{MAX_VOCABULARY:,})")
        if data.max_length == "auto":
            if data.tokenizer != "word":  # pieces: the lengths of the vocabulary it will have
                counted = build_tokenizer(train_texts, max_tokens, data.min_frequency,
                                          data.lowercase, 10**9, data.truncate, data.tokenizer)
                counted.no_truncation()
            value, note = _max_length(counted, train_texts)
            changes["data"]["max_length"] = value
            notes.append(note)
    if training.epochs == "auto":
        steps = max(1, math.ceil(len(train_texts) / training.batch_size))
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(UPDATES / steps)))
        changes["training"]["epochs"] = epochs
        notes.append(f"training.epochs auto: {epochs} ({steps} steps per epoch; about "
                     f"{UPDATES:,} updates, between {MIN_EPOCHS} and {MAX_EPOCHS} epochs)")
    resolved = config.model_copy(update={
        "data": data.model_copy(update=changes["data"]),
        "training": training.model_copy(update=changes["training"]),
    })
    return resolved, notes


def _max_length(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[int, str]:
    """The LENGTH_PERCENTILE-th percentile of the texts' lengths in tokens, rounded up to a
    multiple of LENGTH_STEP, and the note saying so."""
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    lengths = np.array([len(e.ids) for e in encodings] or [1])
    cut = float(np.percentile(lengths, LENGTH_PERCENTILE))
    value = max(LENGTH_STEP, math.ceil(cut / LENGTH_STEP) * LENGTH_STEP)
    return value, (f"data.max_length auto: {value} (the training texts' {LENGTH_PERCENTILE}th "
                   f"percentile is {cut:.0f} tokens, rounded up to a multiple of {LENGTH_STEP}; "
                   f"{np.mean(lengths > value):.1%} are cut)")
