"""Importance sampling (inference/importance.py) on toy models whose log p(x) is known.

Normal-Normal: z ~ N(0, 1), x | z ~ N(z, s^2), so p(x) = N(0, 1 + s^2) and
p(z | x) = N(x / (1 + s^2), s^2 / (1 + s^2)). Discrete: c ~ Categorical(pi),
x | c ~ N(mu_c, 1), p(x) = sum_c pi_c N(x; mu_c, 1). Random estimates are compared with
the exact values at 4 of their own standard errors, one-sided beyond the log-mean estimator's
known bias (-SE^2 / 2, :func:`tests.conftest.log_mean_bias`): log p̂ is a stochastic lower bound.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_zoo.inference.importance import estimate_log_likelihood, log_weights, weight_statistics
from pyro_zoo.models.base import DATA_PLATE
from tests.conftest import SEED, agrees_as_lower_bound, log_mean_bias

S = 0.7
PI = torch.tensor([0.5, 0.3, 0.2])
MU = torch.tensor([-2.0, 0.0, 3.0])


def normal_model(x):
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(z, S), obs=x)


def normal_exact(x):
    return dist.Normal(0.0, math.sqrt(1 + S**2)).log_prob(x)


def posterior_guide(x):
    # p(z | x) = N(x / (1 + s^2), s^2 / (1 + s^2))
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        pyro.sample("z", dist.Normal(x / (1 + S**2), S / math.sqrt(1 + S**2)))


def rough_guide(x):
    # deliberately off: shrunk mean, 1.5x wider than the posterior
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        pyro.sample("z", dist.Normal(0.5 * x, 1.5 * S / math.sqrt(1 + S**2)))


def rough_guide_elbo(x):
    """E_q[log p(x, z) - log q(z)] in closed form for ``rough_guide``, shape (N,)."""
    m, v = 0.5 * x, (1.5 * S) ** 2 / (1 + S**2)
    log_prior = -0.5 * math.log(2 * math.pi) - 0.5 * (m**2 + v)
    log_lik = -0.5 * math.log(2 * math.pi * S**2) - 0.5 * ((x - m) ** 2 + v) / S**2
    entropy = 0.5 * math.log(2 * math.pi * math.e * v)
    return log_prior + log_lik + entropy


def mixture_model(x):
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        c = pyro.sample("c", dist.Categorical(PI.to(x)))
        pyro.sample("x", dist.Normal(MU.to(x)[c], 1.0), obs=x)


def mixture_log_joint(x):
    """log pi_c + log N(x; mu_c, 1), shape (N, 3)."""
    return PI.log() + dist.Normal(MU, 1.0).log_prob(x[:, None])


def mixture_exact(x):
    return torch.logsumexp(mixture_log_joint(x), -1)


def mixture_posterior_guide(x):
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        pyro.sample("c", dist.Categorical(logits=mixture_log_joint(x)))


def mixture_rough_guide(x):
    probs = torch.softmax(mixture_log_joint(x) / 3, -1)
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        pyro.sample("c", dist.Categorical(0.8 * probs + 0.2 / 3))


def data(n=20):
    return torch.linspace(-3.0, 3.0, n)


def assert_within(estimate, exact, se, sigmas=4.0):
    gap = (estimate - exact).abs()
    assert bool((gap <= sigmas * se).all()), f"max |gap|/SE = {(gap / se).max().item():.2f}"


@pytest.mark.statistical
@pytest.mark.parametrize("model, guide, exact", [
    (normal_model, rough_guide, normal_exact),
    (normal_model, None, normal_exact),
    (mixture_model, mixture_rough_guide, mixture_exact),
    (mixture_model, None, mixture_exact),
], ids=["normal-guide", "normal-prior", "discrete-guide", "discrete-prior"])
def test_estimate_matches_exact(model, guide, exact):
    x = data()
    result = estimate_log_likelihood(model, guide, x, 4000)
    assert result.log_px.shape == (20,)
    assert bool((result.log_px_se > 0).all())
    se = result.log_px_se
    assert agrees_as_lower_bound(result.log_px, exact(x), se, log_mean_bias(se)).all()
    summary = result.summary()
    se = summary["log_px_se"]
    assert agrees_as_lower_bound(summary["log_px"], exact(x).mean().item(), se, log_mean_bias(se, len(x)))


@pytest.mark.parametrize("model, guide, exact", [
    (normal_model, posterior_guide, normal_exact),
    (mixture_model, mixture_posterior_guide, mixture_exact),
], ids=["normal", "discrete"])
def test_exact_posterior_gives_constant_weights(model, guide, exact):
    x = data()
    log_w = log_weights(model, guide, x, 500)
    assert log_w.shape == (500, 20)
    # log w = log p(x, z) - log p(z | x) = log p(x) for every z
    torch.testing.assert_close(log_w, exact(x).expand(500, -1), rtol=1e-6, atol=1e-5)
    result = estimate_log_likelihood(model, guide, x, 500)
    torch.testing.assert_close(result.log_px, exact(x), rtol=1e-6, atol=1e-5)
    assert result.log_px_se.max() < 1e-3
    torch.testing.assert_close(result.ess, torch.full((20,), 500.0), rtol=1e-4, atol=0)
    assert bool((result.khat < 0.5).all())


@pytest.mark.statistical
def test_bounds_increase_with_k():
    x = data()
    exact = normal_exact(x).mean().item()
    summary = estimate_log_likelihood(normal_model, rough_guide, x, 10_000, iwae_ks=(1, 10, 100)).summary()
    iwae, se = summary["iwae"], summary["iwae_se"]
    # IWAE_1 is the ELBO: equal in expectation to the closed form
    assert abs(iwae[1] - rough_guide_elbo(x).mean().item()) <= 4 * se[1]
    # E[IWAE_1] < E[IWAE_10] < E[IWAE_100] <= log p(x): each step significant at 4 SE
    for small, large in ((1, 10), (10, 100)):
        assert iwae[large] - iwae[small] > 4 * math.hypot(se[small], se[large])
    for k in (1, 10, 100):
        assert iwae[k] <= exact + 4 * se[k]
    assert exact - iwae[1] > 4 * se[1]


def test_weight_statistics_against_numpy_formulas():
    log_w = torch.randn(1000, 3, dtype=torch.float64) * torch.tensor([0.1, 1.0, 2.0], dtype=torch.float64)
    stats = weight_statistics(log_w, iwae_ks=(1, 10))
    w = log_w.exp().numpy()
    k = w.shape[0]
    torch.testing.assert_close(stats["log_px"].numpy(), torch.tensor(w.mean(0)).log().numpy())
    w_bar = w / w.sum(0)
    torch.testing.assert_close(stats["ess"].numpy(), 1 / (w_bar**2).sum(0))
    var_ratio = w.var(0, ddof=1) / w.mean(0) ** 2
    torch.testing.assert_close(stats["log_px_se"].numpy(), (var_ratio / k) ** 0.5)
    torch.testing.assert_close(stats["iwae_1"], log_w.mean(0))
    groups = torch.tensor(w).reshape(100, 10, 3).mean(1).log()
    torch.testing.assert_close(stats["iwae_10"], groups.mean(0))
    torch.testing.assert_close(stats["iwae_se_10"], groups.std(0) / 10)


@pytest.mark.statistical
def test_chunking_gives_the_same_result():
    x = data(23)
    exact = normal_exact(x)
    one = estimate_log_likelihood(normal_model, posterior_guide, x, 1000)
    chunked = estimate_log_likelihood(normal_model, posterior_guide, x, 1000, data_chunk=5,
                                      chunk_elements=1500)
    # every row keeps its own estimate: with the exact posterior each one is exact
    torch.testing.assert_close(chunked.log_px, exact, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(chunked.log_px, one.log_px, rtol=1e-6, atol=1e-5)
    pyro.set_rng_seed(SEED + 1)
    one = estimate_log_likelihood(normal_model, rough_guide, x, 1000)
    pyro.set_rng_seed(SEED + 1)
    chunked = estimate_log_likelihood(normal_model, rough_guide, x, 1000, data_chunk=5, chunk_elements=1500)
    assert set(one.iwae) == set(chunked.iwae) == {1, 10, 100, 1000}
    for k in (1, 10, 100):
        assert_within(chunked.iwae[k], one.iwae[k], torch.hypot(one.iwae_se[k], chunked.iwae_se[k]))
    assert_within(chunked.log_px, one.log_px, torch.hypot(one.log_px_se, chunked.log_px_se))


def global_model(x):
    mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def global_guide(x):
    pyro.sample("mu", dist.Normal(x.mean(), 0.1))


def test_global_latent_raises():
    with pytest.raises(ValueError, match="outside the 'data' plate"):
        estimate_log_likelihood(global_model, global_guide, data(), 10)


M = 4


def nested_model(x):
    """z_n ~ N(0, 1), u_nm | z_n ~ N(z_n, 1), x_nm | u_nm ~ N(u_nm, s^2); x is (N, M)."""
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("cells", M, dim=-2):
            u = pyro.sample("u", dist.Normal(z, 1.0))
            pyro.sample("x", dist.Normal(u, S), obs=x.T)


def nested_exact(x):
    # x_n ~ N(0, (1 + s^2) I + 1 1^T)
    cov = (1 + S**2) * torch.eye(M) + torch.ones(M, M)
    return dist.MultivariateNormal(torch.zeros(M), cov).log_prob(x)


def nested_posterior_guide(x):
    # z_n | x_n: x_nm | z_n ~ N(z_n, 1 + s^2) iid; u_nm | z_n, x_nm: precision 1 + 1/s^2
    precision = 1 + M / (1 + S**2)
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(x.sum(-1) / (1 + S**2) / precision, precision**-0.5))
        with pyro.plate("cells", M, dim=-2):
            cell_precision = 1 + 1 / S**2
            pyro.sample("u", dist.Normal((z + x.T / S**2) / cell_precision, cell_precision**-0.5))


@pytest.mark.statistical
def test_inner_plate_with_max_plate_nesting_2():
    x = torch.stack([torch.linspace(-2.0, 2.0, 10) + offset for offset in (0.0, 0.5, -1.0, 1.5)], -1)
    exact = nested_exact(x)
    result = estimate_log_likelihood(nested_model, nested_posterior_guide, x, 200, max_plate_nesting=2)
    torch.testing.assert_close(result.log_px, exact, rtol=1e-6, atol=1e-4)
    result = estimate_log_likelihood(nested_model, None, x, 20_000, max_plate_nesting=2)
    se = result.log_px_se
    assert agrees_as_lower_bound(result.log_px, exact, se, log_mean_bias(se)).all()
