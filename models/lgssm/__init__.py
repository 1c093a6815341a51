"""The linear-Gaussian state space model of the zoo: its spec (see :mod:`pyro_zoo.models.lgssm.model`)."""

from __future__ import annotations

from pyro_zoo.models.lgssm.config import LGSSMConfig
from pyro_zoo.models.lgssm.data import hparams_for, load_data
from pyro_zoo.models.lgssm.figures import figures
from pyro_zoo.models.lgssm.model import LGSSM, kalman_filter, rts_smoother
from pyro_zoo.models.spec import ModelSpec

SPEC = ModelSpec(
    name="lgssm",
    description="Linear-Gaussian state space model (pyro.markov), filtering guide over the T x d states; "
                "exact log p(y) and posterior by the Kalman filter and RTS smoother",
    config=LGSSMConfig,
    build=LGSSM,
    load_data=load_data,
    train={"steps": 2000, "lr": 0.01},
    smoke_train={"steps": 300, "lr": 0.02},
    objective={"name": "Trace_ELBO"},
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = ["LGSSM", "LGSSMConfig", "SPEC", "hparams_for", "kalman_filter", "load_data", "rts_smoother"]
