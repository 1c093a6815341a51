r"""The eight schools: a hierarchical normal model whose evidence and posterior are known by quadrature.

Rubin (1981), "Estimation in parallel randomized experiments"; Gelman et al., *Bayesian Data
Analysis* (3rd ed.), section 5.5. School j = 1..J reports an estimated coaching effect y_j with a
known standard error sigma_j::

    mu ~ N(0, s_mu^2)                          grand mean             "mu"   (global)
    tau ~ HalfCauchy(s_tau)                    between-school sd      "tau"  (global)
    centred:     theta_j ~ N(mu, tau^2)                               "theta"
    non-centred: eta_j ~ N(0, 1),  theta_j = mu + tau eta_j           "eta"
    y_j | theta_j ~ N(theta_j, sigma_j^2)                             "y"    (observed)

A data point is a school, x_j = (y_j, sigma_j) (shape (J, 2)); the likelihood scores y_j and
carries the known sigma_j along (:class:`KnownScaleNormal`), so a draw from the model has the
data's shape. mu and tau are global; theta (or eta) sits in the schools' "data" plate. The two
parameterisations are the same model: log p(y) and the posterior of (mu, tau, theta) agree. They
differ for inference: the centred posterior of (tau, theta) is a funnel (theta_j squeezed
towards mu as tau -> 0), which a Gaussian guide in (log tau, theta) cannot follow; the
non-centred one is nearly Gaussian in (mu, log tau, eta) for these data.

Exact answers by one-dimensional quadrature over tau. Given tau, everything else is Gaussian:

    p(y | tau) = N(y; 0, diag(sigma^2 + tau^2) + s_mu^2 1 1^T)
    log p(y | tau) = -1/2 sum_j [log 2 pi V_j + y_j^2 / V_j] + 1/2 log(v / s_mu^2) + m^2 / (2 v),
        V_j = sigma_j^2 + tau^2,   v = (1/s_mu^2 + sum_j 1/V_j)^-1,   m = v sum_j y_j / V_j,
    mu | y, tau ~ N(m, v),
    theta_j | y, tau ~ N(b_j m + (1 - b_j) y_j, b_j^2 v + (1/sigma_j^2 + 1/tau^2)^-1),
        b_j = sigma_j^2 / V_j,
    eta_j | y, tau:  mean (1 - b_j)(y_j - m) / tau,
                     variance [(1 - b_j)^2 v + (1/sigma_j^2 + 1/tau^2)^-1] / tau^2.

With tau = s_tau tan(pi u / 2) the half-Cauchy prior becomes u ~ U(0, 1), so

    log p(y) = log int_0^1 p(y | tau(u)) du,    p(u | y) = p(y | tau(u)) / p(y),

and Gauss-Legendre nodes on (0, 1) give the evidence and, through p(u | y), the posterior means
and variances of mu, tau and theta (or eta) by the laws of total expectation and variance
(:func:`quadrature`; ``num_nodes`` sets the grid, and tests check that two grids agree).

Shapes: ``x`` (J, 2); sites "mu" (), "tau" (), "theta"/"eta" (J,), "y" (J,) with event (2,).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from pyro.infer.autoguide import AutoIAFNormal, AutoMultivariateNormal, AutoNormal
from torch.distributions import constraints

from pyro_zoo.models.base import Capabilities, DataError, DataSplit, ZooModel
from pyro_zoo.models.eight_schools.config import EightSchoolsConfig

#: Gauss-Legendre nodes of the quadrature over u = 2 arctan(tau / s_tau) / pi
NUM_NODES = 400


def _iaf(model):
    return AutoIAFNormal(model, hidden_dim=[20], num_transforms=2)


AUTOGUIDES = {"normal": AutoNormal, "mvn": AutoMultivariateNormal, "iaf": _iaf}


class KnownScaleNormal(TorchDistribution):
    """x = (y, sigma) with y ~ N(loc, sigma^2) and sigma known: event shape (2,); ``log_prob``
    scores y (the first column); ``sample`` draws y and copies sigma."""

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, loc: torch.Tensor, sigma: torch.Tensor, validate_args=None):
        self.loc, self.sigma = torch.broadcast_tensors(loc, sigma)
        super().__init__(self.loc.shape, torch.Size([2]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return KnownScaleNormal(self.loc.expand(batch_shape), self.sigma.expand(batch_shape),
                                validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return dist.Normal(self.loc, self.sigma).log_prob(value[..., 0])

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)[:-1]
        y = self.loc.expand(shape) + self.sigma.expand(shape) * torch.randn(shape, dtype=self.loc.dtype,
                                                                            device=self.loc.device)
        return torch.stack([y, self.sigma.expand(shape)], -1)


@dataclass(frozen=True)
class Moments:
    """A posterior known by its mean and variance (what the eval report's comparison reads)."""

    mean: torch.Tensor
    variance: torch.Tensor


class EightSchools(ZooModel):
    """Hierarchical normal model with an AutoGuide; see the module docstring."""

    capabilities = Capabilities(samples=False, importance_sampling=False, exact_global_posterior=True,
                                exact_evidence=True)

    def __init__(self, config: EightSchoolsConfig | None = None):
        super().__init__()
        config = EightSchoolsConfig() if config is None else config
        self.config = config
        self.event_shape = (2,)
        self.local_name = "theta" if config.parameterisation == "centred" else "eta"
        self.autoguide = AUTOGUIDES[config.guide](self.model)
        # run the guide once so that it creates its parameters now (they depend on J only); forward,
        # not __call__, which would also put them in Pyro's global param store (see pyro_zoo.models.hmm)
        with torch.no_grad():
            self.autoguide.forward(torch.ones(config.num_schools, 2))

    def model(self, x: torch.Tensor):
        # p(mu) = N(0, s_mu^2), p(tau) = HalfCauchy(s_tau)
        mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), self.config.mu_scale))
        tau = pyro.sample("tau", dist.HalfCauchy(x.new_tensor(self.config.tau_scale)))
        with self.data_plate(x):
            if self.config.parameterisation == "centred":
                theta = pyro.sample("theta", dist.Normal(mu, tau))
            else:
                theta = mu + tau * pyro.sample("eta", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("y", KnownScaleNormal(theta, x[:, 1]), obs=x)

    def guide(self, x: torch.Tensor):
        return self.autoguide(x)

    def check_data(self, x) -> None:
        super().check_data(x)
        if x.shape[0] != self.config.num_schools:
            raise DataError(f"this model has {self.config.num_schools} schools but the data have "
                            f"{x.shape[0]}; set num_schools to the number of rows")
        if (x[:, 1] <= 0).any():
            raise DataError("the standard errors sigma_j (second column) must be positive; fix the data")

    @torch.no_grad()
    def exact_log_evidence(self, x: torch.Tensor) -> float:
        """log p(y) of all schools by quadrature over tau (module docstring)."""
        return quadrature(x, self.config)["log_evidence"]

    @torch.no_grad()
    def exact_global_posterior(self, x: torch.Tensor) -> dict[str, Moments]:
        """Posterior means and variances of mu, tau and theta (or eta), by quadrature, in x's dtype."""
        moments = quadrature(x, self.config)
        return {name: Moments(torch.as_tensor(moments[name][0], dtype=x.dtype),
                              torch.as_tensor(moments[name][1], dtype=x.dtype))
                for name in ("mu", "tau", self.local_name)}

    @torch.no_grad()
    def metrics(self, data: DataSplit) -> dict:
        """The exact evidence and posterior means of mu and tau (quadrature)."""
        moments = quadrature(data.x.to(self.device), self.config)
        return {"exact_log_evidence": {"value": moments["log_evidence"], "unit": "nats (all schools)"},
                "exact_mu_mean": {"value": float(moments["mu"][0])},
                "exact_tau_mean": {"value": float(moments["tau"][0])}}


def log_likelihood_given_tau(y: np.ndarray, sigma: np.ndarray, tau: np.ndarray, mu_scale: float) -> dict:
    """log p(y | tau) and the Gaussian conditionals given tau, for a vector of tau (float64)."""
    variances = sigma**2 + tau[:, None] ** 2  # V_j, (G, J)
    v = 1 / (1 / mu_scale**2 + (1 / variances).sum(-1))
    m = v * (y / variances).sum(-1)
    log_lik = (-0.5 * (np.log(2 * np.pi * variances) + y**2 / variances).sum(-1)
               + 0.5 * np.log(v / mu_scale**2) + 0.5 * m**2 / v)
    shrink = sigma**2 / variances  # b_j
    with np.errstate(divide="ignore"):
        theta_noise = 1 / (1 / sigma**2 + 1 / tau[:, None] ** 2)
    return {"log_lik": log_lik, "m": m, "v": v, "shrink": shrink, "theta_noise": theta_noise}


@functools.cache
def legendre_nodes(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on (-1, 1) (numpy's; O(n^3) to compute, so kept)."""
    return np.polynomial.legendre.leggauss(num_nodes)


def quadrature(x: torch.Tensor, config: EightSchoolsConfig, num_nodes: int = NUM_NODES) -> dict:
    """log p(y) and posterior (mean, variance) of "mu", "tau", "theta" and "eta" by Gauss-Legendre
    quadrature over u = 2 arctan(tau / s_tau) / pi on (0, 1) with ``num_nodes`` nodes."""
    y, sigma = (x[:, i].double().cpu().numpy() for i in (0, 1))
    nodes, weights = legendre_nodes(num_nodes)
    u, du = (nodes + 1) / 2, weights / 2
    tau = config.tau_scale * np.tan(np.pi * u / 2)
    given = log_likelihood_given_tau(y, sigma, tau, config.mu_scale)
    log_w = given["log_lik"] + np.log(du)
    log_evidence = float(np.logaddexp.reduce(log_w))
    w = np.exp(log_w - log_evidence)  # p(u_g | y) du_g, sums to 1
    b, m, v = given["shrink"], given["m"][:, None], given["v"][:, None]
    conditionals = {
        "mu": (given["m"], given["v"]),
        "tau": (tau, np.zeros_like(tau)),
        "theta": (b * m + (1 - b) * y, b**2 * v + given["theta_noise"]),
        "eta": ((1 - b) * (y - m) / tau[:, None],
                ((1 - b) ** 2 * v + given["theta_noise"]) / tau[:, None] ** 2),
    }
    out = {"log_evidence": log_evidence}
    for name, (mean, var) in conditionals.items():
        weight = w if mean.ndim == 1 else w[:, None]
        total_mean = (weight * mean).sum(0)
        out[name] = (total_mean, (weight * (var + mean**2)).sum(0) - total_mean**2)
    return out


__all__ = [
    "AUTOGUIDES", "EightSchools", "KnownScaleNormal", "Moments", "NUM_NODES", "log_likelihood_given_tau",
    "quadrature"
]
