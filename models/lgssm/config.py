"""Hyperparameters of the linear-Gaussian state space model (:mod:`pyro_zoo.models.lgssm.model`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro_zoo.models.config import Config, hparam

#: the largest latent and observed dimensions (the Kalman filter inverts (D, D) and holds (d, d) matrices)
MAX_STATE_DIM = 256
#: the longest sequence a config may name; whether it fits memory is checked on the data
MAX_LENGTH = 10**7


@dataclass(frozen=True)
class LGSSMConfig(Config):
    """x_t in R^d, y_t in R^D, diagonal noise covariances, a filtering guide."""

    state_dim: int = hparam(2, low=1, high=MAX_STATE_DIM, help="latent dimensions d (1 for the Nile data)")
    obs_dim: int = hparam(1, low=1, high=MAX_STATE_DIM, help="observed dimensions D (set from the data)")
    length: int = hparam(100, low=1, high=MAX_LENGTH, help="steps T per sequence (set from the data)")

    SMOKE: ClassVar[dict] = {"length": 20}
