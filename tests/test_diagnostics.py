"""PSIS k̂, IS effective sample size and latent usage (inference/diagnostics.py).

k̂ is checked on synthetic weights with a known tail: generalised Pareto weights with shape xi
have exceedances over any threshold that are again generalised Pareto with shape xi, so PSIS,
which fits the M = ceil(min(K/5, 3 sqrt(K))) largest of K weights, estimates xi. Its estimator
(Zhang & Stephens 2009, as in ArviZ) adds a weak prior, k_post = (M k + 10 * 0.5) / (M + 10),
and the asymptotic standard deviation of a shape estimate from M exceedances is (1 + xi) / sqrt(M)
(the GPD maximum-likelihood variance (1 + xi)^2 / M), so the mean over N independent columns is
compared with (M xi + 5) / (M + 10) at 4 (1 + xi) / sqrt(M N).
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import integrate, stats

from pyro_zoo.inference.diagnostics import (
    ess_summary,
    importance_ess,
    latent_usage,
    model_latent_usage,
    psis_diagnostics,
)
from pyro_zoo.inference.psis import khat_over_by_chance, khat_summary, khat_threshold, pareto_khat
from pyro_zoo.models.base import DATA_PLATE
from tests.conftest import SEED

K, N = 10_000, 40
M = math.ceil(min(K / 5, 3 * math.sqrt(K)))


def gpd_log_weights(xi: float, generator: torch.Generator) -> torch.Tensor:
    """log w with w = 1 + (U^-xi - 1) / xi ~ 1 + GPD(xi, scale 1), shape (K, N)."""
    u = torch.rand(K, N, generator=generator, dtype=torch.float64)
    return torch.log1p((u.pow(-xi) - 1) / xi)


@pytest.mark.statistical
@pytest.mark.parametrize("xi", [0.2, 0.5, 0.8])
def test_khat_recovers_pareto_shape(xi):
    khat = pareto_khat(gpd_log_weights(xi, torch.Generator().manual_seed(SEED + 1)))
    assert khat.shape == (N,)
    expected = (M * xi + 5) / (M + 10)
    se = (1 + xi) / math.sqrt(M * N)
    assert abs(khat.mean().item() - expected) < 4 * se


def test_sample_size_aware_threshold():
    # min(1 - 1 / log10 S, 0.7), Vehtari et al. (2024) section 3
    assert [round(khat_threshold(s), 4) for s in (100, 1000, 2154, 10_000)] == [0.5, 0.6667, 0.7, 0.7]


@pytest.mark.statistical
@pytest.mark.parametrize("particles", [100, 1000, 5000])
def test_share_over_the_threshold_by_chance_at_the_threshold(particles):
    """At k = tau(S) (the edge of reliability) the share of k̂ over tau(S) is the normal
    approximation's, within 4 binomial SEs over 400 independent columns."""
    generator = torch.Generator().manual_seed(SEED + 2)
    u = torch.rand(particles, 400, generator=generator, dtype=torch.float64)
    xi = khat_threshold(particles)
    over = (pareto_khat(torch.log1p((u.pow(-xi) - 1) / xi)) > xi).double().mean()
    chance = khat_over_by_chance(particles)
    assert abs(over.item() - chance) < 4 * math.sqrt(chance * (1 - chance) / 400), (over, chance)


@pytest.mark.statistical
def test_khat_summary_warns_on_heavy_tails_only():
    generator = torch.Generator().manual_seed(SEED + 2)
    light = khat_summary(pareto_khat(gpd_log_weights(0.1, generator)), K)
    finite = khat_summary(pareto_khat(gpd_log_weights(0.5, generator)), K)
    heavy = khat_summary(pareto_khat(gpd_log_weights(1.0, generator)), K)
    assert light["over threshold"] == 0.0 and light["threshold"] == 0.7
    assert "warning" not in light and "warning" not in finite
    assert heavy["over threshold"] > 0.9 and "k̂ > 0.70 at" in heavy["warning"]


@pytest.mark.statistical
def test_light_tailed_weights_are_good():
    generator = torch.Generator().manual_seed(SEED + 3)
    log_normal = 0.3 * torch.randn(K, N, generator=generator, dtype=torch.float64)
    assert pareto_khat(log_normal).max() < 0.5
    # bounded weights (uniform on (0, 1)): GPD shape -1
    bounded = torch.rand(K, N, generator=generator, dtype=torch.float64).log()
    assert pareto_khat(bounded).max() < 0


def test_khat_edge_cases():
    assert torch.isnan(pareto_khat(torch.randn(20, 3))).all()
    assert khat_summary(pareto_khat(torch.randn(1, 3)), 1)["not estimated"] == 1.0
    # constant weights (the exact posterior as proposal) and tied maxima (discrete latents)
    assert torch.isneginf(pareto_khat(torch.full((100, 2), -1.5))).all()
    assert torch.isneginf(pareto_khat(torch.randint(0, 3, (100, 2)).double())).all()
    # equal up to rounding (the exact posterior in float64): no tail to fit, and no warning
    rounding = 4.2 + 1e-15 * torch.randn(100, 2, dtype=torch.float64)
    assert torch.isneginf(pareto_khat(rounding)).all()
    bounded = khat_summary(torch.tensor([float("-inf")] * 4), 100)
    assert bounded["over threshold"] == 0.0 and "warning" not in bounded


