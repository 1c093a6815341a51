"""Hyperparameters of the student network (:mod:`pyro_zoo.models.student.model`)."""

from __future__ import annotations

from dataclasses import dataclass

from pyro_zoo.models.config import Config, hparam


@dataclass(frozen=True)
class StudentConfig(Config):
    """Dirichlet(prior_concentration) priors on every CPD row; the guide's starting rows."""

    prior_concentration: float = hparam(1.0, low=1e-3, high=1e9,
                                        help="alpha0 of the Dirichlet(alpha0 1) prior on every CPD row")
    init: str = hparam("uniform", choices=("truth", "uniform", "random"),
                       help="starting guide means: the textbook tables, uniform rows, or Dirichlet(1) draws")
    init_concentration: float = hparam(1000.0, low=1e-3, high=1e9,
                                       help="starting concentration sum of every guide row")
