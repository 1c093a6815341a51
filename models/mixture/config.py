"""Hyperparameters of the Gaussian mixture (:mod:`pyro_zoo.models.mixture.model`)."""

from __future__ import annotations

from dataclasses import dataclass

from pyro_zoo.models.config import MAX_DIM, NUM_DATA, Config, hparam


@dataclass(frozen=True)
class MixtureConfig(Config):
    """K components in D dimensions, full or diagonal covariances, initialised by EM or k-means."""

    num_components: int = hparam(2, low=1, high=NUM_DATA,
                                 help="mixture components K (set from a synthetic data set)")
    dim: int = hparam(1, low=1, high=MAX_DIM, help="dimensions D of a data point (set from the data)")
    covariance: str = hparam("full", choices=("full", "diag"),
                             help="full Sigma_k = L_k L_k^T, or diagonal Sigma_k = diag(s_k^2)")
    init: str = hparam("em", choices=("em", "kmeans"),
                       help="starting point: scikit-learn's EM fit, or k-means hard clusters")
