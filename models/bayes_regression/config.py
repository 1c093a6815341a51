"""Hyperparameters of the Bayesian linear regression (:mod:`pyro_zoo.models.bayes_regression.model`)."""

from __future__ import annotations

from dataclasses import dataclass

from pyro_zoo.models.config import MAX_DIM, Config, hparam


@dataclass(frozen=True)
class BayesRegressionConfig(Config):
    """w ~ N(0, prior_scale^2 I_D), y | x, w ~ N(x . w, noise^2) with D = data_dim."""

    data_dim: int = hparam(10, low=1, high=MAX_DIM, help="features D per data point (set from the data)")
    prior_scale: float = hparam(1.0, low=1e-6, high=1e6, help="prior standard deviation tau of each weight")
    noise: float = hparam(0.7, low=1e-6, high=1e6,
                          help="known noise standard deviation sigma of the response")
