"""Hyperparameters of the two-stochastic-layer VAE (:mod:`pyro_zoo.models.hvae.model`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro_zoo.models.config import MAX_DIM, MAX_LAYERS, MAX_UNITS, Config, hparam
from pyro_zoo.models.nn import ACTIVATIONS, LIKELIHOODS


@dataclass(frozen=True)
class HVAEConfig(Config):
    """Burda et al.'s (2016) two-layer model by default: x -(200, 200)- z1 (100) -(100, 100)- z2 (50)."""

    data_dim: int = hparam(784, low=1, high=MAX_DIM, help="pixels per image (set from the data)")
    hidden1: tuple[int, ...] = hparam((200, 200), low=1, high=MAX_UNITS, max_len=MAX_LAYERS,
                                      help="deterministic layers between x and z1 (the decoder mirrors them)")
    z1_dim: int = hparam(100, low=1, high=MAX_UNITS, help="units of the first stochastic layer z1")
    hidden2: tuple[int, ...] = hparam((100, 100), low=1, high=MAX_UNITS, max_len=MAX_LAYERS,
                                      help="deterministic layers between z1 and z2 (both directions)")
    z2_dim: int = hparam(50, low=1, high=MAX_UNITS, help="units of the second (top) stochastic layer z2")
    activation: str = hparam("tanh", choices=tuple(ACTIVATIONS), help="nonlinearity after each hidden layer")
    train_samples: int = hparam(1, low=1, high=10_000,
                                help="k > 1 trains the IWAE bound L_k (RenyiELBO, alpha = 0)")
    likelihood: str = hparam("bernoulli", choices=LIKELIHOODS,
                             help="pixel likelihood: Bernoulli of binarised images, or categorical over "
                                  "whole grey levels (set from the data)")
    levels: int = hparam(17, low=2, high=256,
                         help="grey levels L of the categorical likelihood (set from the data)")

    SMOKE: ClassVar[dict] = {"data_dim": 64, "hidden1": (64,), "z1_dim": 8, "hidden2": (32,), "z2_dim": 4}
