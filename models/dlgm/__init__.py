"""The deep latent Gaussian model of the slides: its spec (see :mod:`models.dlgm.model` for the maths)."""

from __future__ import annotations

from models.dlgm.config import DLGMConfig
from models.dlgm.data import hparams_for, load_data
from models.dlgm.figures import figures
from models.dlgm.model import DLGM, TRUE_A, TRUE_B, TRUE_C, TRUE_D, true_model
from models.spec import ModelSpec

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
