"""The Bayesian linear regression of the zoo: its spec (see :mod:`pyro_zoo.models.bayes_regression.model`
for the maths and :mod:`pyro_zoo.models.bayes_regression.data` for the diabetes data)."""

from __future__ import annotations

from pyro_zoo.models.bayes_regression.config import BayesRegressionConfig
from pyro_zoo.models.bayes_regression.data import hparams_for, load_data
from pyro_zoo.models.bayes_regression.model import BayesRegression
from pyro_zoo.models.spec import ModelSpec

SPEC = ModelSpec(
    name="bayes_regression",
    description="Bayesian linear regression (conjugate, sigma known) on the diabetes data; "
                "AutoMultivariateNormal vs NUTS vs exact",
    config=BayesRegressionConfig,
    build=BayesRegression,
    load_data=load_data,
    train={"steps": 4000, "lr": 0.005},
    smoke_train={"steps": 500, "lr": 0.02},
    objective={"name": "Trace_ELBO", "num_particles": 32},
    hparams_for=hparams_for,
)

__all__ = ["SPEC", "BayesRegression", "BayesRegressionConfig", "hparams_for", "load_data"]
