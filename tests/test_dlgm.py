"""DLGM: quadrature log p(x) and KL(q || p(z|x)) against independent numpy computations, SVI fit."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy.special import expit, logsumexp
from scipy.stats import norm

from pyro_zoo.inference.train import fit_model
from pyro_zoo.models.base import DataError
from pyro_zoo.models.config import HparamError
from pyro_zoo.models.dlgm import (
    DLGM,
    SPEC,
    TRUE_A,
    TRUE_B,
    TRUE_C,
    TRUE_D,
    DLGMConfig,
    load_data,
    true_model,
)
from tests.conftest import SEED


def numpy_log_joint(x, z, a, b, c, d):
    """log N(z; 0, I) + log N(x; sigmoid(A z + c), diag(exp(sigmoid(B z + d)))); x (N, 1, D), z (K, d)."""
    loc = expit(z @ a.T + c)
    scale = np.exp(0.5 * expit(z @ b.T + d))
    return norm.logpdf(z).sum(-1) + norm.logpdf(x, loc, scale).sum(-1)


def seed_params(model):
    return [t.detach().double().numpy() for t in (model.A, model.B, model.c, model.d)]


def two_latent_model():
    model = DLGM(DLGMConfig(latent_dim=2)).double()
    with torch.no_grad():
        model.A.copy_(torch.tensor([[3.0, -2.0], [-1.0, 4.0]]))
        model.B.copy_(torch.tensor([[2.0, 1.0], [0.5, -3.0]]))
        model.c.copy_(torch.tensor([0.2, -0.4]))
        model.d.copy_(torch.tensor([-1.0, 0.5]))
    return model


def test_true_parameters_are_the_documented_constants():
    model = true_model()
    for got, want in zip(seed_params(model), (TRUE_A, TRUE_B, TRUE_C, TRUE_D), strict=True):
        np.testing.assert_array_equal(got, np.array(want))


@pytest.mark.statistical
@pytest.mark.parametrize("latent_dim", [1, 2])
def test_exact_log_prob_matches_brute_force_prior_monte_carlo(latent_dim):
    # p(x) = E_{z ~ N(0, I)} p(x | z), estimated in numpy from 200k prior draws; delta-method SE.
    model = true_model().double() if latent_dim == 1 else two_latent_model()
    x = torch.cat([load_data("test").x[:12].double(), torch.tensor([[4.0, -3.0], [-2.5, 3.5]])])
    z = np.random.default_rng(SEED + 1).standard_normal((200_000, latent_dim))
    log_lik = numpy_log_joint(x.numpy()[:, None, :], z, *seed_params(model)) - norm.logpdf(z).sum(-1)
    weights = np.exp(log_lik - log_lik.max(-1, keepdims=True))
    estimate = np.log(weights.mean(-1)) + log_lik.max(-1)
    standard_error = weights.std(-1) / np.sqrt(weights.shape[-1]) / weights.mean(-1)
    exact = model.exact_log_prob(x).numpy()
    assert np.all(np.abs(exact - estimate) < 4 * standard_error), (exact - estimate) / standard_error


@pytest.mark.parametrize("latent_dim,decoder", [(1, "seed"), (1, "mlp"), (2, "seed"), (2, "mlp")])
def test_quadrature_error_far_below_a_millinat(latent_dim, decoder):
    if decoder == "seed":
        model = true_model() if latent_dim == 1 else two_latent_model().float()
    else:
        model = DLGM(DLGMConfig(latent_dim=latent_dim, decoder="mlp"))
    x = load_data("test").x[:30]
    fine_grid = {1: 6401, 2: 401}[latent_dim]
    default = model.exact_log_prob(x)
    refined = model.exact_log_prob(x, grid_size=fine_grid, z_max=10.0)
    assert (default - refined).abs().max() < 1e-5
    more_nodes = model.elbo_quadrature(x, grid_size={1: 3201, 2: 321}[latent_dim])
    assert (model.elbo_quadrature(x) - more_nodes).abs().max() < 1e-4


def test_decoder_independent_of_z_gives_closed_forms():
    # A = B = 0: p(x) = N(sigmoid(c), diag(exp(sigmoid(d)))) and p(z | x) = N(0, I), so
    # KL(q || p(z|x)) = sum_j [-log s_j + (s_j^2 + m_j^2) / 2 - 1/2].
    model = DLGM(DLGMConfig(latent_dim=2)).double()
    with torch.no_grad():
        model.A.zero_()
        model.B.zero_()
        model.c.copy_(torch.tensor([0.3, -1.2], dtype=torch.float64))
        model.d.copy_(torch.tensor([2.0, -0.7], dtype=torch.float64))
    x = load_data("test").x[:40].double()
    c, d = np.array([0.3, -1.2]), np.array([2.0, -0.7])
    want = norm.logpdf(x.numpy(), expit(c), np.exp(0.5 * expit(d))).sum(-1)
    np.testing.assert_allclose(model.exact_log_prob(x).numpy(), want, rtol=0, atol=1e-10)
    with torch.no_grad():
        m, s = (t.numpy() for t in model.encode(x))
    kl = (-np.log(s) + 0.5 * (s**2 + m**2) - 0.5).sum(-1)
    np.testing.assert_allclose(model.posterior_kl(x).numpy(), kl, rtol=1e-6, atol=1e-9)


def numpy_grid_kl(x, m, s, params):
    """KL(N(m, s^2) || p(z | x)) by a Riemann sum on 40001 nodes over [-10, 10] (d = 1)."""
    z = np.linspace(-10, 10, 40001)[:, None]
    h = z[1, 0] - z[0, 0]
    log_joint = numpy_log_joint(x[:, None, :], z, *params)
    log_posterior = log_joint - (logsumexp(log_joint, axis=-1, keepdims=True) + np.log(h))
    log_q = norm.logpdf(z[:, 0], m[:, None], s[:, None])
    return (np.exp(log_q) * (log_q - log_posterior)).sum(-1) * h, log_posterior, z[:, 0], h


def test_posterior_kl_matches_independent_grid_for_guide_and_gaussian_fit():
    model = true_model().double()
    params = seed_params(model)
    x = load_data("test").x[:25].double()
    with torch.no_grad():
        m, s = (t[:, 0].numpy() for t in model.encode(x))
    want, log_posterior, z, h = numpy_grid_kl(x.numpy(), m, s, params)
    got = model.posterior_kl(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert np.all(got > 0)

    # q = moment-matched Gaussian of the numerically computed posterior
    posterior = np.exp(log_posterior) * h
    fit_mean = (posterior * z).sum(-1)
    fit_sd = np.sqrt((posterior * (z - fit_mean[:, None]) ** 2).sum(-1))
    model.encode = lambda x: (torch.tensor(fit_mean)[:, None], torch.tensor(fit_sd)[:, None])
    want_fit, *_ = numpy_grid_kl(x.numpy(), fit_mean, fit_sd, params)
    got_fit = model.posterior_kl(x).numpy()
    np.testing.assert_allclose(got_fit, want_fit, rtol=1e-4, atol=1e-7)
    assert np.all(got_fit >= 0)
    assert np.all(got_fit < got)


@pytest.mark.statistical
def test_log_prob_minus_monte_carlo_elbo_is_posterior_kl():
    # ELBO_MC from Pyro's own model/guide traces under a particles plate, 4000 guide draws per x.
    model = DLGM(DLGMConfig(latent_dim=1))
    x = load_data("test").x[:20]
    num_particles = 4000
    with torch.no_grad(), pyro.plate("particles", num_particles, dim=-2):
        guide_trace = poutine.trace(model.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    log_w = model_trace.nodes["z"]["log_prob"] + model_trace.nodes["x"]["log_prob"]
    log_w = log_w - guide_trace.nodes["z"]["log_prob"]
    assert log_w.shape == (num_particles, 20)
    elbo_mc = log_w.double().mean(0)
    standard_error = log_w.double().std(0) / num_particles**0.5
    gap = model.exact_log_prob(x).double() - elbo_mc
    kl = model.posterior_kl(x).double()
    assert torch.all((gap - kl).abs() < 4 * standard_error), ((gap - kl) / standard_error)


def test_config_refuses_three_latent_dimensions():
    """Quadrature over z needs latent_dim <= 2, so the config refuses 3 and every DLGM is exact."""
    assert DLGM(DLGMConfig(latent_dim=2)).capabilities.exact_log_prob
    with pytest.raises(HparamError, match="latent_dim must be a whole number >= 1 and <= 2"):
        DLGMConfig(latent_dim=3)


@pytest.mark.statistical
def test_svi_training_approaches_the_true_models_exact_log_likelihood(one_thread):
    # held out: 20000 fresh draws from the true model (seed 7), so SEs of mean differences are ~5e-4
    held_out = true_model().sample(20_000, generator=torch.Generator().manual_seed(SEED + 7))
    truth = true_model().exact_log_prob(held_out).double()
    model = DLGM(DLGMConfig(latent_dim=1))
    before = model.exact_log_prob(held_out).double()
    train = load_data("train").x
    fit_model(model, train, steps=400, lr=3e-2, seed=SEED, progress=False)
    after = model.exact_log_prob(held_out).double()
    gain, gap = after - before, after - truth
    assert gain.mean() > 4 * gain.std() / len(gain) ** 0.5
    # The fit may trail the truth on new data by (i) the KL(q || p(z|x)) that the ELBO leaves and
    # (ii) the estimation error of 8 parameters from N = 2000 points, about 8 / (2 N) nats (AIC).
    se_gap = gap.std() / len(gap) ** 0.5
    slack = model.posterior_kl(held_out).double().mean() + 8 / (2 * train.shape[0])
    assert -4 * se_gap - slack < gap.mean() < 4 * se_gap, (gap.mean(), se_gap, slack)


def test_model_runs_under_a_particles_plate_and_samples_have_data_shape():
    model = DLGM(DLGMConfig(latent_dim=2, decoder="mlp"))
    x = load_data("test", smoke=True).x
    with pyro.plate("particles", 3, dim=-2):
        guide_trace = poutine.trace(model.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    assert model_trace.nodes["z"]["value"].shape == (3, x.shape[0], 2)
    assert model_trace.log_prob_sum().isfinite()
    assert model.sample(7).shape == (7, 2)


def test_load_data_csv_and_errors(tmp_path):
    path = tmp_path / "points.csv"
    np.savetxt(path, np.arange(20.0).reshape(10, 2), delimiter=",", header="a,b", comments="")
    train, test = load_data("train", data=str(path)), load_data("test", data=str(path))
    assert train.x.shape == (8, 2) and test.x.shape == (2, 2)
    assert sorted(torch.cat([train.x, test.x])[:, 0].tolist()) == list(np.arange(0.0, 20.0, 2.0))
    with pytest.raises(DataError, match="does not exist"):
        load_data("train", data=str(tmp_path / "missing.csv"))
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    with pytest.raises(DataError, match="numeric"):
        load_data("train", data=str(tmp_path / "bad.csv"))
    assert load_data("train", smoke=True).x.shape == (256, 2)


def test_figures_are_written(tmp_path):
    model = true_model()
    paths = SPEC.figures(model, load_data("test", smoke=True), tmp_path)
    assert set(paths) == {"data vs model samples", "posterior vs guide"}
    assert all(path.stat().st_size > 0 for path in paths.values())
