"""Toy models for testing shared machinery: a conjugate z ~ N(0, 1), x | z ~ N(z, 1); a model whose
loss diverges; a DLGM whose posterior is far narrower than its prior."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_zoo.models import ZooModel
from pyro_zoo.models.dlgm import DLGM, DLGMConfig


class NormalNormal(ZooModel):
    """p(x) = N(x; 0, 2); the exact posterior is N(x/2, 1/2)."""

    event_shape = ()

    def __init__(self):
        super().__init__()
        self.guide_scale = nn.Parameter(torch.tensor(1.0))
        self.guide_slope = nn.Parameter(torch.tensor(0.0))

    def model(self, x, num_data=None):
        with self.data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x, num_data=None):
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(self.guide_slope * x, self.guide_scale.abs() + 1e-3))

    def sample(self, n):
        return torch.randn(n, device=self.device) * math.sqrt(2)

    def exact_log_prob(self, x):
        return dist.Normal(x.new_zeros(()), math.sqrt(2)).log_prob(x)


class Diverging(ZooModel):
    """log p = log(w) − 10 w per data point: Adam with a large step drives w < 0 and the loss to NaN."""

    event_shape = ()

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def model(self, x, num_data=None):
        with self.data_plate(x, num_data):
            pyro.factor("f", torch.log(self.w) - 10 * self.w + 0 * x)

    def guide(self, x, num_data=None):
        pass


def sharp_dlgm(data_dim: int, generator: torch.Generator) -> DLGM:
    """A seed-decoder DLGM whose many steep sigmoids make p(z | x) far narrower than the prior
    (importance sampling from the prior fails on it; notebook 7)."""
    model = DLGM(DLGMConfig(data_dim=data_dim, latent_dim=1, decoder="seed")).eval()
    with torch.no_grad():
        model.A.copy_(8 * torch.randn(data_dim, 1, generator=generator))
        model.B.copy_(2 * torch.randn(data_dim, 1, generator=generator))
        model.c.copy_(torch.randn(data_dim, generator=generator))
        model.d.copy_(torch.full((data_dim,), -2.0))
    return model
