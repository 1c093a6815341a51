"""The hidden Markov model of the zoo: its spec (see :mod:`pyro_zoo.models.hmm.model` for the maths)."""

from __future__ import annotations

from pyro_zoo.models.hmm.config import HMMConfig
from pyro_zoo.models.hmm.data import hparams_for, load_data
from pyro_zoo.models.hmm.figures import figures
from pyro_zoo.models.hmm.model import HMM, backward, forward, objective, posterior_marginals, viterbi
from pyro_zoo.models.spec import ModelSpec

SPEC = ModelSpec(
    name="hmm",
    description="Hidden Markov model: K enumerated states (pyro.markov, TraceEnum_ELBO), Dirichlet/Normal "
                "priors, AutoGuide over the globals; exact log p(x | theta) by the forward algorithm",
    config=HMMConfig,
    build=HMM,
    load_data=load_data,
    train={"steps": 1000, "lr": 0.02},
    smoke_train={"steps": 200, "lr": 0.05},
    objective=objective,
    hparams_for=hparams_for,
    figures=figures,
)

__all__ = ["HMM", "HMMConfig", "SPEC", "backward", "forward", "hparams_for", "load_data", "objective",
           "posterior_marginals", "viterbi"]
