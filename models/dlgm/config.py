"""Hyperparameters of the deep latent Gaussian model (:mod:`pyro_zoo.models.dlgm.model`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro_zoo.models.config import MAX_DIM, MAX_UNITS, Config, hparam


@dataclass(frozen=True)
class DLGMConfig(Config):
    """z ~ N(0, I_d), x | z ~ N(mu(z), Sigma(z)) in R^D; guide D -> guide_hidden -> (m, s)."""

    data_dim: int = hparam(2, low=1, high=MAX_DIM, help="coordinates per data point D (set from the data)")
    latent_dim: int = hparam(1, low=1, high=2,
                             help="latent dimensions d (at most 2: log p(x) by quadrature over z)")
    decoder: str = hparam("seed", choices=("seed", "mlp"),
                          help="seed: the slides' sigmoid/exp decoder; mlp: one tanh hidden layer")
    guide_hidden: int = hparam(32, low=1, high=MAX_UNITS, help="hidden units of the guide's tanh layer")
    decoder_hidden: int = hparam(32, low=1, high=MAX_UNITS,
                                 help="hidden units of the mlp decoder's tanh layer")

    SMOKE: ClassVar[dict] = {"guide_hidden": 16}
