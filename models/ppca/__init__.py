"""Probabilistic PCA: its spec (see :mod:`pyro_zoo.models.ppca.model` for the maths)."""

from __future__ import annotations

from pyro_zoo.models.ppca.config import PPCAConfig
from pyro_zoo.models.ppca.data import hparams_for, load_data, synthetic_parameters
from pyro_zoo.models.ppca.figures import figures
from pyro_zoo.models.ppca.model import PPCA, closed_form_ml
from pyro_zoo.models.spec import ModelSpec

SPEC = ModelSpec(
    name="ppca",
    description="Probabilistic PCA (linear-Gaussian factor model), exact log p(x), posterior and ML fit",
    config=PPCAConfig,
    build=PPCA,
    load_data=load_data,
    train={"steps": 3000, "batch_size": None, "lr": 1e-2},
    smoke_train={"steps": 1000},
    objective="Trace_ELBO",
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = ["PPCA", "PPCAConfig", "SPEC", "closed_form_ml", "hparams_for", "load_data", "synthetic_parameters"]
