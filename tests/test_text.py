import numpy as np
import pytest

from bilstm_cli.errors import UserError
from bilstm_cli.text import (
    PAD_ID,
    UNK_ID,
    build_tokenizer,
    encode,
    length_batches,
    load_tokenizer,
    pad,
    save_tokenizer,
)


def vocab_tokens(tokenizer, ids):
    return [tokenizer.id_to_token(int(i)) for i in ids]


def test_lowercase_punctuation_and_html_breaks():
    tokenizer = build_tokenizer(["Great film!<br /><br />Loved it, really."], max_tokens=50)
    ids = encode(tokenizer, ["GREAT film!<br />loved it"])[0]
    assert vocab_tokens(tokenizer, ids) == ["great", "film", "!", "loved", "it"]


def test_vocabulary_keeps_the_most_frequent_tokens():
    tokenizer = build_tokenizer(["a a a b b c"], max_tokens=4)
    assert tokenizer.get_vocab_size() == 4
    assert tokenizer.token_to_id("[PAD]") == PAD_ID and tokenizer.token_to_id("[UNK]") == UNK_ID
    assert list(encode(tokenizer, ["a b c"])[0]) == [2, 3, UNK_ID]


def test_word_ids_are_frequency_ranks():
    # Word dropout by frequency (model.py) reads a word's id as its rank: the commonest first,
    # whatever order the words come in.
    tokenizer = build_tokenizer(["c b a d d d d", "b a a", "a b c a"], max_tokens=10)
    assert [tokenizer.token_to_id(w) for w in "adbc"] == [2, 3, 4, 5]


def test_min_frequency():
    tokenizer = build_tokenizer(["a a b"], max_tokens=10, min_frequency=2)
    assert list(encode(tokenizer, ["a b"])[0]) == [2, UNK_ID]


def test_truncation_keeps_start_or_end():
    text = "one two three four five"
    keep_start = build_tokenizer([text], 20, max_length=2, truncate="end")
    keep_end = build_tokenizer([text], 20, max_length=2, truncate="start")
    assert vocab_tokens(keep_start, encode(keep_start, [text])[0]) == ["one", "two"]
    assert vocab_tokens(keep_end, encode(keep_end, [text])[0]) == ["four", "five"]


def test_empty_text_becomes_one_unknown_token():
    tokenizer = build_tokenizer(["x"], 10)
    assert list(encode(tokenizer, ["", "   "])[0]) == [UNK_ID]


def test_a_text_that_spells_the_padding_token_never_gets_padding_ids():
    """Id 0 only ever ends a padded row: the model's mask and the ONNX lengths rely on it."""
    tokenizer = build_tokenizer(["great film awful"], 10)
    great, film, awful = encode(tokenizer, ["great film awful"])[0]
    rows = encode(tokenizer, ["great film [PAD] awful", "[PAD]", "[PAD] [PAD]"])
    assert [row.tolist() for row in rows] == [[great, film, UNK_ID, awful], [UNK_ID],
                                              [UNK_ID, UNK_ID]]


def test_pad_on_the_right():
    batch = pad([np.array([5, 6, 7]), np.array([8])])
    assert batch.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.dtype == np.int32


def test_length_batches_cover_every_index_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(1, 300, size=1000)
    batches = length_batches(lengths, 32, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 30  # similar lengths share a batch (random batches would spread ~280)
    again = length_batches(lengths, 32, np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip(batches, again))
    unshuffled = length_batches(lengths, 32)
    assert [len(b) for b in unshuffled][:-1] == [32] * 31


def test_wordpiece_spells_an_unseen_word_in_pieces_and_keeps_the_special_ids():
    texts = ["a delightful film", "the acting delights", "what a delight"] * 10
    word = build_tokenizer(texts, max_tokens=100)
    pieces = build_tokenizer(texts, max_tokens=100, kind="wordpiece")
    assert pieces.token_to_id("[PAD]") == PAD_ID and pieces.token_to_id("[UNK]") == UNK_ID
    assert pieces.get_vocab_size() <= 100
    unseen = "delighting film"
    assert vocab_tokens(word, encode(word, [unseen])[0]) == ["[UNK]", "film"]
    split = vocab_tokens(pieces, encode(pieces, [unseen])[0])
    assert split[0] == "delight" and split[-1] == "film" and "[UNK]" not in split
    assert "".join(p.removeprefix("##") for p in split[:-1]) == "delighting"


def test_wordpiece_truncates_pieces_like_words(tmp_path):
    from bilstm_cli.text import load_tokenizer, save_tokenizer

    pieces = build_tokenizer(["one two three four five"] * 3, 40, max_length=3, truncate="start",
                             kind="wordpiece")
    save_tokenizer(pieces, tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert vocab_tokens(again, encode(again, ["one two three four five"])[0]) == [
        "three", "four", "five"]


def test_a_damaged_tokenizer_file_is_a_user_error(tmp_path):
    path = tmp_path / "tokenizer.json"
    save_tokenizer(build_tokenizer(["great film"], 10), path)
    path.write_text(path.read_text()[:50])  # cut short (a full disk, a broken copy)
    with pytest.raises(UserError, match="tokenizer.json cannot be read .*the run folder is "
                                        "damaged"):
        load_tokenizer(path)


def test_training_batches_cover_every_example_once_and_run_without_autotune():
    """The padded batches of an epoch hold every example once. tf.data's autotuning stays off:
    its thread sleeps up to a minute between passes, and an iterator's destructor waits for it
    (fit returned 27-34 s after an IMDB epoch ended)."""
    from bilstm_cli.train import _batch_dataset

    ids = [np.full(n, n, dtype=np.int32) for n in (3, 9, 1, 4, 7, 2, 8)]
    y = np.arange(len(ids), dtype=np.int64)
    dataset, steps = _batch_dataset(ids, y, 3, seed=5, bucket=True)
    batches = [(x.numpy(), labels.numpy()) for x, labels in dataset]
    assert steps == len(batches) == 3
    seen = np.concatenate([labels for _, labels in batches])
    assert sorted(seen) == list(range(len(ids)))
    for x, labels in batches:
        for row, label in zip(x, labels):
            assert list(row[row != 0]) == list(ids[label])
    assert dataset.options().autotune.enabled is False
