"""PPCA: exact marginal, posterior and ML fit against scipy / numpy / scikit-learn; SVI vs closed form."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA

from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import get_spec
from pyro_zoo.models.base import DataError, DataSplit
from pyro_zoo.models.ppca import (
    PPCA,
    SPEC,
    PPCAConfig,
    closed_form_ml,
    hparams_for,
    load_data,
    synthetic_parameters,
)
from tests.conftest import SEED


def random_ppca(data_dim=6, latent_dim=2, guide="amortized") -> PPCA:
    model = PPCA(PPCAConfig(data_dim=data_dim, latent_dim=latent_dim, guide=guide)).double()
    with torch.no_grad():
        model.W.copy_(torch.randn(data_dim, latent_dim, dtype=torch.float64))
        model.mu.copy_(torch.randn(data_dim, dtype=torch.float64))
        model.raw_sigma.fill_(np.log(0.4))
    return model


def numpy_params(model):
    return model.W.detach().numpy(), model.mu.detach().numpy(), model.sigma.item()


def log_weights(model, x, num_particles):
    """log p(x, z) - log q(z | x) from Pyro's model/guide traces, shape (num_particles, N)."""
    with torch.no_grad(), pyro.plate("particles", num_particles, dim=-2):
        guide_trace = poutine.trace(model.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    log_joint = model_trace.nodes["z"]["log_prob"] + model_trace.nodes["x"]["log_prob"]
    return log_joint - guide_trace.nodes["z"]["log_prob"]


def num_free_parameters(data_dim, latent_dim):
    # W modulo rotations, mu, sigma
    return data_dim * latent_dim - latent_dim * (latent_dim - 1) // 2 + data_dim + 1


def test_exact_log_prob_equals_scipy_multivariate_normal():
    model = random_ppca()
    w, mu, sigma = numpy_params(model)
    x = torch.randn(50, 6, dtype=torch.float64) * 2
    want = multivariate_normal(mu, w @ w.T + sigma**2 * np.eye(6)).logpdf(x.numpy())
    np.testing.assert_allclose(model.exact_log_prob(x).detach().numpy(), want, rtol=1e-10)


def test_exact_posterior_equals_gaussian_conditioning_of_the_joint():
    # (z, x) ~ N((0, mu), [[I, W^T], [W, W W^T + sigma^2 I]]): z | x has mean W^T C^{-1} (x - mu)
    # and covariance I - W^T C^{-1} W.
    model = random_ppca()
    w, mu, sigma = numpy_params(model)
    x = torch.randn(30, 6, dtype=torch.float64)
    c = w @ w.T + sigma**2 * np.eye(6)
    mean = np.linalg.solve(c, (x.numpy() - mu).T).T @ w
    cov = np.eye(2) - w.T @ np.linalg.solve(c, w)
    posterior = model.exact_posterior(x)
    np.testing.assert_allclose(posterior.loc.detach().numpy(), mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(posterior.covariance_matrix[0].detach().numpy(), cov, rtol=1e-9, atol=1e-12)


def test_exact_guide_gives_constant_importance_weights_equal_to_log_prob():
    model = random_ppca(guide="exact")
    x = torch.randn(25, 6, dtype=torch.float64)
    log_w = log_weights(model, x, num_particles=200)
    assert log_w.shape == (200, 25)
    exact = model.exact_log_prob(x).detach()
    assert (log_w - exact).abs().max() < 1e-10


def test_closed_form_ml_matches_sklearn_pca():
    x = load_data("train").x
    num_data, data_dim = x.shape
    latent_dim = 10
    model = PPCA(PPCAConfig(data_dim=data_dim, latent_dim=latent_dim)).fit_closed_form(x)
    pca = PCA(n_components=latent_dim, svd_solver="full").fit(x.numpy().astype(np.float64))
    # sklearn estimates with 1/(N - 1), the ML solution with 1/N
    ratio = (num_data - 1) / num_data
    np.testing.assert_allclose(model.sigma.item() ** 2, pca.noise_variance_ * ratio, rtol=1e-5)
    w = model.W.detach().double().numpy()
    cov = w @ w.T + model.sigma.item() ** 2 * np.eye(data_dim)
    np.testing.assert_allclose(cov, pca.get_covariance() * ratio, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.mu.detach().numpy(), pca.mean_, atol=1e-6)
    # At the ML solution tr(C^{-1} S) = D, so the sklearn covariance k C (k = N / (N - 1)) scores
    # D / 2 (log k + 1 / k - 1) nats per point less on the training data.
    k = num_data / (num_data - 1)
    with torch.no_grad():
        ours = model.double().exact_log_prob(x.double()).mean().item()
    assert ours - pca.score(x.numpy().astype(np.float64)) == pytest.approx(
        data_dim / 2 * (np.log(k) + 1 / k - 1), abs=1e-6
    )


def test_closed_form_is_a_maximum_and_makes_the_linear_guide_exact():
    x = load_data("train").x.double()
    model = PPCA(PPCAConfig(data_dim=64, latent_dim=10)).double().fit_closed_form(x)
    best = model.exact_log_prob(x).mean()
    with torch.no_grad():
        for name in ("W", "mu", "raw_sigma"):
            parameter = getattr(model, name)
            step = 1e-3 * torch.randn_like(parameter)
            parameter.add_(step)
            assert model.exact_log_prob(x).mean() < best
            parameter.sub_(step)
    log_w = log_weights(model, x[:40], num_particles=50)
    assert (log_w - model.exact_log_prob(x[:40]).detach()).abs().max() < 1e-8


@pytest.mark.statistical
def test_svi_with_amortized_guide_approaches_closed_form_ml(one_thread):
    # Tolerance: Wilks' theorem puts the ML fit k / (2 N) nats per point above the generating
    # parameters on the training set (k free parameters), so an SVI fit within k / (2 N) of the ML
    # log-likelihood is as good an estimate as the statistics of N points can tell apart.
    train, test = load_data("train").x, load_data("test").x
    latent_dim = 5
    tolerance = num_free_parameters(64, latent_dim) / (2 * train.shape[0])
    ml = PPCA(PPCAConfig(latent_dim=latent_dim)).fit_closed_form(train)
    model = PPCA(PPCAConfig(latent_dim=latent_dim))
    fit_model(model, train, steps=300, lr=3e-2, seed=SEED, progress=False)
    with torch.no_grad():
        gap = ml.exact_log_prob(train).mean() - model.exact_log_prob(train).mean()
        held_out = model.exact_log_prob(test) - ml.exact_log_prob(test)
    assert -1e-4 < gap < tolerance, (gap, tolerance)
    se = held_out.std() / held_out.shape[0] ** 0.5
    assert held_out.mean().abs() < tolerance + 4 * se, (held_out.mean(), se, tolerance)


@pytest.mark.slow
@pytest.mark.statistical
def test_default_training_reaches_closed_form_ml_on_digits(one_thread):
    spec = get_spec("ppca")
    train = spec.load_data("train").x
    model = spec.make()
    settings = spec.train_settings()
    fit_model(model, train, steps=settings["steps"], lr=settings["lr"], seed=SEED, progress=False)
    ml = PPCA(PPCAConfig(latent_dim=model.latent_dim)).fit_closed_form(train)
    tolerance = num_free_parameters(64, model.latent_dim) / (2 * train.shape[0])
    with torch.no_grad():
        gap = ml.exact_log_prob(train).mean() - model.exact_log_prob(train).mean()
    assert -1e-4 < gap < tolerance, (gap, tolerance)


def test_model_and_guides_run_under_a_particles_plate():
    x = load_data("test", smoke=True).x
    for guide, guide_hidden in (("amortized", 0), ("amortized", 16), ("exact", 0)):
        model = PPCA(PPCAConfig(latent_dim=3, guide=guide, guide_hidden=guide_hidden))
        log_w = log_weights(model, x, num_particles=4)
        assert log_w.shape == (4, x.shape[0]) and torch.isfinite(log_w).all()
    assert model.sample(5).shape == (5, 64)


def test_load_data_digits_synthetic_and_csv(tmp_path):
    train, test = load_data("train"), load_data("test")
    assert train.x.shape == (1438, 64) and test.x.shape == (359, 64)
    assert train.x.min() >= 0 and train.x.max() <= 1 and train.y.shape == (1438,)
    assert load_data("train", smoke=True).x.shape == (200, 64)
    synthetic = load_data("train", data="synthetic").x
    truth = synthetic_parameters()
    assert synthetic.shape == (2000, 64)
    torch.testing.assert_close(synthetic.mean(0), truth["mu"], atol=0.1, rtol=0)
    path = tmp_path / "rows.csv"
    np.savetxt(path, np.random.default_rng(0).random((20, 3)), delimiter=",")
    rows = load_data("train", data=str(path))
    assert rows.x.shape == (16, 3)
    assert hparams_for(rows) == {"data_dim": 3, "latent_dim": 2}
    assert hparams_for(train) == {"data_dim": 64}
    with pytest.raises(DataError, match="does not exist"):
        load_data("train", data=str(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match="unknown data"):
        load_data("train", data="mnist")


def test_closed_form_rejects_latent_dim_not_below_data_dim():
    with pytest.raises(ValueError, match="latent_dim"):
        closed_form_ml(torch.randn(10, 3), 3)


def test_figures_are_written(tmp_path):
    model = PPCA(PPCAConfig(latent_dim=4)).fit_closed_form(load_data("train", smoke=True).x)
    paths = SPEC.figures(model, load_data("test", smoke=True), tmp_path)
    assert set(paths) == {"digits vs model samples", "eigen-digits"}
    small = PPCA(PPCAConfig(data_dim=3, latent_dim=1))
    paths.update(SPEC.figures(small, load_data("train", data=_csv(tmp_path)), tmp_path / "small"))
    assert all(path.stat().st_size > 0 for path in paths.values())


def _csv(tmp_path):
    path = tmp_path / "three.csv"
    np.savetxt(path, np.random.default_rng(1).random((30, 3)), delimiter=",")
    return str(path)


def test_metrics_report_the_guide_against_the_exact_posterior():
    x = load_data("train", data="synthetic").x
    model = PPCA(PPCAConfig(data_dim=64, latent_dim=10)).fit_closed_form(x)
    assert model.metrics(DataSplit(x[:100]))["posterior_kl_nats"] < 1e-3
    with torch.no_grad():
        model.encoder.bias.add_(0.1)
    # KL between Gaussians with equal covariance: (1/2) d^T Sigma^{-1} d for the mean shift d
    shift = torch.full((10,), 0.1)
    posterior = model.exact_posterior(x[:1])
    expected = 0.5 * shift @ torch.cholesky_inverse(posterior.scale_tril[0]) @ shift
    assert model.metrics(DataSplit(x[:100]))["posterior_kl_nats"] == pytest.approx(expected.item(), rel=1e-3)
