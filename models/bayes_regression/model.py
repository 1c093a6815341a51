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
not apply: ``zoo eval`` compares guide, NUTS and the exact posterior instead.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoMultivariateNormal

from models import ModelSpec
from models.base import Capabilities, DataSplit, ZooModel

TEST_FRACTION = 0.2


class BayesRegression(ZooModel):
    """w ~ N(0, tau^2 I), y | x, w ~ N(x . w, sigma^2); AutoMultivariateNormal guide over w."""

    capabilities = Capabilities(samples=False, importance_sampling=False, exact_global_posterior=True)
    inputs = ("x", "y")

    def __init__(self, data_dim: int = 10, prior_scale: float = 1.0, noise: float = 0.7):
        super().__init__()
        self.data_dim, self.prior_scale, self.noise = int(data_dim), float(prior_scale), float(noise)
        self.event_shape = (self.data_dim,)
        self.autoguide = AutoMultivariateNormal(self.model)
        # create the guide's parameters now (they depend on D only), so the state dict is complete
        self.autoguide._setup_prototype(torch.zeros(1, self.data_dim), torch.zeros(1))

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


def build(data_dim: int = 10, prior_scale: float = 1.0, noise: float = 0.7) -> BayesRegression:
    return BayesRegression(data_dim=data_dim, prior_scale=prior_scale, noise=noise)


def load_data(split: str, data_dir=None, data=None, smoke: bool = False) -> DataSplit:
    """scikit-learn's diabetes data (442 x 10), a fixed 80/20 split, standardised with the train
    split's statistics: ``x`` (N, 10) float32, ``y`` (N,) float32. ``data_dir``, ``data`` and
    ``smoke`` change nothing (the data set is small and embedded)."""
    from sklearn.datasets import load_diabetes

    from models.base import DataError

    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if data not in (None, "diabetes"):
        raise DataError(f"bayes_regression reads scikit-learn's diabetes data only, not {data!r}; "
                        "drop --data")
    features, target = load_diabetes(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(target))
    num_test = int(round(TEST_FRACTION * len(order)))
    train_rows, test_rows = order[:-num_test], order[-num_test:]
    mean, sd = features[train_rows].mean(0), features[train_rows].std(0)
    y_mean, y_sd = target[train_rows].mean(), target[train_rows].std()
    rows = train_rows if split == "train" else test_rows
    return DataSplit(
        x=torch.as_tensor((features[rows] - mean) / sd, dtype=torch.float32),
        y=torch.as_tensor((target[rows] - y_mean) / y_sd, dtype=torch.float32),
        source=f"scikit-learn diabetes {split} ({len(rows)} patients, 10 standardised features)",
        info={"data": "diabetes", "split": split},
    )


def hparams_for(data: DataSplit) -> dict:
    return {"data_dim": int(data.x.shape[1])}


SPEC = ModelSpec(
    name="bayes_regression",
    description="Bayesian linear regression (conjugate, sigma known) on the diabetes data; "
                "AutoMultivariateNormal vs NUTS vs exact",
    build=build,
    load_data=load_data,
    hparams={"data_dim": 10, "prior_scale": 1.0, "noise": 0.7},
    train={"steps": 4000, "lr": 0.005},
    smoke_train={"steps": 500, "lr": 0.02},
    objective={"name": "Trace_ELBO", "num_particles": 32},
    hparams_for=hparams_for,
)

__all__ = sorted(["SPEC", "BayesRegression", "build", "hparams_for", "load_data"])
