r"""Variational autoencoder for images (Kingma & Welling, 2014; Rezende et al., 2014).

Generative story, for each image n = 1..N (D pixels, K latent dimensions)::

    z_n ~ N(0, I_K)
    x_n | z_n ~ prod_d Bernoulli(x_nd | sigmoid(f_theta(z_n)_d))                 (binarised images), or
    x_n | z_n ~ prod_d Categorical(x_nd | softmax(f_theta(z_n)_d))              (grey levels 0..L-1)

where f_theta is the decoder MLP K -> H_L -> ... -> H_1 -> D (Bernoulli: one logit per pixel) or
-> D x L (``likelihood="categorical"``: L logits per pixel, L = ``levels``). The
amortised guide (inference network) is a diagonal Gaussian,

    q_phi(z_n | x_n) = N(mu_phi(x_n), diag(sigma_phi(x_n)^2)),
    h = g_phi(x_n),  mu_phi = W_mu h + b_mu,  sigma_phi = softplus(W_s h + b_s) + 1e-4,

with g_phi the encoder MLP D -> H_1 -> ... -> H_L (its input the pixels on the [0, 1] scale,
x / (L - 1) for grey levels). SVI maximises the ELBO

    L(x) = E_q[log p_theta(x | z)] - KL(q_phi(z | x) || p(z)) <= log p_theta(x),

computed by :meth:`VAE.elbo_loss` with the KL in closed form (what Pyro's TraceMeanField_ELBO
computes for ``model``/``guide``). With ``train_samples`` k > 1 it maximises instead the
importance-weighted bound of Burda et al. (2016), the IWAE,

    L_k(x) = E[log (1/k) sum_i p_theta(x, z_i) / q_phi(z_i | x)],  z_1..z_k ~ q_phi(z | x) iid,

with L_1 = L <= L_k <= L_{k+1} <= log p_theta(x).

Shapes: data ``x`` (N, D) with D = ``data_dim``; the latent site ``"z"`` has shape (N, K),
or (P, N, K) under an outer ``pyro.plate("particles", P, dim=-2)``; the observed site ``"x"``
has batch shape (N,) (or (P, N)) and event shape (D,).

Data: for the Bernoulli likelihood, training images are grey levels in [0, 1] and
:meth:`VAE.preprocess` binarises every minibatch afresh (dynamic binarisation, x_b ~
Bernoulli(x)); the test split from :func:`load_data` is binarised once with a fixed generator
(seed 0), so every evaluation sees the same binary images. For the categorical likelihood the
data are whole grey levels, used as they are (data set digits17, Tomczak's protocol). Data sets
(see :mod:`pyro_zoo.models.data`): MNIST when a data folder is given (the default shape 784-400-50), else
the embedded 8x8 digits (smoke shape 64-256-8); :func:`hparams_for` sets ``data_dim`` and the
likelihood from the data, so any of them fits any shape.

Posterior collapse is monitored by the KL per latent dimension, KL(q(z_i | x) || N(0, 1))
averaged over x, and by the active units of Burda et al. (2016): dimension i is active when
Cov_x(E_q[z_i]) > 0.01.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from pyro_zoo.models.base import Capabilities, DataSplit, ZooModel
from pyro_zoo.models.nn import MIN_SCALE, Pixels, bernoulli_log_prob, binarized, mlp
from pyro_zoo.models.vae.config import VAEConfig


class VAE(ZooModel):
    """VAE with MLP encoder and decoder, Bernoulli or categorical pixels; see the module docstring."""

    capabilities = Capabilities(closed_form_loss=True, latent_usage=True)

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        config = VAEConfig() if config is None else config
        self.config = config
        hidden, activation = list(config.hidden), config.activation
        self.data_dim, self.z_dim, self.train_samples = config.data_dim, config.z_dim, config.train_samples
        self.event_shape = (self.data_dim,)
        self.pixels = Pixels(config.likelihood, config.levels)
        self.encoder = mlp([self.data_dim, *hidden], activation)
        self.loc_head = nn.Linear(hidden[-1] if hidden else self.data_dim, self.z_dim)
        self.scale_head = nn.Linear(hidden[-1] if hidden else self.data_dim, self.z_dim)
        self.decoder = nn.Sequential(
            mlp([self.z_dim, *reversed(hidden)], activation),
            nn.Linear(hidden[0] if hidden else self.z_dim, self.pixels.outputs(self.data_dim)),
        )

    # p(z) = N(0, I), p(x | z) = Bernoulli(logits = f_theta(z)) or Categorical(logits = f_theta(z))
    def model(self, x: torch.Tensor, num_data: int | None = None):
        prior = dist.Normal(x.new_zeros(self.z_dim), x.new_ones(self.z_dim)).to_event(1)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", prior)
            pyro.sample("x", self.pixels.distribution(self.pixels.logits(self.decoder(z))), obs=x)

    # q(z | x) = N(mu_phi(x), diag(sigma_phi(x)^2))
    def guide(self, x: torch.Tensor, num_data: int | None = None):
        loc, scale = self.posterior_params(x)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Dynamic binarisation, a fresh draw x_b ~ Bernoulli(x) (same shape as ``x``); grey levels
        of the categorical likelihood as given."""
        return self.pixels.preprocess(x)

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        self.pixels.check(x, "VAE")

    def posterior_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_phi(x), sigma_phi(x)), each of shape (N, z_dim)."""
        h = self.encoder(self.pixels.scaled(x))
        return self.loc_head(h), F.softplus(self.scale_head(h)) + MIN_SCALE

    def posterior(self, x: torch.Tensor) -> Normal:
        """q(z | x) as a torch Normal with batch shape (N, z_dim)."""
        return Normal(*self.posterior_params(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means E_q[z | x], shape (N, z_dim)."""
        return self.posterior_params(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel means E[x | z] on the [0, 1] scale, shape (..., data_dim): the Bernoulli
        probabilities sigmoid(f_theta(z)), or the mean grey levels / (L - 1)."""
        return self.pixels.mean(self.pixels.logits(self.decoder(z)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel means decoded from the posterior means, shape (N, data_dim)."""
        return self.decode(self.encode(x))

    def sample(self, n: int) -> torch.Tensor:
        """``n`` ancestral draws x ~ p(x), shape (n, data_dim): binary images, or grey levels 0..L-1.

        For the smoother pixel means use ``decode(torch.randn(n, z_dim))``.
        """
        z = torch.randn(n, self.z_dim, device=self.device)
        if self.pixels.categorical:
            return self.pixels.sample(self.pixels.logits(self.decoder(z)))
        return torch.bernoulli(self.decode(z))

    def log_likelihood(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per image from decoder outputs ``out`` (..., outputs), shape (...,)."""
        if self.pixels.categorical:
            return self.pixels.distribution(self.pixels.logits(out)).log_prob(x)
        return bernoulli_log_prob(out, x)

    def neg_elbo(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """-ELBO per image in nats, shape (N,): -E_q[log p(x|z)] + KL(q(z|x) || p(z)).

        The reconstruction term is a Monte Carlo average over ``num_samples`` reparametrised
        draws z ~ q(z|x); the KL term is the closed form. Computed in torch (not Pyro).
        """
        q = self.posterior(x)
        log_lik = self.log_likelihood(self.decoder(q.rsample((num_samples,))), x)
        return kl_divergence(q, Normal(0.0, 1.0)).sum(-1) - log_lik.mean(0)

    def iwae_bound(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """L_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), per image, shape (N,).

        One Monte Carlo draw of the IWAE bound (Burda et al. 2016, eq. 8), reparametrised.
        """
        q = self.posterior(x)
        z = q.rsample((k,))
        log_prior_ratio = (Normal(0.0, 1.0).log_prob(z) - q.log_prob(z)).sum(-1)
        log_w = self.log_likelihood(self.decoder(z), x) + log_prior_ratio
        return log_w.logsumexp(0) - math.log(k)

    def elbo_loss(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """The training loss on the batch ``x``, summed and scaled by ``num_data / len(x)``: the
        -ELBO with the KL in closed form, or -L_k with ``train_samples`` k > 1 (module docstring)."""
        if self.train_samples > 1:
            return -self.iwae_bound(x, self.train_samples).sum() * self.batch_scale(x, num_data)
        loc, scale = self.posterior_params(x)
        z = loc + scale * torch.randn_like(loc)
        if self.pixels.categorical:
            nll = -self.log_likelihood(self.decoder(z), x).sum()
        else:
            nll = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        # KL(N(mu, sigma^2) || N(0, 1)) = (sigma^2 + mu^2 - 1) / 2 - log sigma, per dimension; written
        # out because torch's Normal objects + kl_divergence cost ~3% of a CPU step (1.06x vs 1.03x
        # of plain PyTorch in benchmarks.vae_step); tests/test_vae.py checks it against Pyro
        kl = 0.5 * (scale.square() + loc.square() - 1).sum() - scale.log().sum()
        return (nll + kl) * self.batch_scale(x, num_data)

    def kl_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z_i | x) || N(0, 1)) averaged over the rows of ``x``, shape (z_dim,), nats."""
        return kl_divergence(self.posterior(x), Normal(0.0, 1.0)).mean(0)

    def unit_activity(self, x: torch.Tensor) -> torch.Tensor:
        """Cov_x(E_q[z_i | x]) for each latent dimension i, shape (z_dim,)."""
        return self.encode(x).var(0, unbiased=False)

    def active_units(self, x: torch.Tensor, threshold: float = 0.01) -> int:
        """Number of latent dimensions with Cov_x(E_q[z_i | x]) > ``threshold`` (Burda et al.)."""
        return int((self.unit_activity(x) > threshold).sum())

    @torch.no_grad()
    def metrics(self, data: DataSplit, chunk: int = 2000) -> dict:
        """Test -ELBO (one z per image, torch), KL per dimension and active units on ``data``.

        Grey images of the Bernoulli likelihood are first binarised once with the fixed generator of
        ``load_data``.
        """
        x = data.x.to(self.device)
        x = x if self.pixels.categorical else binarized(x)
        was_training = self.training
        self.eval()
        values = torch.cat([self.neg_elbo(part) for part in x.split(chunk)])
        kl = torch.stack([self.kl_per_dim(part) * len(part) for part in x.split(chunk)]).sum(0) / len(x)
        activity = torch.cat([self.encode(part) for part in x.split(chunk)]).var(0, unbiased=False)
        self.train(was_training)
        se = values.std() / math.sqrt(len(x))
        return {
            "neg_elbo_analytic_kl": {"value": values.mean().item(), "se": se.item(), "unit": "nats per image",
                                     "estimator": "1 sample of z per image, closed-form KL"},
            "kl_total": {"value": kl.sum().item(), "unit": "nats per image"},
            "kl_per_dim": {"min": kl.min().item(), "median": kl.median().item(), "max": kl.max().item(),
                           "values": [round(v, 4) for v in kl.tolist()], "unit": "nats"},
            "active_units": {"value": int((activity > 0.01).sum()), "of": self.z_dim,
                             "threshold": 0.01, "criterion": "Cov_x(E_q[z_i]) > threshold"},
        }


def objective(config: VAEConfig) -> dict:
    """TraceMeanField_ELBO (the KL of two Gaussians is analytic), or with ``train_samples`` k > 1
    the IWAE bound L_k as Pyro's RenyiELBO at alpha = 0 with k vectorised particles."""
    k = config.train_samples
    if k > 1:
        return {"name": "RenyiELBO", "num_particles": k, "options": {"alpha": 0.0}}
    return {"name": "TraceMeanField_ELBO"}


__all__ = ["VAE", "objective"]
