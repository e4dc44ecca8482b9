"""Initial word vectors from co-occurrences (model.embedding_init: cooccurrence)."""

from __future__ import annotations

import keras
import numpy as np
from conftest import tiny_model

from bilstm_cli import word_vectors
from bilstm_cli.config import ModelConfig
from bilstm_cli.text import PAD_ID, UNK_ID
from bilstm_cli.word_vectors import (
    cooccurrence_vectors,
    cooccurrences,
    initial_table,
    positive_pmi,
    sparse_matrix,
    truncated_svd,
)


def as_dict(keys: np.ndarray, weights: np.ndarray, vocab_size: int) -> dict:
    return {(int(k) // vocab_size, int(k) % vocab_size): float(w)
            for k, w in zip(keys, weights, strict=True)}


def test_pairs_within_the_window_of_one_text_weighted_by_distance():
    texts = [np.array([2, 3, 4, 5]), np.array([6, UNK_ID, 2, PAD_ID]), np.array([7])]
    keys, weights = cooccurrences(texts, vocab_size=10, window=2)
    assert list(keys) == sorted(keys)
    # [UNK] and padding are no words, text 3 is alone, nothing reaches from text 1 into text 2
    assert as_dict(keys, weights, 10) == {(2, 3): 1, (3, 4): 1, (4, 5): 1, (2, 4): 0.5,
                                          (3, 5): 0.5, (2, 6): 0.5}


def test_repeated_pairs_add_up():
    keys, weights = cooccurrences([np.array([2, 3, 2, 3])], vocab_size=4, window=3)
    # (2, 3) at distances 1, 1, 1 and 3; (2, 2) and (3, 3) at distance 2, twice (both ways)
    assert as_dict(keys, weights, 4) == {(2, 3): 3 + 1 / 3, (2, 2): 1.0, (3, 3): 1.0}


def brute_force_pmi(texts: list[np.ndarray], vocab_size: int, window: int) -> np.ndarray:
    """The dense PPMI matrix, counted pair by pair both ways round."""
    counts = np.zeros((vocab_size, vocab_size))
    for text in texts:
        for i, left in enumerate(text):
            for distance in range(1, window + 1):
                if i + distance < len(text) and left > UNK_ID and text[i + distance] > UNK_ID:
                    counts[left, text[i + distance]] += 1 / distance
                    counts[text[i + distance], left] += 1 / distance
    contexts = counts.sum(axis=0) ** 0.75
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * contexts.sum() / np.outer(counts.sum(axis=1), contexts))
    return np.where(pmi > 0, pmi, 0)


def test_positive_pmi_is_the_smoothed_formula_where_positive(monkeypatch):
    rng = np.random.default_rng(0)
    vocab_size, window = 12, 3
    texts = [rng.integers(0, vocab_size, rng.integers(1, 15)) for _ in range(40)]
    monkeypatch.setattr(word_vectors, "BLOCK", 3)  # many blocks, merged
    rows, columns, values = positive_pmi(*cooccurrences(texts, vocab_size, window), vocab_size)
    assert list(rows * vocab_size + columns) == sorted(rows * vocab_size + columns)
    assert (values > 0).all()
    dense = np.zeros((vocab_size, vocab_size))
    dense[rows, columns] = values
    np.testing.assert_allclose(dense, brute_force_pmi(texts, vocab_size, window), rtol=1e-6)


def test_the_blocks_do_not_change_a_bit(monkeypatch):
    """The texts counted a few at a time give the same matrix as all at once, to the last bit
    (a row's sum adds its entries in one order), so the vectors do not depend on BLOCK."""
    rng = np.random.default_rng(5)
    texts = [rng.integers(0, 60, rng.integers(1, 40)) for _ in range(200)]
    results = []
    for block in (7, 10_000):
        monkeypatch.setattr(word_vectors, "BLOCK", block)
        results.append(positive_pmi(*cooccurrences(texts, 60), 60))
    for one, other in zip(*results, strict=True):
        np.testing.assert_array_equal(one, other)


