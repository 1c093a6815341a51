"""Hyperparameters of the normalizing flow (:mod:`pyro_zoo.models.flow.model`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro_zoo.models.config import MAX_DIM, MAX_LAYERS, MAX_UNITS, Config, hparam

#: the data a flow takes: whole grey levels (dequantised) or real vectors
FLOW_LIKELIHOODS = ("discrete", "continuous")


@dataclass(frozen=True)
class FlowConfig(Config):
    """RealNVP: ``num_layers`` affine couplings, each with an MLP ``hidden`` and a fixed shuffle."""

    data_dim: int = hparam(64, low=2, high=MAX_DIM, help="dimensions D of a data point (set from the data)")
    likelihood: str = hparam("discrete", choices=FLOW_LIKELIHOODS,
                             help="discrete: whole grey levels 0..levels-1, uniformly dequantised; "
                                  "continuous: a density on R^D")
    levels: int = hparam(17, low=2, high=256, help="grey levels L of discrete data (set from the data)")
    num_layers: int = hparam(8, low=1, high=64, help="affine coupling layers")
    hidden: tuple[int, ...] = hparam((256, 256), low=1, high=MAX_UNITS, max_len=MAX_LAYERS,
                                     help="hidden layer widths of each coupling's network")

    SMOKE: ClassVar[dict] = {"num_layers": 4, "hidden": (64,)}
