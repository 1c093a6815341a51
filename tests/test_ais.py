"""AIS and BDMC against independent exact answers: DLGM quadrature, PPCA's closed form, a
Gamma-Poisson marginal; tolerances are multiples of the estimators' own standard errors."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints, transform_to

from pyro_zoo.inference.ais import ais, bdmc, beta_schedule, simulate
from pyro_zoo.inference.importance import estimate_log_likelihood
from pyro_zoo.models.dlgm import load_data as dlgm_data
from pyro_zoo.models.dlgm import true_model
from pyro_zoo.models.ppca import PPCA, PPCAConfig
from pyro_zoo.models.ppca import load_data as ppca_data
from tests.conftest import SEED, requires_cuda
from tests.toy import sharp_dlgm

pytestmark = pytest.mark.usefixtures("one_thread")


def gap_in_se(result, exact: torch.Tensor) -> float:
    summary = result.summary()
    return (summary["log_px"] - exact.double().mean().item()) / summary["log_px_se"]


def test_beta_schedules():
    for schedule in ("sigmoid", "linear"):
        beta = beta_schedule(10, schedule)
        assert beta[0] == 0 and beta[-1] == 1 and (beta.diff() > 0).all()
    with pytest.raises(ValueError, match="schedule"):
        beta_schedule(10, "cosine")


@pytest.mark.statistical
@pytest.mark.parametrize("proposal", ["guide", "prior"])
def test_ais_on_dlgm_matches_quadrature(proposal):
    # the guide is untrained, a poor proposal that AIS has to correct
    model = true_model()
    x = dlgm_data("test").x[:200]
    result = ais(model.model, model.guide, x, num_chains=8, num_steps=50, proposal=proposal)
    gap = gap_in_se(result, model.exact_log_prob(x))
    print(f"AIS ({proposal}) - quadrature: {gap:+.2f} SE, acceptance {result.acceptance.mean():.2f}, "
          f"{result.seconds:.1f} s")
    assert abs(gap) < 4
    assert 0.5 < result.acceptance.mean() < 0.8


@pytest.mark.statistical
def test_ais_from_prior_where_importance_sampling_from_prior_fails():
    model = sharp_dlgm(1000, torch.Generator().manual_seed(SEED + 1))
    x = model.sample(20, generator=torch.Generator().manual_seed(SEED + 2))
    exact = model.exact_log_prob(x)
    naive = estimate_log_likelihood(model.model, None, x, 10, iwae_ks=(), psis=False)
    naive_gap = gap_in_se(naive, exact)
    result = ais(model.model, None, x, num_chains=8, num_steps=200, num_leapfrog=3, proposal="prior",
                 pilot_chains=2)
    gap = gap_in_se(result, exact)
    print(f"IS from the prior (K = 10): {naive_gap:+.1f} SE; AIS from the prior: {gap:+.2f} SE "
          f"({result.seconds:.1f} s)")
    # IS from the prior fails: it sits below log p(x) by more than 4 of its own SEs, so its error bar
    # misleads (seeds 0-3 of the sweep: -7.2 SE at worst, about -10 typically; "-10" failed 1 in 4)
    assert naive_gap < -4
    assert abs(gap) < 4


@pytest.mark.statistical
def test_ais_on_ppca_matches_closed_form():
    model = PPCA(PPCAConfig(data_dim=64, latent_dim=10)).eval()
    model.fit_closed_form(ppca_data("train", data="synthetic").x)
    with torch.no_grad():
        # a guide three times too wide and shifted: importance sampling from it is far off
        model.raw_scale_tril.copy_(transform_to(constraints.lower_cholesky).inv(3 * model.scale_tril))
        model.encoder.bias.add_(0.05)
    x = ppca_data("test", data="synthetic").x[:50]
    exact = model.exact_log_prob(x).detach()
    naive = estimate_log_likelihood(model.model, model.guide, x, 16, iwae_ks=(), psis=False)
    naive_gap = gap_in_se(naive, exact)
    result = ais(model.model, model.guide, x, num_chains=8, num_steps=200, num_leapfrog=3, pilot_chains=2)
    gap = gap_in_se(result, exact)
    print(f"PPCA: IS from the widened guide {naive_gap:+.1f} SE, AIS {gap:+.2f} SE ({result.seconds:.1f} s)")
    # IS from the prior fails: it sits below log p(x) by more than 4 of its own SEs, so its error bar
    # misleads (seeds 0-3 of the sweep: -7.2 SE at worst, about -10 typically; "-10" failed 1 in 4)
    assert naive_gap < -4
    assert abs(gap) < 4


def gamma_poisson(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        rate = pyro.sample("rate", dist.Gamma(3.0, 0.5))
        pyro.sample("x", dist.Poisson(rate), obs=x)


@pytest.mark.statistical
def test_constrained_latent_through_its_support_transform():
    x = torch.tensor([0.0, 3.0, 7.0, 15.0])
    # rate ~ Gamma(a, b), x | rate ~ Poisson(rate)  =>  x ~ NegativeBinomial(a, p = 1 / (1 + b))
    exact = dist.NegativeBinomial(3.0, probs=torch.tensor(1 / 1.5)).log_prob(x)
    result = ais(gamma_poisson, None, x, num_chains=16, num_steps=100, proposal="prior")
    gap = gap_in_se(result, exact)
    print(f"Gamma-Poisson: AIS - exact {gap:+.2f} SE")
    assert abs(gap) < 4


@pytest.mark.statistical
def test_bdmc_sandwiches_the_exact_value_and_tightens():
    model = sharp_dlgm(100, torch.Generator().manual_seed(SEED + 1))
    template = torch.zeros(50, 100)
    gaps = []
    for num_steps in (3, 30, 200):
        result = bdmc(model.model, None, template, num_chains=4, num_steps=num_steps, proposal="prior",
                      pilot_chains=2)
        summary = result.summary()
        exact = model.exact_log_prob(result.x).double().mean().item()
        lower = (summary["lower"] - exact) / summary["lower_se"]
        upper = (summary["upper"] - exact) / summary["upper_se"]
        print(f"BDMC T = {num_steps}: lower {lower:+.1f} SE, upper {upper:+.1f} SE, "
              f"gap {summary['gap']:.3f} nats")
        assert lower < 4 and upper > -4
        gaps.append((summary["gap"], math.hypot(summary["lower_se"], summary["upper_se"])))
    (short, short_se), (middle, middle_se), (long, long_se) = gaps
    # the gap shrinks with the path length, until it is closed up to its own noise
    assert short - middle > 4 * math.hypot(short_se, middle_se)
    assert long < middle and abs(long) < 4 * long_se


def test_simulate_returns_data_and_latents():
    model = true_model()
    x, z = simulate(model.model, torch.zeros(7, 2))
    assert x.shape == (7, 2) and set(z) == {"z"} and z["z"].shape == (7, 1)


def test_unsupported_programs_raise_value_errors():
    def discrete(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            k = pyro.sample("k", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(k, 1.0), obs=x)

    def global_latent(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    x = torch.zeros(3)
    with pytest.raises(ValueError, match="discrete"):
        ais(discrete, None, x, 2, 2, proposal="prior")
    with pytest.raises(ValueError, match="outside the 'data' plate"):
        ais(global_latent, None, x, 2, 2, proposal="prior")
    with pytest.raises(ValueError, match="needs a guide"):
        ais(discrete, None, x, 2, 2)


def test_step_size_schedules_replay_and_adaptations():
    model = true_model()
    x = dlgm_data("test").x[:20]
    first = ais(model.model, model.guide, x, num_chains=4, num_steps=20, data_chunk=8)
    assert first.step_sizes.shape == (20, 20) and first.settings["adaptation"] == "pilot"
    again = ais(model.model, model.guide, x, num_chains=4, num_steps=20, adaptation="none",
                step_size=first.step_sizes)
    assert torch.equal(again.step_sizes, first.step_sizes)
    online = ais(model.model, model.guide, x, num_chains=4, num_steps=20, adaptation="online")
    assert not torch.equal(online.step_sizes[1], online.step_sizes[-1])
    with pytest.raises(ValueError, match="adaptation"):
        ais(model.model, model.guide, x, 2, 2, adaptation="dual")


@requires_cuda
def test_ais_on_cuda():
    model = true_model().cuda()
    x = dlgm_data("test").x[:500].cuda()
    result = ais(model.model, model.guide, x, num_chains=16, num_steps=50)
    assert abs(gap_in_se(result, model.exact_log_prob(x).cpu())) < 4
