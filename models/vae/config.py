"""Hyperparameters of the VAE (:mod:`pyro_zoo.models.vae.model`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro_zoo.models.config import MAX_DIM, MAX_LAYERS, MAX_UNITS, Config, hparam
from pyro_zoo.models.nn import ACTIVATIONS, LIKELIHOODS


@dataclass(frozen=True)
class VAEConfig(Config):
    """Encoder D -> hidden -> (mu, sigma) of size z_dim; decoder z_dim -> reversed(hidden) -> D."""

    data_dim: int = hparam(784, low=1, high=MAX_DIM, help="pixels per image (set from the data)")
    hidden: tuple[int, ...] = hparam((400,), low=1, high=MAX_UNITS, max_len=MAX_LAYERS,
                                     help="hidden layer widths of the encoder (the decoder mirrors them)")
    z_dim: int = hparam(50, low=1, high=MAX_UNITS, help="latent dimensions K")
    activation: str = hparam("softplus", choices=tuple(ACTIVATIONS), help="nonlinearity after each layer")
    train_samples: int = hparam(1, low=1, high=10_000,
                                help="k > 1 trains the IWAE bound L_k (RenyiELBO, alpha = 0)")
    likelihood: str = hparam("bernoulli", choices=LIKELIHOODS,
                             help="pixel likelihood: Bernoulli of binarised images, or categorical over "
                                  "whole grey levels (set from the data)")
    levels: int = hparam(17, low=2, high=256,
                         help="grey levels L of the categorical likelihood (set from the data)")

    SMOKE: ClassVar[dict] = {"data_dim": 64, "hidden": (256,), "z_dim": 8}
