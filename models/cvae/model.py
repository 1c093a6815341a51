r"""Conditional variational autoencoder for binarised digit images (Sohn, Lee & Yan, 2015).

Generative story, for each image n = 1..N with its digit label y_n in {0..C-1} (C = 10 classes,
one-hot e(y_n)), D pixels and K latent dimensions::

    z_n ~ N(0, I_K)                                           (independent of the label)
    x_n | y_n, z_n ~ prod_d Bernoulli(x_nd | sigmoid(f_theta([z_n, e(y_n)])_d))

with f_theta the decoder MLP K + C -> H_L -> ... -> H_1 -> D returning logits. The label is an
input, not a random variable: the model is of p(x | y). The amortised guide sees image and label,

    q_phi(z_n | x_n, y_n) = N(mu_phi([x_n, e(y_n)]), diag(sigma_phi([x_n, e(y_n)])^2)),

and SVI maximises the conditional ELBO

    L(x | y) = E_q[log p_theta(x | y, z)] - KL(q_phi(z | x, y) || N(0, I)) <= log p_theta(x | y),

with Pyro's TraceMeanField_ELBO (the Gaussian KL analytic). The test score is log p(x | y) per
image by importance sampling with the guide as proposal (K particles, :mod:`pyro_zoo.inference.importance`),
a tighter bound than the ELBO, L = IWAE_1 <= IWAE_K <= log p(x | y).

Shapes: inputs ``(x, y)``: ``x`` (N, D) in [0, 1] (binary on the test split), ``y`` (N,) int64;
the latent site ``"z"`` has shape (N, K) (or (P, N, K) under an outer particles plate at dim -2);
the observed site ``"x"`` has batch shape (N,) and event shape (D,).

Data, binarisation and data sets are the VAE's (:mod:`pyro_zoo.models.vae`,
:mod:`pyro_zoo.models.data`): MNIST with a data folder, else the embedded 8x8 digits
(:func:`pyro_zoo.models.cvae.load_data`); training images are binarised afresh every minibatch, the
test split once with a fixed generator.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from pyro_zoo.models.base import Capabilities, DataError, DataSplit, ZooModel
from pyro_zoo.models.cvae.config import CVAEConfig
from pyro_zoo.models.nn import MIN_SCALE, BernoulliPixels, binarized, mlp


class CVAE(ZooModel):
    """Bernoulli-likelihood conditional VAE with MLP encoder and decoder; see the module docstring."""

    capabilities = Capabilities()
    inputs = ("x", "y")

    def __init__(self, config: CVAEConfig | None = None):
        super().__init__()
        config = CVAEConfig() if config is None else config
        self.config = config
        hidden, activation = list(config.hidden), config.activation
        self.data_dim, self.num_classes, self.z_dim = config.data_dim, config.num_classes, config.z_dim
        self.event_shape = (self.data_dim,)
        width = hidden[-1] if hidden else self.data_dim + self.num_classes
        self.encoder = mlp([self.data_dim + self.num_classes, *hidden], activation)
        self.loc_head = nn.Linear(width, self.z_dim)
        self.scale_head = nn.Linear(width, self.z_dim)
        self.decoder = nn.Sequential(
            mlp([self.z_dim + self.num_classes, *reversed(hidden)], activation),
            nn.Linear(hidden[0] if hidden else self.z_dim + self.num_classes, self.data_dim),
        )

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """e(y), shape (N, C), in the parameters' dtype."""
        return F.one_hot(y, self.num_classes).to(self.loc_head.weight.dtype)

    def logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """f_theta([z, e(y)]) for z (..., N, K) and y (N,): pixel logits (..., N, D)."""
        label = self.one_hot(y).expand(*z.shape[:-1], self.num_classes)
        return self.decoder(torch.cat([z, label], -1))

    # p(z) = N(0, I), p(x | y, z) = Bernoulli(logits = f_theta([z, e(y)]))
    def model(self, x: torch.Tensor, y: torch.Tensor):
        prior = dist.Normal(x.new_zeros(self.z_dim), x.new_ones(self.z_dim)).to_event(1)
        with self.data_plate(x):
            z = pyro.sample("z", prior)
            pyro.sample("x", BernoulliPixels(self.logits(z, y)), obs=x)

    # q(z | x, y) = N(mu_phi([x, e(y)]), diag(sigma_phi([x, e(y)])^2))
    def guide(self, x: torch.Tensor, y: torch.Tensor):
        loc, scale = self.posterior_params(x, y)
        with self.data_plate(x):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def posterior_params(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_phi, sigma_phi) of q(z | x, y), each of shape (N, z_dim)."""
        h = self.encoder(torch.cat([x, self.one_hot(y)], -1))
        return self.loc_head(h), F.softplus(self.scale_head(h)) + MIN_SCALE

    def preprocess(self, x: torch.Tensor, y: torch.Tensor):
        """Dynamic binarisation of the images, x_b ~ Bernoulli(x); labels unchanged."""
        return torch.bernoulli(x), y

    def check_data(self, x) -> None:
        super().check_data(x)
        images, labels = x if isinstance(x, tuple) else (x, None)
        if images.min() < 0 or images.max() > 1:
            raise DataError("the CVAE takes pixel values in [0, 1]; rescale the images (e.g. divide by 255)")
        if labels is not None and (labels.dtype != torch.int64 or labels.dim() != 1
                                   or labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataError(f"the CVAE takes labels y as int64 of shape (N,) in 0..{self.num_classes - 1}; "
                            "convert them (e.g. y.long())")

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities sigmoid(f_theta([z, e(y)])), shape (..., N, data_dim)."""
        return torch.sigmoid(self.logits(z, y))

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` binary images x ~ p(x | y), shape (n, data_dim); labels ``y`` (n,) default to
        0, 1, ..., C-1, 0, 1, ... (each class in turn)."""
        if y is None:
            y = torch.arange(n, device=self.device) % self.num_classes
        z = torch.randn(n, self.z_dim, device=self.device)
        return torch.bernoulli(self.decode(z, y))

    @torch.no_grad()
    def metrics(self, data: DataSplit) -> dict:
        """KL(q(z | x, y) || N(0, I)) averaged over (at most 2000) images of ``data``, in nats: the
        information the code carries beyond the label."""
        x = binarized(data.x[:2000].to(self.device))
        q = Normal(*self.posterior_params(x, data.y[:2000].to(self.device)))
        kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
        return {"kl_q_prior": {"value": kl.mean().item(), "se": (kl.std() / math.sqrt(len(kl))).item(),
                               "unit": "nats per image"}}


__all__ = ["CVAE"]
