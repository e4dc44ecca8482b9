"""Text to integer ids, outside TensorFlow: the tokenizer, truncation, padding and length buckets.

One `tokenizer.json` serves training and prediction, so `predict` needs no TensorFlow string ops.
Id 0 is padding (masked in the model) and id 1 is the unknown word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from bilstm_cli.errors import UserError

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1


def _empty_tokenizer(lowercase: bool, kind: str = "word") -> Tokenizer:
    specials = {PAD: PAD_ID, UNK: UNK_ID}
    if kind == "wordpiece":
        model = models.WordPiece(specials, unk_token=UNK, max_input_chars_per_word=100)
    else:
        model = models.WordLevel(specials, unk_token=UNK)
    tokenizer = Tokenizer(model)
    steps = [normalizers.Replace(Regex(r"<br\s*/?>"), " "), normalizers.NFKC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    tokenizer.normalizer = normalizers.Sequence(steps)
    # Words (\w+) and runs of punctuation ([^\w\s]+) become separate tokens.
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def build_tokenizer(
    texts: Iterable[str],
    max_tokens: int,
    min_frequency: int = 1,
    lowercase: bool = True,
    max_length: int = 200,
    truncate: str = "end",
    kind: str = "word",
) -> Tokenizer:
    """A vocabulary of `max_tokens` tokens (specials included). `word`: the most frequent words,
    numbered from the commonest (word dropout by frequency reads the id as the rank: model.py);
    any other word is [UNK]. `wordpiece`: frequent words whole, and pieces of words (`##ing`)
    that spell out the rest, so a word never seen in training still reads as its parts."""
    tokenizer = _empty_tokenizer(lowercase, kind)
    options = dict(vocab_size=max_tokens, min_frequency=min_frequency,
                   special_tokens=[PAD, UNK], show_progress=False)
    trainer = (trainers.WordPieceTrainer(**options) if kind == "wordpiece"
               else trainers.WordLevelTrainer(**options))
    tokenizer.train_from_iterator(texts, trainer)
    # truncate "end" keeps the start of the text: tokenizers calls that cutting on the right.
    tokenizer.enable_truncation(max_length, direction="right" if truncate == "end" else "left")
    return tokenizer


def tokenizer_for(data: Any, texts: Iterable[str]) -> Tokenizer:
    """The tokenizer a run trains with, from its `data` config section and training texts."""
    return build_tokenizer(texts, data.max_tokens, data.min_frequency, data.lowercase,
                           data.max_length, data.truncate, data.tokenizer)


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    from bilstm_cli.runs import write_text_atomic

    write_text_atomic(path, tokenizer.to_str(pretty=True))


def load_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a damaged file
        raise UserError(f"{path} cannot be read ({exc}): the run folder is damaged; train "
                        "again, or restore the file") from None


# Texts per `encode_batch` call. Its Encoding objects (token strings, offsets, masks) weigh
# about 30 times the ids kept from them: all 25,000 IMDB test reviews at once held 0.8 GB.
ENCODE_CHUNK = 2048


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """Token ids per text, truncated as the tokenizer says; an empty text becomes one [UNK].
    A text that spells out "[PAD]" gets [UNK] there: padding (id 0) only ever ends a row, which
    the model's mask and the ONNX graph's lengths both rely on."""
    unknown = np.array([UNK_ID], dtype=np.int32)
    ids: list[np.ndarray] = []
    for start in range(0, len(texts), ENCODE_CHUNK):
        encodings = tokenizer.encode_batch(list(texts[start : start + ENCODE_CHUNK]),
                                           add_special_tokens=False)
        for encoding in encodings:
            row = np.array(encoding.ids, dtype=np.int32) if encoding.ids else unknown
            row[row == PAD_ID] = UNK_ID
            ids.append(row)
    return ids


def pad(ids: Sequence[np.ndarray], length: int | None = None) -> np.ndarray:
    """Right-pad with PAD_ID to the longest sequence (or `length`)."""
    length = length or max(len(x) for x in ids)
    batch = np.zeros((len(ids), length), dtype=np.int32)
    for row, seq in enumerate(ids):
        batch[row, : len(seq)] = seq[:length]
    return batch


def length_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
    bucket: bool = True, pool: int = 50,
) -> list[np.ndarray]:
    """Batches of indices. With `bucket`, each batch holds texts of similar length, so padding
    (and the masked steps the LSTM still has to run) is small. With `rng`, the order is shuffled:
    examples are drawn in random pools of `pool` batches, sorted by length inside a pool, cut
    into batches, and the batches shuffled, so every epoch sees different neighbours."""
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    if bucket:
        step = batch_size * pool if rng is not None else len(order)
        order = np.concatenate([
            chunk[np.argsort(lengths[chunk], kind="stable")]
            for chunk in np.array_split(order, max(1, -(-len(order) // step)))
        ]) if len(order) else order
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
