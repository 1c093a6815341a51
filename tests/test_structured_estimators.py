"""The estimators on structured programs: importance weights with enumerated discrete latents summed
exactly (beside guide-drawn continuous ones), and IS and AIS of a whole data set's evidence for
global latents, each against a closed form."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_zoo.inference.ais import ais, ais_evidence
from pyro_zoo.inference.importance import estimate_evidence, estimate_log_likelihood

WEIGHTS, LOCS = torch.tensor([0.3, 0.7]), torch.tensor([-2.0, 1.5])


def mixture_model(x):
    """z ~ Categorical(0.3, 0.7) enumerated, h | z ~ N(mu_z, 1), x | h ~ N(h, 1):
    p(x) = sum_z w_z N(x; mu_z, 2)."""
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Categorical(WEIGHTS), infer={"enumerate": "parallel"})
        h = pyro.sample("h", dist.Normal(LOCS[z], 1.0))
        pyro.sample("x", dist.Normal(h, 1.0), obs=x)


def mixture_guide(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("h", dist.Normal(x / 2, 1.0))


def mixture_exact(x):
    components = dist.Normal(LOCS, math.sqrt(2.0)).log_prob(x.unsqueeze(-1)) + WEIGHTS.log()
    return components.logsumexp(-1)


def test_enumerated_sites_are_summed_inside_each_weight():
    """A proposal of h alone, z summed in every weight: IS is within 4 SE of the closed form
    (its bias, about -SE^2 / 2, is below 1e-5 nats here; seeds 0..19 checked)."""
    x = torch.tensor([-3.0, -0.5, 0.0, 2.0, 4.0])
    result = estimate_log_likelihood(mixture_model, mixture_guide, x, 20_000, psis=False, seed=0)
    error = result.log_px - mixture_exact(x)
    assert (error.abs() <= 4 * result.log_px_se + 1e-5).all(), (error, result.log_px_se)


def test_ais_refuses_enumerated_sites_in_one_sentence():
    with pytest.raises(ValueError, match="latent site 'z' is discrete"):
        ais(mixture_model, mixture_guide, torch.zeros(3), num_chains=2, num_steps=2)


def conjugate_model(y):
    """w ~ N(0, 1) global, y_i | w ~ N(w, 1): p(y) = N(y; 0, I + 1 1^T)."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", y.shape[0], dim=-1):
        pyro.sample("y", dist.Normal(w, 1.0), obs=y)


def conjugate_exact(y):
    return dist.MultivariateNormal(torch.zeros_like(y), torch.eye(len(y)) + 1.0).log_prob(y).item()


def test_evidence_with_the_exact_posterior_as_guide_has_no_variance():
    """With q(w) = p(w | y) = N(sum y / (n + 1), 1 / (n + 1)), every weight is log p(y)."""
    y = torch.tensor([0.3, -1.2, 2.0, 0.8])

    def exact_guide(y):
        pyro.sample("w", dist.Normal(y.sum() / (len(y) + 1), (1 / (len(y) + 1)) ** 0.5))

    result = estimate_evidence(conjugate_model, exact_guide, y, 100)
    assert result.log_px.item() == pytest.approx(conjugate_exact(y), abs=1e-5)
    # the delta-method SE is sqrt(sum w^2 - 1/K): float32 rounding of equal weights leaves ~1e-4
    assert result.log_px_se.item() < 1e-3


@pytest.mark.parametrize("seed", range(3))
def test_ais_of_the_evidence_from_the_prior_is_within_its_standard_error(seed):
    """AIS from the prior, 16 chains x 50 steps: -4 SE - 0.01 <= AIS - exact <= 4 SE (a stochastic
    lower bound; on this 1-D posterior its bias is below 0.01 nats; seeds 0..19 checked)."""
    y = torch.tensor([0.3, -1.2, 2.0, 0.8, 1.1, -0.4])
    torch.manual_seed(seed)
    result = ais_evidence(conjugate_model, None, y, num_chains=16, num_steps=50, proposal="prior")
    error, se = result.log_px.item() - conjugate_exact(y), result.log_px_se.item()
    assert -4 * se - 0.01 <= error <= 4 * se, (error, se)
