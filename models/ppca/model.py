"""Probabilistic PCA: the linear-Gaussian latent factor model, with exact marginal and posterior.

Generative story (Tipping & Bishop 1999; the course slides' Gaussian model, sampled through its
eigen-decomposition x = mu + E Lambda^{1/2} z, is the sigma -> 0, q = D special case):

    z ~ N(0, I_q),                          q = latent_dim
    x | z ~ N(W z + mu, sigma^2 I_D),       D = data_dim, W: (D, q), mu: (D,), sigma > 0

Exact marginal: x ~ N(mu, W W^T + sigma^2 I_D) (``exact_log_prob``).
Exact posterior: z | x ~ N(M^{-1} W^T (x - mu), sigma^2 M^{-1}), M = W^T W + sigma^2 I_q
(``exact_posterior``).
Maximum likelihood (``closed_form_ml``, ``PPCA.fit_closed_form``): with the sample covariance
S = (1/N) sum_n (x_n - xbar)(x_n - xbar)^T = U Lambda U^T (eigenvalues descending),

    mu_ML = xbar,   sigma^2_ML = mean(lambda_{q+1}, ..., lambda_D),
    W_ML = U_q (Lambda_q - sigma^2_ML I)^{1/2}   (up to a rotation R on the right).

Guides: "amortized" q(z | x) = N(f_phi(x), L L^T) with f_phi linear (``guide_hidden=0``) or a tanh
MLP and a learned constant Cholesky factor L -- the linear one contains the exact posterior, so
the ELBO is tight at the optimum; "exact" q(z | x) = p(z | x) computed from the current (W, mu,
sigma), so p(x, z) / q(z | x) = p(x) for every z and importance sampling is exact.

Default data (:mod:`pyro_zoo.models.ppca.data`): scikit-learn's 8x8 digits scaled to [0, 1] (D = 64; the
zoo's fixed split of ``pyro_zoo.models.data.load_digits``, 1438 train / 359 test images). data="synthetic"
draws from ``synthetic_parameters()`` (fixed seed); data="<path>.csv" reads a user file.

Shapes: x is (N, D); inside an outer particles plate z is (k, N, q); ``exact_log_prob`` returns
(N,); ``exact_posterior`` a MultivariateNormal with batch shape (N,) and event shape (q,).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints, kl_divergence, transform_to

from pyro_zoo.models.base import Capabilities, DataSplit, ZooModel
from pyro_zoo.models.ppca.config import PPCAConfig


class PPCA(ZooModel):
    """z ~ N(0, I_q), x | z ~ N(W z + mu, sigma^2 I_D); see the module docstring."""

    capabilities = Capabilities(exact_log_prob=True, exact_posterior=True)

    def __init__(self, config: PPCAConfig | None = None):
        super().__init__()
        config = PPCAConfig() if config is None else config
        self.config = config
        data_dim, latent_dim, guide_hidden = config.data_dim, config.latent_dim, config.guide_hidden
        self.data_dim, self.latent_dim, self.guide_kind = data_dim, latent_dim, config.guide
        self.event_shape = (data_dim,)
        self.W = nn.Parameter(0.1 * torch.randn(data_dim, latent_dim))
        self.mu = nn.Parameter(torch.zeros(data_dim))
        self.raw_sigma = nn.Parameter(torch.zeros(()))
        if self.guide_kind == "amortized":
            if guide_hidden:
                self.encoder = nn.Sequential(
                    nn.Linear(data_dim, guide_hidden), nn.Tanh(), nn.Linear(guide_hidden, latent_dim)
                )
            else:
                self.encoder = nn.Linear(data_dim, latent_dim)
            self.raw_scale_tril = nn.Parameter(torch.zeros(latent_dim, latent_dim))

    @property
    def sigma(self) -> torch.Tensor:
        return transform_to(constraints.positive)(self.raw_sigma)

    @property
    def scale_tril(self) -> torch.Tensor:
        """The amortized guide's constant Cholesky factor L, (q, q)."""
        return transform_to(constraints.lower_cholesky)(self.raw_scale_tril)

    def marginal(self) -> dist.LowRankMultivariateNormal:
        """p(x) = N(mu, W W^T + sigma^2 I), event shape (D,)."""
        cov_diag = self.sigma.pow(2).expand(self.data_dim)
        return dist.LowRankMultivariateNormal(self.mu, self.W, cov_diag)

    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; mu, W W^T + sigma^2 I), shape (N,)."""
        return self.marginal().log_prob(x)

    def exact_posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """p(z | x) = N(M^{-1} W^T (x - mu), sigma^2 M^{-1}), M = W^T W + sigma^2 I.

        Batch shape (N,), event shape (q,).
        """
        variance = self.sigma.pow(2)
        m = self.W.T @ self.W + variance * torch.eye(self.latent_dim, dtype=x.dtype, device=x.device)
        chol_m = torch.linalg.cholesky(m)
        loc = torch.cholesky_solve(self.W.T @ (x - self.mu).T, chol_m).T
        cov = variance * torch.cholesky_inverse(chol_m)
        return dist.MultivariateNormal(loc, scale_tril=torch.linalg.cholesky(cov))

    def model(self, x: torch.Tensor, num_data: int | None = None):
        prior = dist.Normal(x.new_zeros(self.latent_dim), x.new_ones(self.latent_dim)).to_event(1)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mu, self.sigma).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None):
        with self.data_plate(x, num_data):
            pyro.sample("z", self.posterior(x))

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """The guide's q(z | x): batch (N,), event (q,)."""
        if self.guide_kind == "exact":
            return self.exact_posterior(x)
        return dist.MultivariateNormal(self.encoder(x), scale_tril=self.scale_tril)

    def sample(self, n: int, noise: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws x = mu + W z (+ sigma eps), shape (n, D)."""
        device = self.device
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=generator, device=device)
            x = z @ self.W.T + self.mu
            if noise:
                x = x + self.sigma * torch.randn(n, self.data_dim, generator=generator, device=device)
            return x

    @torch.no_grad()
    def fit_closed_form(self, x: torch.Tensor) -> PPCA:
        """Set (W, mu, sigma) to the Tipping-Bishop ML solution for ``x`` and, for a linear amortized
        guide, the guide to the exact posterior of that solution. Returns ``self``."""
        self.check_data(x)
        solution = closed_form_ml(x, self.latent_dim)
        self.W.copy_(solution["W"])
        self.mu.copy_(solution["mu"])
        self.raw_sigma.copy_(0.5 * solution["sigma2"].log())
        if self.guide_kind == "amortized" and isinstance(self.encoder, nn.Linear):
            posterior = self.exact_posterior(x[:1])
            # loc = M^{-1} W^T (x - mu) = G x - G mu with G = M^{-1} W^T
            eye = torch.eye(self.latent_dim, dtype=x.dtype, device=x.device)
            gain = torch.linalg.solve(self.W.T @ self.W + self.sigma.pow(2) * eye, self.W.T)
            self.encoder.weight.copy_(gain)
            self.encoder.bias.copy_(-gain @ self.mu)
            self.raw_scale_tril.copy_(transform_to(constraints.lower_cholesky).inv(posterior.scale_tril[0]))
        return self

    def metrics(self, data: DataSplit) -> dict:
        x = data.x.to(self.device)
        with torch.no_grad():
            # the guide against the exact posterior: KL(q(z | x) || p(z | x)) = log p(x) - ELBO(x)
            kl = kl_divergence(self.posterior(x), self.exact_posterior(x))
            return {"exact_log_prob_nats": float(self.exact_log_prob(x).mean()), "sigma": float(self.sigma),
                    "posterior_kl_nats": float(kl.mean())}


def closed_form_ml(x: torch.Tensor, latent_dim: int) -> dict[str, torch.Tensor]:
    """Tipping & Bishop's ML estimate from the eigen-decomposition of the sample covariance (1/N).

    Returns {"mu": (D,), "W": (D, q), "sigma2": (), "eigenvalues": (D,) descending}, in x's dtype.
    """
    num_data, data_dim = x.shape
    if not 0 < latent_dim < data_dim:
        raise ValueError(f"latent_dim must be in [1, {data_dim - 1}] for {data_dim}-dimensional data")
    values = x.double()
    mu = values.mean(0)
    centred = values - mu
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / num_data)
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp(min=0), eigenvectors.flip(1)
    sigma2 = eigenvalues[latent_dim:].mean()
    # W = U_q (Lambda_q - sigma^2 I)^{1/2}
    w = eigenvectors[:, :latent_dim] * (eigenvalues[:latent_dim] - sigma2).clamp(min=0).sqrt()
    return {"mu": mu.to(x.dtype), "W": w.to(x.dtype), "sigma2": sigma2.to(x.dtype),
            "eigenvalues": eigenvalues.to(x.dtype)}


__all__ = ["PPCA", "closed_form_ml"]
