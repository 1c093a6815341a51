"""The Gaussian mixture of the zoo: its spec (see :mod:`pyro_zoo.models.mixture.model` for the maths and
:mod:`pyro_zoo.models.mixture.data` for the data sets)."""

from __future__ import annotations

from pyro_zoo.models.mixture.config import MixtureConfig
from pyro_zoo.models.mixture.data import CATS, DATASETS, SYNTHETIC2D, hparams_for, load_data, true_parameters
from pyro_zoo.models.mixture.figures import figures
from pyro_zoo.models.mixture.model import KMEANS_POINTS, MIN_SCALE, GaussianComponents, MixtureModel
from pyro_zoo.models.spec import ModelSpec

SPEC = ModelSpec(
    name="mixture",
    description="Gaussian mixture (seed's cat weights), assignments enumerated, fit by SVI",
    config=MixtureConfig,
    build=MixtureModel,
    load_data=load_data,
    train={"steps": 500, "batch_size": None, "lr": 0.01},
    smoke_train={"steps": 50},
    objective={"name": "TraceEnum_ELBO"},
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = [
    "CATS", "DATASETS", "GaussianComponents", "KMEANS_POINTS", "MIN_SCALE", "MixtureConfig",
    "MixtureModel", "SPEC", "SYNTHETIC2D", "hparams_for", "load_data", "true_parameters",
]
