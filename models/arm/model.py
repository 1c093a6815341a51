r"""Neural autoregressive model of images: the chain rule with a masked network (MADE).

Generative story, for each image n = 1..N with D pixels in row-major order (no latent variables,
no conditional independences assumed):

    p(x_n) = prod_{d=1..D} p(x_nd | x_n,<d),
    p(x_nd | x_n,<d) = Categorical(x_nd | softmax(f_theta(x_n)_d))      (grey levels 0..L-1), or
                     = Bernoulli(x_nd | sigmoid(f_theta(x_n)_d))          (binarised images),

where f_theta is a masked MLP (MADE; Germain, Gregor, Murray & Larochelle, 2015, "MADE: Masked
Autoencoder for Distribution Estimation"), Pyro's :class:`pyro.nn.AutoRegressiveNN` with the
identity ordering: its masks cut every path from an input x_e with e >= d to the output d, so
the d-th output depends on x_<d only, and one pass over x gives all D conditionals (their
logits in R^L, or one logit). The course contrasts it with a Bayesian network: the same chain
rule, but every conditional sees all previous pixels.

log p(x) is exact: the sum of the D conditionals' log-probabilities (:meth:`ARM.exact_log_prob`).
As a Pyro program the model has no latent sites and the guide is empty, so Pyro's Trace_ELBO is
-log p(x) itself and SVI is maximum likelihood by stochastic gradients; importance sampling over
an empty guide returns log p(x) with no error. Sampling is ancestral, one pass per pixel
(:meth:`ARM.sample`: D network passes).

Network input: the pixels on the [0, 1] scale (x / (L - 1) for grey levels). Shapes: data ``x``
(N, D); the observed site ``"x"`` has batch shape (N,) and event shape (D,). Data: Tomczak's
digits protocol (``--data digits17``, grey levels 0..16, the categorical likelihood) by
default, binarised MNIST given a data folder (the Bernoulli likelihood, dynamic binarisation of
the training images, the test images binarised once); :func:`pyro_zoo.models.arm.hparams_for` sets
``data_dim``, ``likelihood`` and ``levels`` from the data.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro.nn import AutoRegressiveNN

from pyro_zoo.models.arm.config import ARMConfig
from pyro_zoo.models.base import Capabilities, DataSplit, ZooModel
from pyro_zoo.models.nn import ACTIVATIONS, Pixels, binarized


class ARM(ZooModel):
    """MADE autoregressive model with a categorical or Bernoulli likelihood; see the module docstring."""

    capabilities = Capabilities(exact_log_prob=True)

    def __init__(self, config: ARMConfig | None = None):
        super().__init__()
        config = ARMConfig() if config is None else config
        self.config = config
        self.data_dim = config.data_dim
        self.event_shape = (self.data_dim,)
        self.pixels = Pixels(config.likelihood, config.levels)
        self.made = AutoRegressiveNN(
            self.data_dim, list(config.hidden),
            param_dims=[config.levels if self.pixels.categorical else 1],
            permutation=torch.arange(self.data_dim),
            skip_connections=config.skip_connections,
            nonlinearity=ACTIVATIONS[config.activation](),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the D conditionals p(x_d | x_<d): shape (..., D), or (..., D, L) for grey levels."""
        out = self.made(self.pixels.scaled(x))
        return out.transpose(-1, -2) if self.pixels.categorical else out

    # p(x) = prod_d p(x_d | x_<d), one observed site; no latent variables
    def model(self, x: torch.Tensor, num_data: int | None = None):
        with self.data_plate(x, num_data):
            pyro.sample("x", self.pixels.distribution(self.logits(x)), obs=x)

    # nothing to infer: the guide is empty, and the ELBO is log p(x)
    def guide(self, x: torch.Tensor, num_data: int | None = None):
        pass

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Dynamic binarisation for the Bernoulli likelihood; grey levels as given."""
        return self.pixels.preprocess(x)

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        self.pixels.check(x, "ARM")

    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = sum_d log p(x_d | x_<d) per image, shape (N,)."""
        return self.pixels.distribution(self.logits(x)).log_prob(x)

    def conditionals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[x_d | x_<d] on the [0, 1] scale, -log p(x_d | x_<d)) for every pixel, each (N, D)."""
        logits = self.logits(x)
        return self.pixels.mean(logits), -self.pixels.pixel_log_prob(logits, x)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` ancestral draws, shape (n, D): pixel d drawn from p(x_d | x_<d), d = 1..D in turn."""
        x = torch.zeros(n, self.data_dim, device=self.device)
        for d in range(self.data_dim):
            x[:, d] = self.pixels.sample(self.logits(x))[:, d]
        return x

    @torch.no_grad()
    def metrics(self, data: DataSplit) -> dict:
        """The exact test log p(x): mean over images and its standard error over images."""
        x = data.x.to(self.device)
        x = x if self.pixels.categorical else binarized(x)
        log_px = torch.cat([self.exact_log_prob(part) for part in x.split(2000)])
        se = (log_px.std() / math.sqrt(len(log_px))).item() if len(log_px) > 1 else None
        return {"log_px_exact": {"value": log_px.mean().item(), "se": se, "unit": "nats per image",
                                 "estimator": "exact (chain rule)"}}


__all__ = ["ARM"]
