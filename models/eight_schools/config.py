"""Hyperparameters of the eight-schools model (:mod:`pyro_zoo.models.eight_schools.model`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro_zoo.models.config import NUM_DATA, Config, hparam

#: the AutoGuides the latents can take
GUIDES = ("normal", "mvn", "iaf")


@dataclass(frozen=True)
class EightSchoolsConfig(Config):
    """Hierarchical normal model: priors, parameterisation and guide."""

    num_schools: int = hparam(8, low=1, high=NUM_DATA, help="schools J (set from the data)")
    parameterisation: str = hparam("centred", choices=("centred", "noncentred"),
                                   help="theta_j ~ N(mu, tau^2), or mu + tau eta_j with eta_j ~ N(0, 1)")
    mu_scale: float = hparam(5.0, low=1e-3, high=1e6, help="prior sd of the grand mean mu")
    tau_scale: float = hparam(5.0, low=1e-3, high=1e6, help="scale of the half-Cauchy prior of tau")
    guide: str = hparam("normal", choices=GUIDES,
                        help="AutoNormal (mean-field), AutoMultivariateNormal, AutoIAFNormal (a flow)")

    SMOKE: ClassVar[dict] = {}
