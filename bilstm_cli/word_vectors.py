"""Initial word vectors from the training texts' own co-occurrences (`model.embedding_init:
cooccurrence`).

Each word's positive pointwise mutual information with the words at most five tokens away,
reduced to the embedding's dimensions by a truncated SVD (Levy, Goldberg & Dagan 2015). Words
used alike start out alike, so a word seen in a few training texts starts near the words it is
used like instead of at a random point. No outside text: the counts come from the token ids
the model trains on, and the labels are not read. About 40 s for IMDB's 22,500 reviews on 2 cores.
"""

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from bilstm_cli.text import UNK_ID

WINDOW = 5  # tokens either side
CONTEXT_POWER = 0.75  # context frequencies smoothed, as in word2vec's negative sampling
OVERSAMPLE = 16  # extra columns of the randomized SVD
POWER_ITERATIONS = 3
BLOCK = 2048  # texts counted at a time: all of IMDB's pairs at once took 0.3 GB more at the peak


def cooccurrences(ids: Sequence[np.ndarray], vocab_size: int,
                  window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(keys, weights) of the upper triangle of the symmetric co-occurrence matrix: each pair of
    words at most `window` tokens apart in one text, keyed `min * vocab_size + max` (sorted),
    weighted 1/distance and summed. A word near itself counts twice, as it does both ways round.
    Padding and [UNK] are not words here."""
    keys = np.empty(0, np.int64)
    counts = np.empty((0, window), np.int32)  # per pair and distance: exact, in any order
    for start in range(0, len(ids), BLOCK):
        keys, counts = _merge(keys, counts,
                              *_block_counts(ids[start : start + BLOCK], vocab_size, window))
    counts[keys // vocab_size == keys % vocab_size] *= 2
    weights = np.zeros(len(keys))
    for distance in range(1, window + 1):
        weights += counts[:, distance - 1] / distance
    return keys, weights


def _block_counts(ids: Sequence[np.ndarray], vocab_size: int,
                  window: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted pair keys of a few texts, and how often each pair occurs at each distance."""
    gap = np.full(window, -1, np.int64)  # no pair reaches across it into the next text
    tokens = np.concatenate([part for row in ids for part in (np.asarray(row, np.int64), gap)])
    keys, distances = [], []
    for distance in range(1, window + 1):
        left, right = tokens[:-distance], tokens[distance:]
        both = (left > UNK_ID) & (right > UNK_ID)
        left, right = left[both], right[both]
        keys.append(np.minimum(left, right) * vocab_size + np.maximum(left, right))
        distances.append(np.full(len(left), distance - 1, np.int64))
    pairs, where = np.unique(np.concatenate(keys), return_inverse=True)
    counts = np.bincount(where * window + np.concatenate(distances),
                         minlength=len(pairs) * window)
    return pairs, counts.reshape(-1, window).astype(np.int32)


def _merge(keys: np.ndarray, counts: np.ndarray, new_keys: np.ndarray,
           new_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted key lists and their counts as one."""
    at = np.searchsorted(keys, new_keys)
    found = at < len(keys)
    found[found] = keys[at[found]] == new_keys[found]
    counts[at[found]] += new_counts[found]
    fresh = ~found
    return (np.insert(keys, at[fresh], new_keys[fresh]),
            np.insert(counts, at[fresh], new_counts[fresh], axis=0))


def positive_pmi(keys: np.ndarray, weights: np.ndarray,
                 vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, values) of the sparse PPMI matrix, in row-major order, from the upper
    triangle of the counts (`cooccurrences`): log(P(w, c) / (P(w) P(c))) where positive, the
    context probabilities smoothed by CONTEXT_POWER (rare contexts otherwise get the highest
    scores). Each row's sum adds its entries in column order, as one pass over the whole matrix
    would: the same vectors to the last bit, whatever the texts' order in blocks."""
    rows, columns = keys // vocab_size, keys % vocab_size
    below = rows != columns  # the entries (column, row) left of the diagonal, mirrored
    sums = np.bincount(columns[below], weights=weights[below], minlength=vocab_size)
    np.add.at(sums, rows, weights)  # then the diagonal and the entries right of it, in order
    contexts = sums ** CONTEXT_POWER  # the matrix is symmetric: column sums are row sums
    total = contexts.sum()

    def scores(row: np.ndarray, column: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return np.log(weight * total / (sums[row] * contexts[column]))

    upper = scores(rows, columns, weights)
    lower = scores(columns[below], rows[below], weights[below])
    keep_upper, keep_lower = upper > 0, lower > 0
    all_rows = np.concatenate([rows[keep_upper], columns[below][keep_lower]])
    all_columns = np.concatenate([columns[keep_upper], rows[below][keep_lower]])
    values = np.concatenate([upper[keep_upper], lower[keep_lower]]).astype(np.float32)
    order = np.argsort(all_rows * vocab_size + all_columns)
    return all_rows[order], all_columns[order], values[order]


def sparse_matrix(rows: np.ndarray, columns: np.ndarray, values: np.ndarray,
                  size: int) -> tf.sparse.SparseTensor:
    """A [size, size] matrix in TensorFlow's memory: the NumPy arrays can go before the SVD."""
    with tf.device("/CPU:0"):
        return tf.sparse.SparseTensor(np.stack([rows, columns], axis=1), values, (size, size))


def truncated_svd(matrix: tf.sparse.SparseTensor, dim: int, seed: int) -> np.ndarray:
    """U sqrt(S) of the top `dim` singular values ([rows, dim]; zero columns beyond the matrix's
    rank), by randomized range finding (Halko, Martinsson & Tropp 2011): a few sparse products
    instead of a dense [vocab, vocab] matrix."""
    size = int(matrix.dense_shape[0])

    def times(dense: np.ndarray, transposed: bool = False) -> np.ndarray:
        # On the CPU: TensorFlow's GPU kernel sums with atomics (a different table each run),
        # refuses op determinism (--deterministic), and caps nnz x columns at 2^31.
        with tf.device("/CPU:0"):
            return tf.sparse.sparse_dense_matmul(matrix, dense, adjoint_a=transposed).numpy()

    width = min(dim + OVERSAMPLE, size)
    noise = np.random.default_rng(seed).standard_normal((size, width), dtype=np.float32)
    basis = times(noise)
    del noise
    for _ in range(POWER_ITERATIONS):
        basis = times(times(np.linalg.qr(basis)[0], transposed=True))
    basis = np.linalg.qr(basis)[0]
    small_u, singular, _ = np.linalg.svd(times(basis, transposed=True).T, full_matrices=False)
    kept = min(dim, singular.shape[0])
    vectors = np.zeros((size, dim), np.float32)
    vectors[:, :kept] = (basis @ small_u[:, :kept]) * np.sqrt(singular[:kept])
    alone = np.ones(size, bool)
    alone[matrix.indices.numpy()[:, 0]] = False  # NumPy's slice: no TensorFlow op on a GPU
    vectors[alone] = 0  # exactly: QR leaves rounding noise in the rows of words with no entry
    return vectors


def cooccurrence_vectors(ids: Sequence[np.ndarray], vocab_size: int, dim: int,
                         seed: int) -> np.ndarray:
    """A [vocab_size, dim] table; the rows of words with no neighbour (padding, [UNK], words
    only ever alone) are zero."""
    matrix = sparse_matrix(*positive_pmi(*cooccurrences(ids, vocab_size), vocab_size),
                           vocab_size)
    return truncated_svd(matrix, dim, seed)


def initial_table(random_table: np.ndarray, vectors: np.ndarray, scale: float) -> np.ndarray:
    """The embedding's first weights: `vectors` scaled so their rows' mean norm is `scale`
    times the random table's (a small init would be overwritten by Adam's first steps); rows
    with no vector (padding, [UNK], words never near another) keep their random values."""
    norms = np.linalg.norm(vectors, axis=1)
    has_vector = norms > 0
    has_vector[: UNK_ID + 1] = False
    table = np.array(random_table, dtype=np.float32)
    if has_vector.any():
        target = scale * float(np.linalg.norm(random_table, axis=1).mean())
        table[has_vector] = vectors[has_vector] * (target / norms[has_vector].mean())
    return table
