"""A user's own model, written the way Pyro's tutorials teach, run with no registry edit:

    zoo train tests/user_model_example.py --smoke
    zoo eval tests/user_model_example.py --checkpoint runs/sepal_length/checkpoint.pt

The sepal lengths x_n (cm) of Fisher's iris flowers (scikit-learn's ``load_iris``), as a
normal with unknown mean and spread:

    mu ~ N(5, 2^2),   sigma ~ LogNormal(0, 1),   x_n | mu, sigma ~ N(mu, sigma^2),  n = 1..N.

Both latents are global, so the guide is an AutoGuide over them, and the report compares
its posterior with NUTS's.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal

from pyro_zoo.models import DATA_PLATE, DataSplit
from pyro_zoo.models.program import program_spec


def model(x):
    """Sepal lengths as a normal with unknown mean and spread."""
    mu = pyro.sample("mu", dist.Normal(5.0, 2.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate(DATA_PLATE, len(x)):
        pyro.sample("obs", dist.Normal(mu, sigma), obs=x)


def load_data(split, data_dir=None, data=None, smoke=False):
    """A fixed 80/20 split of the 150 sepal lengths: ``x`` of shape (N,)."""
    from sklearn.datasets import load_iris

    lengths = load_iris().data[:, 0]
    order = np.random.RandomState(0).permutation(len(lengths))
    rows = order[:120] if split == "train" else order[120:]
    return DataSplit(x=torch.tensor(lengths[rows], dtype=torch.float32),
                     source=f"iris sepal lengths, {split} split ({len(rows)} flowers)")


SPEC = program_spec("sepal_length", model, autoguide=AutoNormal, load_data=load_data,
                    train={"steps": 2000, "lr": 0.05}, smoke_train={"steps": 1000})
