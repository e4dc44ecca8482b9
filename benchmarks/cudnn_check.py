"""On a GPU: does `bilstm train --bidirectional` (the shipped default config) run cuDNN's LSTM?

    BILSTM_DATA_DIR=../shared/data python benchmarks/cudnn_check.py [--examples N] [--config C]

Keras' TensorFlow backend runs an LSTM through cuDNN only when it can (tanh and sigmoid, no
recurrent dropout, no unroll, a mask that is right padding and masks no whole text), and falls
back to its generic step loop without a word otherwise: several times slower on a GPU. This
trains the config (one epoch on its first N training texts, in this process, every ensemble
member) and counts, for every LSTM call Keras traced, which path it took. cuDNN's path also
asserts at run time that each batch's mask is right padding, so a finished epoch shows that
bilstm's batches are right-padded too. Prints one JSON line; exit status 1 if any LSTM call
fell back, 2 if TensorFlow sees no GPU.
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

    from bilstm_cli.backend import keras, tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print("TensorFlow sees no GPU here: nothing to check", file=sys.stderr)
        return 2

    from keras.src import backend as keras_backend

    from bilstm_cli.config import load_config, resolve_config_path
    from bilstm_cli.train import train

    paths = {"cudnn": 0, "generic loop": 0}
    keras_lstm = keras_backend.lstm

    def counting_lstm(*call_args, **call_kwargs):
        """Keras' backend LSTM raises NotImplementedError where cuDNN cannot run it."""
        try:
            result = keras_lstm(*call_args, **call_kwargs)
        except NotImplementedError:
            paths["generic loop"] += 1
            raise
        paths["cudnn"] += 1
        return result

    keras_backend.lstm = counting_lstm
    config = load_config(resolve_config_path(args.config), [
        f"data.max_examples={args.examples}", "data.test=null",
    ], {"model.bidirectional": True, "training.epochs": 1})

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
        "traced_lstm_calls": paths,
        "ensemble_members": config.model.ensemble, "layers": config.model.layers,
        "examples": args.examples, "seconds": round(seconds, 1),
        "validation_accuracy": getattr(result, "validation_accuracy", None),
    }
    print(json.dumps(report))
    return 0 if paths["cudnn"] and not paths["generic loop"] else 1


if __name__ == "__main__":
    sys.exit(main())
