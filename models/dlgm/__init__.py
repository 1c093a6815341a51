"""The deep latent Gaussian model of the slides: its spec (see :mod:`pyro_zoo.models.dlgm.model` for
the maths)."""

from __future__ import annotations

from pyro_zoo.models.dlgm.config import DLGMConfig
from pyro_zoo.models.dlgm.data import hparams_for, load_data
from pyro_zoo.models.dlgm.figures import figures
from pyro_zoo.models.dlgm.model import DLGM, TRUE_A, TRUE_B, TRUE_C, TRUE_D, true_model
from pyro_zoo.models.spec import ModelSpec

SPEC = ModelSpec(
    name="dlgm",
    description="Deep latent Gaussian model of the slides (sigmoid/exp decoder), exact log p(x) by grid",
    config=DLGMConfig,
    build=DLGM,
    load_data=load_data,
    train={"steps": 2000, "batch_size": None, "lr": 1e-2},
    smoke_train={"steps": 300},
    objective="TraceMeanField_ELBO",
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = ["DLGM", "DLGMConfig", "SPEC", "TRUE_A", "TRUE_B", "TRUE_C", "TRUE_D", "hparams_for", "load_data",
           "true_model"]
