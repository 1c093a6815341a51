r"""A VAE with two stochastic layers, x <- z1 <- z2 (Burda, Grosse & Salakhutdinov, 2016).

Generative story, for each image n = 1..N (D pixels; K1 = ``z1_dim``, K2 = ``z2_dim``)::

    z2_n ~ N(0, I_K2)
    z1_n | z2_n ~ N(mu_theta(z2_n), diag(sigma_theta(z2_n)^2))
    x_n | z1_n ~ prod_d Bernoulli(x_nd | sigmoid(f_theta(z1_n)_d))               (binarised images), or
    x_n | z1_n ~ prod_d Categorical(x_nd | softmax(f_theta(z1_n)_d))            (grey levels 0..L-1)

with MLPs z2 -> ``reversed(hidden2)`` -> (mu, sigma) and z1 -> ``reversed(hidden1)`` -> logits
(D, or D x L). The guide runs the other way, bottom-up, as in Burda et al.'s two-layer models:

    q(z1, z2 | x) = N(z1; m_phi(x), diag(s_phi(x)^2)) N(z2; m'_phi(z1), diag(s'_phi(z1)^2)),

MLPs x -> ``hidden1`` -> (m, s) and z1 -> ``hidden2`` -> (m', s'), scales softplus(.) + 1e-4.
Burda et al.'s sizes are the defaults: deterministic layers of 200, 200 units between x and z1
and 100, 100 between z1 and z2, stochastic layers of 100 and 50 units, tanh.

Both latents are local (inside the data plate), so importance sampling and AIS over
``model``/``guide`` estimate log p(x) per image as for the VAE. Training: the ELBO, as Pyro's
Trace_ELBO (not TraceMeanField_ELBO: the guide's z2 depends on z1, so an analytic KL term for z1
given a z2 drawn from q(z2 | z1) would be biased), or with ``train_samples`` k > 1 the IWAE bound

    L_k(x) = E[log (1/k) sum_i p(x, z1_i, z2_i) / q(z1_i, z2_i | x)]  <=  log p(x),

Pyro's RenyiELBO at alpha = 0 with k vectorised particles. :meth:`HVAE.log_weights` computes the
same weights in torch, reparametrised; :meth:`HVAE.elbo_loss` is the opt-in fast path built on it.

Shapes: data ``x`` (N, D); sites ``"z2"`` (N, K2) and ``"z1"`` (N, K1), or (P, N, .) under a
particle plate; the observed site ``"x"`` has batch shape (N,) and event shape (D,). Data and
likelihood as for the VAE (:mod:`pyro_zoo.models.vae.model`): binarised MNIST with a data folder (dynamic
binarisation), Tomczak's digits (``--data digits17``, 17-way categorical) by default.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from pyro_zoo.models.base import Capabilities, DataSplit, ZooModel
from pyro_zoo.models.hvae.config import HVAEConfig
from pyro_zoo.models.nn import MIN_SCALE, Pixels, binarized, mlp


class GaussianMLP(nn.Module):
    """``(loc, scale)`` of a diagonal Gaussian from an MLP: sizes[0] -> sizes[1:] -> 2 heads of ``out``."""

    def __init__(self, sizes: list[int], out: int, activation: str):
        super().__init__()
        self.body = mlp(sizes, activation)
        self.loc = nn.Linear(sizes[-1], out)
        self.scale = nn.Linear(sizes[-1], out)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(inputs)
        return self.loc(h), F.softplus(self.scale(h)) + MIN_SCALE


class HVAE(ZooModel):
    """Two-stochastic-layer VAE; see the module docstring."""

    capabilities = Capabilities(closed_form_loss=True)

    def __init__(self, config: HVAEConfig | None = None):
        super().__init__()
        config = HVAEConfig() if config is None else config
        self.config = config
        self.data_dim, self.z1_dim, self.z2_dim = config.data_dim, config.z1_dim, config.z2_dim
        self.event_shape = (self.data_dim,)
        self.pixels = Pixels(config.likelihood, config.levels)
        hidden1, hidden2, act = list(config.hidden1), list(config.hidden2), config.activation
        self.encoder1 = GaussianMLP([self.data_dim, *hidden1], self.z1_dim, act)
        self.encoder2 = GaussianMLP([self.z1_dim, *hidden2], self.z2_dim, act)
        self.prior1 = GaussianMLP([self.z2_dim, *reversed(hidden2)], self.z1_dim, act)
        top_down = [self.z1_dim, *reversed(hidden1)]
        outputs = self.pixels.outputs(self.data_dim)
        self.decoder = nn.Sequential(mlp(top_down, act), nn.Linear(top_down[-1], outputs))

    # p(z2) = N(0, I), p(z1 | z2) = N(mu(z2), sigma(z2)^2), p(x | z1) = pixels(f(z1))
    def model(self, x: torch.Tensor, num_data: int | None = None):
        prior2 = dist.Normal(x.new_zeros(self.z2_dim), x.new_ones(self.z2_dim)).to_event(1)
        with self.data_plate(x, num_data):
            z2 = pyro.sample("z2", prior2)
            z1 = pyro.sample("z1", dist.Normal(*self.prior1(z2)).to_event(1))
            pyro.sample("x", self.pixels.distribution(self.pixels.logits(self.decoder(z1))), obs=x)

    # q(z1 | x) q(z2 | z1), bottom-up
    def guide(self, x: torch.Tensor, num_data: int | None = None):
        with self.data_plate(x, num_data):
            z1 = pyro.sample("z1", dist.Normal(*self.encoder1(self.pixels.scaled(x))).to_event(1))
            pyro.sample("z2", dist.Normal(*self.encoder2(z1)).to_event(1))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Dynamic binarisation for the Bernoulli likelihood; grey levels as given."""
        return self.pixels.preprocess(x)

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        self.pixels.check(x, "HVAE")

    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x, z1, z2) - log q(z1, z2 | x) for k reparametrised draws per image, shape (k, N)."""
        q1 = Normal(*self.encoder1(self.pixels.scaled(x)))
        z1 = q1.rsample((k,))
        q2 = Normal(*self.encoder2(z1))
        z2 = q2.rsample()
        log_prior = Normal(0.0, 1.0).log_prob(z2).sum(-1) + Normal(*self.prior1(z2)).log_prob(z1).sum(-1)
        log_lik = self.pixels.distribution(self.pixels.logits(self.decoder(z1))).log_prob(x)
        return log_prior + log_lik - q1.log_prob(z1).sum(-1) - q2.log_prob(z2).sum(-1)

    def elbo_loss(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """-ELBO (k = 1) or -L_k of the batch, summed and scaled by ``num_data / len(x)``."""
        k = self.config.train_samples
        bound = self.log_weights(x, k).logsumexp(0) - math.log(k)
        return -bound.sum() * self.batch_scale(x, num_data)

    def decode(self, z1: torch.Tensor) -> torch.Tensor:
        """Pixel means E[x | z1] on the [0, 1] scale, shape (..., data_dim)."""
        return self.pixels.mean(self.pixels.logits(self.decoder(z1)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel means decoded from E_q[z1 | x], shape (N, data_dim)."""
        return self.decode(self.encoder1(self.pixels.scaled(x))[0])

    @torch.no_grad()
    def sample_latents(self, n: int) -> torch.Tensor:
        """``n`` ancestral draws of z1 (through z2 ~ N(0, I)), shape (n, z1_dim)."""
        z2 = torch.randn(n, self.z2_dim, device=self.device)
        return Normal(*self.prior1(z2)).sample()

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` ancestral draws x ~ p(x), shape (n, data_dim): binary images, or grey levels 0..L-1."""
        return self.pixels.sample(self.pixels.logits(self.decoder(self.sample_latents(n))))

    @torch.no_grad()
    def metrics(self, data: DataSplit, chunk: int = 2000) -> dict:
        """Test -ELBO (one draw of (z1, z2) per image, torch) and the active units of z1 (Burda et
        al.: Cov_x(E_q[z1_i | x]) > 0.01) on ``data`` (binarised once for the Bernoulli likelihood)."""
        x = data.x.to(self.device)
        x = x if self.pixels.categorical else binarized(x)
        values = -torch.cat([self.log_weights(part, 1)[0] for part in x.split(chunk)])
        means = torch.cat([self.encoder1(self.pixels.scaled(part))[0] for part in x.split(chunk)])
        se = (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else None
        return {
            "neg_elbo": {"value": values.mean().item(), "se": se, "unit": "nats per image",
                         "estimator": "1 draw of (z1, z2) per image"},
            "active_units_z1": {"value": int((means.var(0, unbiased=False) > 0.01).sum()), "of": self.z1_dim,
                                "threshold": 0.01, "criterion": "Cov_x(E_q[z1_i]) > threshold"},
        }


def objective(config: HVAEConfig) -> dict:
    """Trace_ELBO, or with ``train_samples`` k > 1 the IWAE bound (RenyiELBO, alpha = 0, k particles)."""
    k = config.train_samples
    if k > 1:
        return {"name": "RenyiELBO", "num_particles": k, "options": {"alpha": 0.0}}
    return {"name": "Trace_ELBO"}


__all__ = ["GaussianMLP", "HVAE", "objective"]
