"""Hyperparameters of the neural autoregressive model (:mod:`pyro_zoo.models.arm.model`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro_zoo.models.config import MAX_DIM, MAX_LAYERS, MAX_UNITS, Config, hparam
from pyro_zoo.models.nn import ACTIVATIONS, LIKELIHOODS


@dataclass(frozen=True)
class ARMConfig(Config):
    """A MADE network D -> hidden -> D x (L or 1) with the pixels in row-major order."""

    data_dim: int = hparam(64, low=2, high=MAX_DIM, help="pixels per image (set from the data)")
    hidden: tuple[int, ...] = hparam((1024,), low="data_dim", high=MAX_UNITS, max_len=MAX_LAYERS,
                                     help="hidden layer widths of the masked network (each >= data_dim)")
    activation: str = hparam("relu", choices=tuple(ACTIVATIONS), help="nonlinearity after each hidden layer")
    skip_connections: bool = hparam(True, help="masked direct connections from the inputs to the outputs")
    likelihood: str = hparam("categorical", choices=LIKELIHOODS,
                             help="pixel likelihood: categorical over grey levels, or Bernoulli "
                                  "(set from the data)")
    levels: int = hparam(17, low=2, high=256,
                         help="grey levels L of the categorical likelihood (set from the data)")

    SMOKE: ClassVar[dict] = {"hidden": (64,)}