def test_truncated_svd_finds_the_top_singular_directions():
    rng = np.random.default_rng(1)
    vocab_size = 300
    low_rank = rng.standard_normal((vocab_size, 6)) * np.array([40, 25, 15, 8, 1, 1])
    matrix = low_rank @ rng.standard_normal((6, vocab_size))
    matrix *= rng.random(matrix.shape) < 0.8  # zeros are left out of the sparse matrix
    rows, columns = np.nonzero(matrix)
    values = matrix[rows, columns].astype(np.float32)
    vectors = truncated_svd(sparse_matrix(rows, columns, values, vocab_size), 4, seed=0)
    u, singular, _ = np.linalg.svd(matrix)
    exact = u[:, :4] * np.sqrt(singular[:4])
    for column in range(4):  # the same vectors up to sign
        cosine = vectors[:, column] @ exact[:, column] / (
            np.linalg.norm(vectors[:, column]) * np.linalg.norm(exact[:, column]))
        assert abs(cosine) > 0.999
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=0) ** 2, singular[:4], rtol=1e-3)


def test_more_dimensions_than_the_vocabulary_has_leaves_zero_columns():
    rows, columns = np.array([2, 3, 2, 4]), np.array([3, 2, 4, 2])
    vectors = truncated_svd(sparse_matrix(rows, columns, np.ones(4, np.float32), 5), 8, seed=0)
    assert vectors.shape == (5, 8)
    assert not vectors[:, 5:].any()


def test_words_used_alike_start_alike():
    """`good` and `great` share their neighbours, `bad` and `awful` theirs: the vectors say so."""
    rng = np.random.default_rng(2)
    vocab = {w: i for i, w in enumerate(
        "[PAD] [UNK] good great bad awful very really so truly film plot the was".split())}
    texts = []
    for _ in range(400):
        if rng.random() < 0.5:
            words = [rng.choice(["very", "really"]), rng.choice(["good", "great"]), "film"]
        else:
            words = [rng.choice(["so", "truly"]), rng.choice(["bad", "awful"]), "plot"]
        words = ["the", "film", "was", *words, rng.choice(["[UNK]", "the"])]
        texts.append(np.array([vocab[w] for w in words]))
    vectors = cooccurrence_vectors(texts, len(vocab), dim=4, seed=0)

    def cosine(a: str, b: str) -> float:
        x, y = vectors[vocab[a]], vectors[vocab[b]]
        return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))

    assert cosine("good", "great") > 0.9 and cosine("bad", "awful") > 0.9
    assert cosine("good", "great") - cosine("good", "bad") > 0.5
    assert not vectors[PAD_ID].any() and not vectors[UNK_ID].any()


def test_the_table_keeps_random_rows_where_there_is_no_vector():
    rng = np.random.default_rng(3)
    random_table = rng.uniform(-0.05, 0.05, (6, 4)).astype(np.float32)
    vectors = rng.standard_normal((6, 4)).astype(np.float32)
    vectors[4] = 0  # a word never near another
    table = initial_table(random_table, vectors, scale=4.0)
    np.testing.assert_array_equal(table[[PAD_ID, UNK_ID, 4]], random_table[[PAD_ID, UNK_ID, 4]])
    kept = [2, 3, 5]
    np.testing.assert_allclose(np.linalg.norm(table[kept], axis=1).mean(),
                               4.0 * np.linalg.norm(random_table, axis=1).mean(), rtol=1e-5)
    for row in kept:  # directions unchanged
        np.testing.assert_allclose(table[row] / np.linalg.norm(table[row]),
                                   vectors[row] / np.linalg.norm(vectors[row]), rtol=1e-5)


def test_build_model_starts_from_the_vectors():
    config = ModelConfig(embedding_dim=4, units=3, embedding_init="cooccurrence",
                         embedding_init_scale=2.0)
    vectors = np.random.default_rng(4).standard_normal((7, 4)).astype(np.float32)
    keras.utils.set_random_seed(5)
    table = np.asarray(tiny_model(config, 7, 2, word_vectors=vectors)
                       .get_layer("embedding").embeddings)
    keras.utils.set_random_seed(5)
    random_table = np.asarray(tiny_model(config, 7, 2).get_layer("embedding").embeddings)
    np.testing.assert_array_equal(table[:2], random_table[:2])  # padding and [UNK]
    for row in range(2, 7):
        np.testing.assert_allclose(table[row] / np.linalg.norm(table[row]),
                                   vectors[row] / np.linalg.norm(vectors[row]), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(table[2:], axis=1).mean(),
                               2.0 * np.linalg.norm(random_table, axis=1).mean(), rtol=1e-5)
