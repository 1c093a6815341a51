"""Hyperparameters of probabilistic PCA (:mod:`pyro_zoo.models.ppca.model`)."""

from __future__ import annotations

from dataclasses import dataclass

from pyro_zoo.models.config import MAX_DIM, MAX_UNITS, Config, hparam


@dataclass(frozen=True)
class PPCAConfig(Config):
    """x = W z + mu + sigma eps with W (data_dim, latent_dim); the guide amortized or exact."""

    data_dim: int = hparam(64, low=1, high=MAX_DIM, help="coordinates per data point D (set from the data)")
    latent_dim: int = hparam(10, low=1, high="data_dim", help="latent dimensions q")
    guide: str = hparam("amortized", choices=("amortized", "exact"),
                        help="amortized: q(z | x) = N(f(x), L L^T); exact: q(z | x) = p(z | x)")
    guide_hidden: int = hparam(0, low=0, high=MAX_UNITS,
                               help="tanh hidden units of the amortized guide's mean (0: linear)")
