"""Hyperparameters of the conditional VAE (:mod:`pyro_zoo.models.cvae.model`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro_zoo.models.config import MAX_DIM, MAX_LAYERS, MAX_UNITS, Config, hparam
from pyro_zoo.models.nn import ACTIVATIONS


@dataclass(frozen=True)
class CVAEConfig(Config):
    """Encoder D + C -> hidden -> (mu, sigma) of size z_dim; decoder z_dim + C -> reversed(hidden) -> D."""

    data_dim: int = hparam(784, low=1, high=MAX_DIM, help="pixels per image (set from the data)")
    num_classes: int = hparam(10, low=1, high=MAX_UNITS, help="label classes C (labels 0..C-1, one-hot)")
    hidden: tuple[int, ...] = hparam((400,), low=1, high=MAX_UNITS, max_len=MAX_LAYERS,
                                     help="hidden layer widths of the encoder (the decoder mirrors them)")
    z_dim: int = hparam(20, low=1, high=MAX_UNITS, help="latent dimensions K")
    activation: str = hparam("softplus", choices=tuple(ACTIVATIONS), help="nonlinearity after each layer")

    SMOKE: ClassVar[dict] = {"data_dim": 64, "hidden": (256,), "z_dim": 8}
