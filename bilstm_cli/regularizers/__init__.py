"""Training tricks that change what a batch teaches the model, one module each, chosen by config.

Each is a `Regularizer` (base.py): a keras.Model over the layers of the model to train (the same
weights) whose `train_step` adds the trick through Keras' public API for custom steps. Validation,
prediction and what is saved are the plain model's. `trainer` gives the model to fit.

- training.adversarial: EPSILON (adversarial.py): every batch again, its embeddings pushed
  EPSILON toward a higher loss (Miyato et al., 2017).
- training.consistency: WEIGHT (rdrop.py): R-Drop, two dropout passes per text taught to agree
  (Liang et al., 2021).
"""

from __future__ import annotations

from typing import Any

from bilstm_cli.architecture import Architecture
from bilstm_cli.config import TrainingConfig
from bilstm_cli.regularizers.adversarial import AdversarialTraining
from bilstm_cli.regularizers.rdrop import RDrop

REGULARIZERS = {"adversarial": AdversarialTraining, "consistency": RDrop}


def trainer(model: Any, arch: Architecture, training: TrainingConfig) -> Any:
    """The model to fit: a regularizer around `model` when the config sets one (at most one:
    config.py checks), else `model` itself."""
    for key, regularizer in REGULARIZERS.items():
        strength = getattr(training, key)
        if strength:
            return regularizer.around(model, arch, strength)
    return model
