"""Where a training step's time goes, op by op: TensorFlow's profiler over a few steps.

    python benchmarks/step_profile.py [--length 200] [--batch 128] [--vocabulary 10000]
                                      [--unidirectional] [--no-lookup] [--keras-adam]
                                      [--steps 5] [--top 25]

The model is `bilstm train`'s (model.build_model with the accel layers: TokenEmbedding,
RightPaddedLSTM with the fused kernel, last-state pooling, 64 units, 128-dim embeddings, the
accel Adam with clipnorm 1.0) with its thread settings, on one batch of random ids of full
length. --no-lookup: the embedding is Keras' own, so the kernel multiplies every token by the
input kernel (the path before TokenEmbedding). --keras-adam: keras.optimizers.Adam, which
sums the embedding's sparse gradient with TensorFlow's segment sums. Printed: the wall time per
step, then the ops' own time per step summed over the executor threads (on 2 cores up to twice
the wall time), largest first, grouped by op name with the layer path cut off.
"""

from __future__ import annotations

import argparse
import collections
import glob
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--vocabulary", type=int, default=10_000)
    parser.add_argument("--unidirectional", action="store_true")
    parser.add_argument("--no-lookup", action="store_true")
    parser.add_argument("--keras-adam", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    import numpy as np

    from bilstm_cli.backend import configure_threads, setup

    setup()
    configure_threads(bidirectional=not args.unidirectional)
    import keras
    import tensorflow as tf

    from bilstm_cli import accel
    from bilstm_cli.accel import kernel, optimizer
    from bilstm_cli.accel.layers import TokenEmbedding
    from bilstm_cli.architecture import describe
    from bilstm_cli.config import load_config
    from bilstm_cli.model import build_model

    if args.no_lookup:
        TokenEmbedding.call = keras.layers.Embedding.call

    if not kernel.prepare(lambda message: print(message, file=sys.stderr)):
        print("the fused kernel is not available: Keras' loop is profiled", file=sys.stderr)
    bidirectional = "false" if args.unidirectional else "true"
    config = load_config(None, [f"model.bidirectional={bidirectional}", "model.pooling=last"])
    rng = np.random.default_rng(0)
    ids = rng.integers(2, args.vocabulary, size=(args.batch, args.length)).astype("int32")
    labels = rng.integers(0, 2, size=(args.batch, 1)).astype("float32")
    kinds = accel.fused_layers() if kernel.ops() is not None else accel.keras_layers()
    model = build_model(describe(config.model, args.vocabulary, 2), kinds)
    adam = keras.optimizers.Adam if args.keras_adam else optimizer.Adam
    model.compile(optimizer=adam(1e-3, clipnorm=1.0),
                  loss="binary_crossentropy")
    for _ in range(3):
        model.train_on_batch(ids, labels)

    # The profiler's own trace format (XSpace), read with the protobuf module TensorFlow ships.
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(ids, labels)
        wall = (time.perf_counter() - start) / args.steps
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0], "rb") as handle:
            space.ParseFromString(handle.read())

    per_op: collections.Counter[str] = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name.startswith("Executor"):  # the executor's own spans enclose the ops
                    continue
                per_op[name.rsplit("/", 1)[-1]] += event.duration_ps / 1e9 / args.steps
    total = sum(per_op.values())
    print(f"B={args.batch}, T={args.length}, vocabulary {args.vocabulary}, "
          f"{'LSTM' if args.unidirectional else 'BiLSTM'}"
          f"{', no lookup' if args.no_lookup else ''}"
          f"{', Keras Adam' if args.keras_adam else ''}: {1000 * wall:.1f} ms per step (wall), "
          f"{total:.1f} ms of ops (all threads)")
    print("| op | ms per step | share |")
    print("| --- | --- | --- |")
    for name, milliseconds in per_op.most_common(args.top):
        print(f"| {name} | {milliseconds:.2f} | {milliseconds / total:.1%} |")


if __name__ == "__main__":
    main()
