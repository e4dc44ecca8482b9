"""On a GPU: does `bilstm train --bidirectional` (the shipped default config) run cuDNN's LSTM?

    BILSTM_DATA_DIR=../shared/data python benchmarks/cudnn_check.py [--examples N] [--config C]

Keras' TensorFlow backend runs an LSTM through cuDNN only when the layer allows it (tanh and
sigmoid, no recurrent dropout, no unroll, `use_cudnn` not off), and otherwise falls back to its
generic step loop without a word: several times slower on a GPU. A mask it cannot give cuDNN
(not right padding, or a whole text masked) is not a fallback but an error at run time. This
trains the config bidirectionally (one epoch on a sample of N training texts, in this process,
every ensemble member) and counts, for every LSTM call Keras traced (training, evaluation and
prediction functions, retraces included), which path it took. A finished epoch also shows that
bilstm's batches are right-padded. Prints one JSON line; exit status 1 if any LSTM call fell
back, 2 if TensorFlow sees no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3000,
                        help="training texts to use (default 3,000: the check needs few)")
    parser.add_argument("--config", default=None, help="a shipped config name or a YAML path "
                        "(default: the one `bilstm train` uses)")
    args = parser.parse_args()

    from bilstm_cli.backend import setup

    setup()
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print("TensorFlow sees no GPU here: nothing to check", file=sys.stderr)
        return 2

    from keras.src import backend as keras_backend
    from keras.src.layers.rnn.lstm import LSTM

    from bilstm_cli.config import load_config, resolve_config_path
    from bilstm_cli.train import train

    calls = {"lstm": 0, "cudnn": 0}
    keras_inner_loop, keras_lstm = LSTM.inner_loop, keras_backend.lstm

    def counting_inner_loop(self, *call_args, **call_kwargs):
        """Every LSTM call (bilstm's RightPaddedLSTM hands each to Keras' on a GPU)."""
        calls["lstm"] += 1
        return keras_inner_loop(self, *call_args, **call_kwargs)

    def counting_lstm(*call_args, **call_kwargs):
        """Keras' cuDNN path: it raises NotImplementedError where cuDNN cannot run the call."""
        result = keras_lstm(*call_args, **call_kwargs)
        calls["cudnn"] += 1
        return result

    LSTM.inner_loop, keras_backend.lstm = counting_inner_loop, counting_lstm
    config = load_config(resolve_config_path(args.config), [
        f"data.max_examples={args.examples}"], {"model.bidirectional": True, "training.epochs": 1})

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result = train(config, log, run_dir=Path(scratch) / "run")
    seconds = time.perf_counter() - start
    report = {
        "gpus": [gpu.name for gpu in gpus],
        "device_name": tf.config.experimental.get_device_details(gpus[0]).get("device_name"),
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "traced_lstm_calls": {"cudnn": calls["cudnn"],
                              "generic loop": calls["lstm"] - calls["cudnn"]},
        "ensemble_members": config.model.ensemble, "layers": config.model.layers,
        "examples": args.examples, "seconds": round(seconds, 1),
        "validation_accuracy": result.metrics.get("validation", {}).get("accuracy"),
    }
    print(json.dumps(report))
    return 0 if calls["lstm"] and calls["cudnn"] == calls["lstm"] else 1


if __name__ == "__main__":
    sys.exit(main())
