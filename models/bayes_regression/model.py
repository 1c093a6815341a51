r"""Bayesian linear regression with a conjugate Gaussian prior, fitted by an AutoGuide.

Generative story for N patients with D standardised features x_n (scikit-learn's diabetes data,
Efron et al., 2004: age, sex, BMI, blood pressure and six blood serum measurements; the response
is a disease-progression score one year later, standardised)::

    w ~ N(0, tau^2 I_D)                       (global latent: shared by every data point)
    y_n | x_n, w ~ N(x_n . w, sigma^2)         n = 1..N, sigma known (fixed hyperparameter)

Features and response are standardised with the training split's mean and sd, so no intercept
is needed. With sigma known the posterior is Gaussian in closed form (Bishop, 2006, eq. 3.53-3.54),

    Sigma_N = (I / tau^2 + X^T X / sigma^2)^{-1},    m_N = Sigma_N X^T y / sigma^2,

given by :meth:`BayesRegression.exact_global_posterior`. The guide is Pyro's
``AutoMultivariateNormal`` (a full-covariance Gaussian q(w) = N(mu, L L^T)), so the exact
posterior lies inside the variational family and the ELBO's optimum is the posterior itself.
``sigma`` = 0.7 is about the residual sd of least squares on these data (0.694).

Shapes: ``x`` (N, D), ``y`` (N,); the latent site ``"w"`` has shape (D,); the observed site
``"y"`` has batch shape (N,). The latent is global, so per-data-point importance sampling does
not apply: ``zoo eval`` compares guide, NUTS and the exact posterior instead. The data and their
standardisation: :mod:`pyro_zoo.models.bayes_regression.data`.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoMultivariateNormal

from pyro_zoo.models.base import Capabilities, DataSplit, ZooModel
from pyro_zoo.models.bayes_regression.config import BayesRegressionConfig


class BayesRegression(ZooModel):
    """w ~ N(0, tau^2 I), y | x, w ~ N(x . w, sigma^2); AutoMultivariateNormal guide over w."""

    capabilities = Capabilities(samples=False, importance_sampling=False, exact_global_posterior=True)
    inputs = ("x", "y")

    def __init__(self, config: BayesRegressionConfig | None = None):
        super().__init__()
        config = BayesRegressionConfig() if config is None else config
        self.config = config
        self.data_dim, self.prior_scale, self.noise = config.data_dim, config.prior_scale, config.noise
        self.event_shape = (self.data_dim,)
        self.autoguide = AutoMultivariateNormal(self.model)
        # run the guide once so that it creates its parameters now (they depend on D only) and the
        # state dict is complete; forward, not __call__, which would also register them in Pyro's
        # global param store, where every model built later would share them
        with torch.no_grad():
            self.autoguide.forward(torch.zeros(1, self.data_dim), torch.zeros(1))

    # p(w) = N(0, tau^2 I), p(y_n | x_n, w) = N(x_n . w, sigma^2)
    def model(self, x: torch.Tensor, y: torch.Tensor):
        prior = dist.Normal(x.new_zeros(self.data_dim), self.prior_scale).to_event(1)
        w = pyro.sample("w", prior)
        with self.data_plate(x):
            pyro.sample("y", dist.Normal((x * w).sum(-1), self.noise), obs=y)

    # q(w) = N(mu, L L^T)
    def guide(self, x: torch.Tensor, y: torch.Tensor):
        return self.autoguide(x, y)

    @torch.no_grad()
    def exact_global_posterior(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """{"w": N(m_N, Sigma_N)} of the module docstring (float64 solve, returned in x's dtype)."""
        xd, yd = x.double(), y.double()
        precision = torch.eye(self.data_dim, dtype=torch.float64) / self.prior_scale**2
        precision = precision + xd.T @ xd / self.noise**2
        cov = torch.linalg.inv(precision)
        mean = cov @ xd.T @ yd / self.noise**2
        return {"w": dist.MultivariateNormal(mean.to(x.dtype), covariance_matrix=cov.to(x.dtype))}

    @torch.no_grad()
    def metrics(self, data: DataSplit) -> dict:
        """Test RMSE of the posterior-mean prediction x . E_q[w] (standardised response units)."""
        w = self.autoguide.median()["w"]
        rmse = (data.x @ w - data.y).square().mean().sqrt().item()
        return {"rmse_posterior_mean": {"value": rmse, "unit": "sd of the response",
                                        "estimator": "x . E_q[w] on the split"}}


__all__ = ["BayesRegression"]