def test_importance_ess():
    generator = torch.Generator().manual_seed(SEED + 4)
    log_w = 2 * torch.randn(500, 6, generator=generator, dtype=torch.float64) - 300
    w = np.exp(log_w.numpy() + 300)
    torch.testing.assert_close(importance_ess(log_w).numpy(), w.sum(0) ** 2 / (w**2).sum(0))
    torch.testing.assert_close(importance_ess(torch.zeros(50, 2)), torch.full((2,), 50.0))
    one_dominates = torch.full((50, 1), -1000.0)
    one_dominates[7] = 0.0
    torch.testing.assert_close(importance_ess(one_dominates), torch.ones(1))
    summary = ess_summary(torch.tensor([10.0, 20.0, 30.0]), 40)
    assert summary == {"mean": 20.0, "median": 20.0, "min": 10.0, "relative_mean": 0.5}
    assert set(psis_diagnostics(log_w)) == {"khat", "ess"}


# z_n ~ N(0, I_3), x_n | z_n ~ N(z_n, I_3); q(z_n | x_n) = N(A x_n, diag(s^2)), one unit collapsed
SLOPE = torch.tensor([0.5, 0.9, 0.0])
SCALE = torch.tensor([0.7, 0.3, 1.0])


def linear_model(x, prior=None):
    prior = prior or dist.Normal(x.new_zeros(3), 1.0)
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        z = pyro.sample("z", prior.to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def linear_guide(x):
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        pyro.sample("z", dist.Normal(SLOPE * x, SCALE).to_event(1))


def test_latent_usage_closed_form():
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(SEED + 5)) * 2
    usage = latent_usage(linear_model, linear_guide, x)["z"]
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2, averaged over x
    m = SLOPE * x
    kl = (0.5 * (SCALE**2 + m**2 - 1 - (SCALE**2).log())).mean(0)
    torch.testing.assert_close(torch.tensor(usage["kl_per_dim"]), kl)
    activity = m.var(0, correction=0)
    torch.testing.assert_close(torch.tensor(usage["activity"]), activity)
    assert usage["active_units"] == 2 and usage["num_units"] == 3
    assert usage["kl_per_dim"][2] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.statistical
def test_latent_usage_monte_carlo_fallback():
    # no closed-form KL(Normal || StudentT): the Monte Carlo average over 64 x 50 draws per unit
    df = 4.0
    x = torch.linspace(-1.0, 1.0, 5).repeat(10)[:, None].expand(-1, 3).contiguous()
    prior = dist.StudentT(df, torch.zeros(3), torch.ones(3))
    usage = latent_usage(lambda x: linear_model(x, prior), linear_guide, x, num_particles=64)["z"]
    first, second = [], []
    for m, s in zip((SLOPE * x[:5]).T.tolist(), SCALE.tolist(), strict=True):
        moments = [_kl_moments(mi, s, df) for mi in m]
        first.append(np.mean([a for a, _ in moments]))
        second.append(np.mean([b for _, b in moments]))
    first, second = np.array(first), np.array(second)
    se = np.sqrt((second - first**2) / (64 * 50))
    assert np.all(np.abs(np.array(usage["kl_per_dim"]) - first) < 4 * se)


def _kl_moments(m: float, s: float, df: float) -> tuple[float, float]:
    """E_q[f] and E_q[f^2] for f = log N(z; m, s^2) - log t_df(z), by quadrature."""
    def f(z):
        return stats.norm.logpdf(z, m, s) - stats.t.logpdf(z, df)

    def moment(power):
        return integrate.quad(lambda z: stats.norm.pdf(z, m, s) * f(z) ** power, m - 12 * s, m + 12 * s)[0]

    return moment(1), moment(2)


class WithOwnUsage:
    def kl_per_dim(self, x):
        return torch.tensor([0.5, 0.0])

    def active_units(self, x):
        return 1


def test_model_latent_usage_calls_the_model():
    usage = model_latent_usage(WithOwnUsage(), torch.zeros(3, 2))
    assert usage == {"kl_per_dim": [0.5, 0.0], "active_units": 1}


COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]])


def mvn_guide(x):
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        pyro.sample("z", dist.MultivariateNormal(0.8 * x, COV))


@pytest.mark.statistical
def test_latent_usage_full_covariance_guide():
    # q does not factorise: total KL(N(m, C) || N(0, I)) = (tr C + m^T m - 2 - log det C) / 2 only
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(SEED + 6))
    prior = dist.Normal(torch.zeros(2), 1.0)
    usage = latent_usage(lambda x: linear_model(x, prior), mvn_guide, x, num_particles=200)["z"]
    assert usage["kl_per_dim"] is None and usage["num_units"] == 2
    m = 0.8 * x
    kl = 0.5 * (COV.trace() + (m**2).sum(-1) - 2 - COV.logdet())
    q = dist.MultivariateNormal(m, COV)
    z = q.sample((200,))
    f = q.log_prob(z) - dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    se = (f - kl).square().mean().sqrt().item() / math.sqrt(f.numel())
    assert abs(usage["kl"] - kl.mean().item()) < 4 * se
    torch.testing.assert_close(torch.tensor(usage["activity"]), m.var(0, correction=0))
