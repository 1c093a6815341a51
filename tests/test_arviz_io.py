"""ArviZ conversion (inference/arviz_io.py) on a conjugate Dirichlet-Categorical model.

a_n ~ Categorical(pi), b_n | a_n ~ Categorical(theta_{a_n}), with pi ~ Dirichlet(1, 1) and
each row theta_a ~ Dirichlet(1, 1, 1): the posterior is pi ~ Dirichlet(1 + n_a) and
theta_a ~ Dirichlet(1 + n_ab), so every posterior mean and standard deviation is known.
Sample means are compared with them at 4 standard errors, sd / sqrt(draws) for independent
guide draws and sd / sqrt(ESS) for NUTS.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

from pyro_zoo.inference.arviz_io import (
    from_guide,
    from_nuts,
    plot_vi_vs_nuts,
    pointwise_log_likelihood,
    summary,
)
from pyro_zoo.models.base import DATA_PLATE
from pyro_zoo.models.student import VARIABLES, StudentConfig, StudentNetwork, joint_table, load_data
from tests.conftest import SEED

X = torch.tensor([[0, 0]] * 6 + [[0, 1]] * 3 + [[0, 2]] * 1 + [[1, 0]] * 2 + [[1, 2]] * 8)
PRIOR = 1.0


def conjugate_model(x):
    pi = pyro.sample("pi", dist.Dirichlet(torch.full((2,), PRIOR)))
    theta = pyro.sample("theta", dist.Dirichlet(torch.full((2, 3), PRIOR)).to_event(1))
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        a = pyro.sample("a", dist.Categorical(pi), obs=x[:, 0])
        pyro.sample("b", dist.Categorical(Vindex(theta)[..., a, :]), obs=x[:, 1])


def posterior_concentration(x):
    counts = torch.zeros(2, 3).index_put_((x[:, 0], x[:, 1]), torch.ones(len(x)), accumulate=True)
    return {"pi": PRIOR + counts.sum(1), "theta": PRIOR + counts}


def exact_posterior_guide(x):
    alpha = posterior_concentration(x)
    pyro.sample("pi", dist.Dirichlet(alpha["pi"]))
    pyro.sample("theta", dist.Dirichlet(alpha["theta"]).to_event(1))


def dirichlet_moments(alpha):
    total = alpha.sum(-1, keepdim=True)
    mean = alpha / total
    return mean, (mean * (1 - mean) / (total + 1)).sqrt()


def direct_log_likelihood(pi, theta, x):
    """log pi[a_n] + log theta[a_n, b_n] for draws pi (S, 2), theta (S, 2, 3) -> (S, N)."""
    return pi[:, x[:, 0]].log() + theta[:, x[:, 0], x[:, 1]].log()


def test_from_guide_groups_shapes_and_values():
    idata = from_guide(conjugate_model, exact_posterior_guide, X, 400)
    assert set(idata.groups()) == {"posterior", "log_likelihood", "observed_data"}
    assert idata.posterior["pi"].shape == (1, 400, 2)
    assert idata.posterior["theta"].shape == (1, 400, 2, 3)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "data")
    assert idata.log_likelihood["x"].shape == (1, 400, len(X))
    assert idata.observed_data["x"].shape == (len(X), 2)
    np.testing.assert_array_equal(idata.observed_data["x"].values, X.numpy())
    pi = torch.as_tensor(idata.posterior["pi"].values[0])
    theta = torch.as_tensor(idata.posterior["theta"].values[0])
    torch.testing.assert_close(pi.sum(-1), torch.ones(400))
    expected = direct_log_likelihood(pi, theta, X)
    torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["x"].values[0]), expected)


@pytest.mark.statistical
def test_from_guide_posterior_mean_matches_exact():
    draws = 4000
    idata = from_guide(conjugate_model, exact_posterior_guide, X, draws, log_likelihood=False)
    for name, alpha in posterior_concentration(X).items():
        mean, sd = dirichlet_moments(alpha)
        sample_mean = torch.as_tensor(idata.posterior[name].values).mean((0, 1))
        assert bool(((sample_mean - mean).abs() < 4 * sd / draws**0.5).all()), name


@pytest.mark.statistical
def test_nuts_matches_exact_posterior(tmp_path):
    idata = from_nuts(conjugate_model, X, num_samples=300, warmup=200, seed=SEED)
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(idata.groups())
    assert idata.posterior["theta"].shape == (1, 300, 2, 3)
    assert idata.log_likelihood["x"].shape == (1, 300, len(X))
    table = summary(idata)
    for name, alpha in posterior_concentration(X).items():
        mean, sd = dirichlet_moments(alpha)
        draws = torch.as_tensor(idata.posterior[name].values[0])
        ess = torch.tensor([table.loc[f"{name}[{', '.join(map(str, i))}]", "ess_bulk"]
                            for i in np.ndindex(*mean.shape)]).reshape(mean.shape)
        assert bool(((draws.mean(0) - mean).abs() < 4 * sd / ess.sqrt()).all()), name
    pi = torch.as_tensor(idata.posterior["pi"].values[0])
    theta = torch.as_tensor(idata.posterior["theta"].values[0])
    torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["x"].values[0]),
                               direct_log_likelihood(pi, theta, X))
    vi = from_guide(conjugate_model, exact_posterior_guide, X, 300)
    path = plot_vi_vs_nuts(vi, idata, tmp_path / "vi_vs_nuts.png")
    assert path.stat().st_size > 10_000


def local_model(x):
    with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=x)


def test_errors_name_the_problem():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="no global latent"):
        from_guide(local_model, local_model, x, 10)
    with pytest.raises(ValueError, match="per-row latent"):
        pointwise_log_likelihood(local_model, x, {})


def test_student_log_likelihood_is_the_joint_table():
    # fully observed rows: the obs_mask latents are all masked out and must contribute nothing
    model = StudentNetwork(StudentConfig(init="truth"))
    x = load_data("test", smoke=True).x[:50]
    idata = from_guide(model.model, model.guide, x, 20)
    assert idata.posterior["p_G"].shape == (1, 20, 2, 2, 3)
    log_lik = torch.as_tensor(idata.log_likelihood["x"].values[0]).double()
    for s in range(20):
        cpds = {name: torch.as_tensor(idata.posterior[f"p_{name}"].values[0, s]) for name in VARIABLES}
        expected = joint_table(cpds)[tuple(x.T)].log()
        torch.testing.assert_close(log_lik[s], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="per-row latent"):
        from_guide(model.model, model.guide, torch.tensor([[-1, 0, 0, 1, 1]]), 5)


@pytest.mark.slow
@pytest.mark.statistical
def test_student_nuts_matches_dirichlet_posterior():
    model = StudentNetwork(StudentConfig(prior_concentration=1.0))
    x = load_data("test", smoke=True).x[:200]
    idata = from_nuts(model.model, x, num_samples=200, warmup=150, seed=SEED)
    table = summary(idata)
    d_counts = torch.bincount(x[:, 0], minlength=2).double()
    alpha = 1.0 + d_counts
    mean, sd = dirichlet_moments(alpha)
    for i in range(2):
        row = table.loc[f"p_D[{i}]"]
        assert abs(row["mean"] - mean[i].item()) < 4 * sd[i].item() / row["ess_bulk"] ** 0.5
