"""Hyperparameters of the hidden Markov model (:mod:`pyro_zoo.models.hmm.model`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro_zoo.models.config import Config, hparam

#: the most hidden states and emission symbols (the forward pass holds (N, K, K) tensors per step)
MAX_STATES = 64
MAX_SYMBOLS = 10_000
#: the longest sequence a config may name; whether it fits memory is checked on the data
MAX_LENGTH = 10**7
#: the AutoGuides the global latents can take
GUIDES = ("delta", "normal", "mvn")


@dataclass(frozen=True)
class HMMConfig(Config):
    """K hidden states, Gaussian or categorical emissions, Dirichlet/Normal/LogNormal priors."""

    num_states: int = hparam(2, low=2, high=MAX_STATES, help="hidden states K")
    emission: str = hparam("gaussian", choices=("gaussian", "categorical"),
                           help="x_t | z_t: Normal(loc_z, scale_z) or Categorical(probs_z) (from the data)")
    num_symbols: int = hparam(4, low=2, high=MAX_SYMBOLS,
                              help="symbols V of categorical emissions (set from the data)")
    length: int = hparam(100, low=1, high=MAX_LENGTH, help="steps T per sequence (set from the data)")
    concentration: float = hparam(1.0, low=0.01, high=1000.0,
                                  help="Dirichlet concentration of initial, transition, emission probs")
    guide: str = hparam("mvn", choices=GUIDES,
                        help="AutoGuide of theta: AutoDelta (MAP), AutoNormal, AutoMultivariateNormal")

    SMOKE: ClassVar[dict] = {"length": 30}
