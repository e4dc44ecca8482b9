"""One BiLSTM training step, five ways, alternated in one process: where the time goes.

    python benchmarks/lstm_step.py [--length 200] [--batch 128] [--steps 12]

  keras masked:    keras.layers.LSTM with the embedding's padding mask (Keras' generic loop
                   applies the mask inside every step)
  right-padded:    the accel package (training.kernel: fused): TokenEmbedding and
                   RightPaddedLSTM, same mask and the same outputs, with the fused C++ kernel
                   (accel/kernel.py; built here if this machine has not yet), which multiplies
                   the embedding table by the input kernel when the batch has more tokens than
                   the table has rows, and its Adam (accel/optimizer.py: the embedding's sparse
                   gradient summed by the kernel's scatter op)
  ... Keras' Adam: the same with keras.optimizers.Adam (TensorFlow's segment sums)
  ... no lookup:   the same with Keras' Embedding and Adam: the kernel multiplies every token
  keras unmasked:  keras.layers.LSTM without a mask, as the reference script runs it (wrong for
                   a backward direction over right padding; the speed to aim for)

Each is Embedding(10,000, 128) -> Bidirectional(LSTM(64)) -> masked max pooling -> Dense, Adam,
on one batch of right-padded random ids (lengths uniform between half and all of --length), with
the thread settings `bilstm train` uses. The steps are alternated, so machine noise hits each
alike; medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    import numpy as np

    from bilstm_cli.backend import configure_threads, setup

    setup()
    configure_threads(bidirectional=True)
    import keras

    from bilstm_cli.accel import kernel, optimizer
    from bilstm_cli.accel.layers import RightPaddedLSTM, TokenEmbedding
    from bilstm_cli.model import MaskedGlobalMaxPooling1D

    if not kernel.prepare(lambda message: print(message, file=sys.stderr)):
        print("the fused kernel is not available: 'right-padded' runs Keras' loop too",
              file=sys.stderr)
    layers = keras.layers

    def build(lstm_class: type, mask: bool, embedding: type = layers.Embedding,
              adam: type = keras.optimizers.Adam) -> keras.Model:
        ids = keras.Input((None,), dtype="int32")
        x = embedding(10_000, 128, mask_zero=mask)(ids)
        x = layers.Bidirectional(lstm_class(64, return_sequences=True))(x)
        x = MaskedGlobalMaxPooling1D()(x)
        outputs = layers.Dense(1, activation="sigmoid")(x)
        model = keras.Model(ids, outputs)
        model.compile(optimizer=adam(), loss="binary_crossentropy")
        return model

    rng = np.random.default_rng(0)
    lengths = rng.integers(args.length // 2, args.length + 1, size=args.batch)
    lengths[0] = args.length
    ids = np.zeros((args.batch, args.length), dtype=np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, 10_000, size=length)
    labels = rng.integers(0, 2, size=(args.batch, 1)).astype("float32")

    models = {
        "keras masked": build(layers.LSTM, mask=True),
        "right-padded (bilstm)": build(RightPaddedLSTM, mask=True, embedding=TokenEmbedding,
                                       adam=optimizer.Adam),
        "right-padded, Keras' Adam": build(RightPaddedLSTM, mask=True, embedding=TokenEmbedding),
        "right-padded, no lookup": build(RightPaddedLSTM, mask=True),
        "keras unmasked": build(layers.LSTM, mask=False),
    }
    for model in models.values():
        for _ in range(3):
            model.train_on_batch(ids, labels)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.steps):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(ids, labels)
            times[name].append(time.perf_counter() - start)

    base = statistics.median(times["keras masked"])
    print(f"B={args.batch}, T={args.length}, median of {args.steps} steps each")
    print("| LSTM | ms/step | vs keras masked |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {1000 * median:.0f} | {base / median:.2f}x |")


if __name__ == "__main__":
    main()
