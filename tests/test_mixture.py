"""Gaussian mixture: exact queries against scikit-learn, SVI fits against EM and the truth.

Independent references: ``sklearn.mixture.GaussianMixture`` (score_samples, predict_proba, EM
fits), ``torch.distributions.MultivariateNormal``, and the generating parameters of the
synthetic data sets. Tolerances for recovered parameters are 4 standard errors from the
observed Fisher information of the mixture likelihood (computed here in float64 with autograd).
"""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture

from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import DataError, get_spec
from pyro_zoo.models.mixture import MIN_SCALE, SPEC, MixtureConfig, MixtureModel, load_data, true_parameters
from tests.conftest import requires_cuda

SKLEARN_TOL = 1e-3  # GaussianMixture's default convergence tolerance (per-point log-lik)


pytestmark = pytest.mark.usefixtures("one_thread")


def _sklearn(x: torch.Tensor, k: int, covariance: str = "full") -> GaussianMixture:
    return GaussianMixture(k, covariance_type=covariance, n_init=3, random_state=0).fit(x.double().numpy())


def _copied(gm: GaussianMixture, covariance: str, dtype=torch.float32) -> MixtureModel:
    k, d = gm.means_.shape
    model = MixtureModel(MixtureConfig(num_components=k, dim=d, covariance=covariance)).to(dtype)
    model.set_parameters(gm.weights_, gm.means_, gm.covariances_)
    return model


def _fitted(name: str, init: str = "kmeans", **train) -> tuple[MixtureModel, torch.Tensor, torch.Tensor]:
    """SVI fit with the spec's settings; from k-means by default, so SVI alone climbs to the optimum."""
    params = true_parameters(name)
    k, d = params["locs"].shape
    x_train = load_data("train", data=name).x
    x_test = load_data("test", data=name).x
    model = SPEC.make(num_components=k, dim=d, init=init)
    settings = {**SPEC.train_settings(), **train}
    fit_model(model, x_train, objective="TraceEnum_ELBO", progress=False, **settings)
    return model, x_train, x_test


def _mixture_log_lik(theta: torch.Tensor, x: torch.Tensor, k: int, d: int) -> torch.Tensor:
    """sum_n log sum_k w_k N(x_n; mu_k, Sigma_k) with theta = (w_1..w_{K-1}, mu, lower(Sigma))."""
    rows, cols = torch.tril_indices(d, d)
    free_w, rest = theta[: k - 1], theta[k - 1:]
    weights = torch.cat([free_w, 1 - free_w.sum(0, keepdim=True)])
    locs = rest[: k * d].reshape(k, d)
    lower = rest[k * d:].reshape(k, -1)
    covs = theta.new_zeros(k, d, d)
    covs[:, rows, cols] = lower
    covs[:, cols, rows] = lower
    log_probs = torch.distributions.MultivariateNormal(locs, covariance_matrix=covs).log_prob(x[:, None])
    return (weights.log() + log_probs).logsumexp(-1).sum()


def _estimates_and_errors(model: MixtureModel, x: torch.Tensor) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fitted (w, mu, Sigma) with standard errors from the inverse observed information."""
    k, d = model.num_components, model.dim
    rows, cols = torch.tril_indices(d, d)
    with torch.no_grad():
        w, mu, sigma = (t.double() for t in (model.weights, model.locs, model.covariances))
    theta = torch.cat([w[:-1], mu.reshape(-1), sigma[:, rows, cols].reshape(-1)])
    x = x.double()
    hessian = torch.autograd.functional.hessian(lambda t: _mixture_log_lik(t, x, k, d), theta)
    cov_theta = torch.linalg.inv(-hessian)
    # w_K = 1 - sum of the others: full vector = A theta + const
    jacobian = torch.eye(theta.numel(), dtype=theta.dtype)
    jacobian = torch.cat([jacobian[: k - 1], -jacobian[: k - 1].sum(0, keepdim=True), jacobian[k - 1:]])
    se = (jacobian @ cov_theta @ jacobian.T).diagonal().sqrt()
    se_w, rest = se[:k], se[k:]
    se_mu = rest[: k * d].reshape(k, d)
    se_sigma = torch.zeros(k, d, d, dtype=se.dtype)
    se_sigma[:, rows, cols] = rest[k * d:].reshape(k, -1)
    se_sigma[:, cols, rows] = rest[k * d:].reshape(k, -1)
    return {
        "weights": (w.numpy(), se_w.numpy()),
        "locs": (mu.numpy(), se_mu.numpy()),
        "covariances": (sigma.numpy(), se_sigma.numpy()),
    }


def _assert_recovers(model: MixtureModel, x: torch.Tensor, name: str) -> None:
    truth = true_parameters(name)
    estimates = _estimates_and_errors(model, x)
    fitted_locs = estimates["locs"][0]
    cost = ((fitted_locs[:, None, :] - truth["locs"][None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    order = rows[np.argsort(cols)]  # fitted component matched to true component j
    for key, (value, se) in estimates.items():
        error = np.abs(value[order] - truth[key])
        assert np.all(error <= 4 * se[order]), (key, error / se[order])


# --- exact queries -----------------------------------------------------------------------------
@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_exact_log_prob_equals_sklearn_score_samples(covariance):
    data = load_data("train", data="synthetic2d")
    x_test = load_data("test", data="synthetic2d").x
    gm = _sklearn(data.x, 3, covariance)
    reference = gm.score_samples(x_test.double().numpy())
    ours32 = _copied(gm, covariance).exact_log_prob(x_test).detach().numpy()
    ours64 = _copied(gm, covariance, torch.float64).exact_log_prob(x_test.double()).detach().numpy()
    np.testing.assert_allclose(ours32, reference, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours64, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_posterior_by_enumeration_equals_sklearn_predict_proba(covariance):
    data = load_data("train", data="synthetic2d")
    x_test = load_data("test", data="synthetic2d").x
    gm = _sklearn(data.x, 3, covariance)
    responsibilities = _copied(gm, covariance).posterior(x_test)
    assert responsibilities.shape == (x_test.shape[0], 3)
    np.testing.assert_allclose(responsibilities.numpy(), gm.predict_proba(x_test.double().numpy()),
                               rtol=0, atol=1e-5)


def test_likelihood_site_matches_torch_multivariate_normal_under_particles_plate():
    gm = _sklearn(load_data("train", data="synthetic2d").x, 3)
    model = _copied(gm, "full")
    x = load_data("test", data="synthetic2d", smoke=True).x
    with pyro.plate("particles", 4, dim=-2):
        trace = poutine.trace(model.model).get_trace(x)
    z = trace.nodes["assignment"]["value"]
    assert z.shape == (4, x.shape[0])
    site = trace.nodes["x"]
    expected = torch.distributions.MultivariateNormal(
        model.locs[z], scale_tril=model.scale_tril[z]).log_prob(x)
    torch.testing.assert_close(site["fn"].log_prob(x), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_collapsed_component_keeps_a_finite_density(covariance):
    model = MixtureModel(MixtureConfig(num_components=2, dim=2, covariance=covariance))
    x = load_data("test", data="synthetic2d", smoke=True).x
    model.initialise(x)
    with torch.no_grad():
        raw = model.unit_scale_tril if covariance == "full" else model.unit_log_scales
        raw.fill_(-200.0)  # exp(-200) underflows to 0 in float32
    diagonal = model.scale_tril.diagonal(dim1=-2, dim2=-1)
    assert torch.all(diagonal >= MIN_SCALE * model.scale * (1 - 1e-6))
    assert torch.isfinite(model.exact_log_prob(x)).all()


@pytest.mark.statistical
def test_sample_moments_match_parameters():
    truth = true_parameters("synthetic2d")
    model = MixtureModel(MixtureConfig(num_components=3, dim=2))
    model.set_parameters(truth["weights"], truth["locs"], truth["covariances"])
    n = 20_000
    draws = model.sample(n).double().numpy()
    assert draws.shape == (n, 2)
    w, mu, sigma = truth["weights"], truth["locs"], truth["covariances"]
    mean = w @ mu
    # Cov[x] = sum_k w_k (Sigma_k + mu_k mu_k^T) - mean mean^T
    total_cov = np.einsum("k,kij->ij", w, sigma + mu[:, :, None] * mu[:, None, :]) - np.outer(mean, mean)
    se = np.sqrt(np.diag(total_cov) / n)
    assert np.all(np.abs(draws.mean(0) - mean) <= 4 * se)


# --- SVI fits ----------------------------------------------------------------------------------
@pytest.mark.statistical
def test_svi_on_synthetic2d_matches_sklearn_and_recovers_truth():
    model, x_train, x_test = _fitted("synthetic2d")
    gm = _sklearn(x_train, 3)
    with torch.no_grad():
        ours_train = model.exact_log_prob(x_train).mean().item()
        ours_test = model.exact_log_prob(x_test).mean().item()
    sk_train = gm.score(x_train.double().numpy())
    sk_test = gm.score(x_test.double().numpy())
    assert ours_train >= sk_train - SKLEARN_TOL
    assert abs(ours_test - sk_test) <= 0.01 * abs(sk_test)
    _assert_recovers(model, x_train, "synthetic2d")


@pytest.mark.statistical
def test_svi_on_cats_recovers_both_components():
    model, x_train, x_test = _fitted("cats")
    gm = _sklearn(x_train, 2)
    with torch.no_grad():
        ours_test = model.exact_log_prob(x_test).mean().item()
    sk_test = gm.score(x_test.double().numpy())
    assert abs(ours_test - sk_test) <= 0.01 * abs(sk_test)
    _assert_recovers(model, x_train, "cats")


@pytest.mark.statistical
def test_em_initialisation_then_svi_matches_sklearn():
    model, x_train, x_test = _fitted("synthetic2d", init="em", steps=50)
    gm = _sklearn(x_train, 3)
    with torch.no_grad():
        ours_train = model.exact_log_prob(x_train).mean().item()
    assert ours_train >= gm.score(x_train.double().numpy()) - SKLEARN_TOL
    _assert_recovers(model, x_train, "synthetic2d")


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_elbo_loss_is_trace_enum_elbo(covariance):
    """The closed-form training loss equals TraceEnum_ELBO's value and gradient (empty guide)."""
    x = load_data("train", data="synthetic2d", smoke=True).x
    model = MixtureModel(MixtureConfig(num_components=3, dim=2, covariance=covariance))
    model.initialise(x)
    ours = model.elbo_loss(x[:50], num_data=200)
    ours_grad = torch.autograd.grad(ours, list(model.parameters()))
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    pyros = elbo.differentiable_loss(model.model, model.guide, x[:50], num_data=200)
    pyros_grad = torch.autograd.grad(pyros, list(model.parameters()))
    torch.testing.assert_close(ours, pyros)
    for a, b in zip(ours_grad, pyros_grad, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_elbo_loss_initialises_on_first_use():
    x = load_data("train", data="cats", smoke=True).x
    model = MixtureModel(MixtureConfig(num_components=2, dim=1))
    assert torch.isfinite(model.elbo_loss(x))
    assert bool(model.initialised)


@pytest.mark.statistical
def test_minibatch_first_use_initialises_and_trains():
    data = load_data("train", data="synthetic2d")
    x_test = load_data("test", data="synthetic2d").x
    model = MixtureModel(MixtureConfig(num_components=3, dim=2))
    assert not bool(model.initialised)
    fit_model(model, data.x, objective="TraceEnum_ELBO", epochs=40, batch_size=250, lr=SPEC.train["lr"],
              progress=False)
    assert bool(model.initialised)
    gm = _sklearn(data.x, 3)
    with torch.no_grad():
        ours_test = model.exact_log_prob(x_test).mean().item()
    sk_test = gm.score(x_test.double().numpy())
    assert abs(ours_test - sk_test) <= 0.01 * abs(sk_test)


@pytest.mark.statistical
def test_initialise_from_small_batch_is_near_truth():
    truth = true_parameters("synthetic2d")
    batch = load_data("train", data="synthetic2d").x[:200]
    model = MixtureModel(MixtureConfig(num_components=3, dim=2))
    model.model(batch, num_data=2000)
    assert bool(model.initialised)
    locs = model.locs.detach().numpy()
    cost = ((locs[:, None, :] - truth["locs"][None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    # each true mean is matched by a k-means cluster mean within 4 standard errors (n_k >= 30)
    se = np.sqrt(np.diagonal(truth["covariances"], axis1=1, axis2=2) / 30)
    assert np.all(np.abs(locs[rows] - truth["locs"][cols]) <= 4 * se[cols])


def test_state_dict_keeps_initialisation():
    gm = _sklearn(load_data("train", data="cats").x, 2)
    source = _copied(gm, "full")
    restored = MixtureModel(MixtureConfig(num_components=2, dim=1))
    restored.load_state_dict(source.state_dict())
    restored.model(load_data("test", data="cats").x)
    torch.testing.assert_close(restored.locs, source.locs)
    torch.testing.assert_close(restored.covariances, source.covariances)


@requires_cuda
@pytest.mark.cuda
def test_cuda_matches_cpu():
    gm = _sklearn(load_data("train", data="synthetic2d").x, 3)
    x = load_data("test", data="synthetic2d").x
    cpu, gpu = _copied(gm, "full"), _copied(gm, "full").cuda()
    torch.testing.assert_close(gpu.exact_log_prob(x.cuda()).cpu(), cpu.exact_log_prob(x), rtol=0, atol=1e-4)
    torch.testing.assert_close(gpu.posterior(x.cuda()).cpu(), cpu.posterior(x), rtol=0, atol=1e-5)
    fresh = MixtureModel(MixtureConfig(num_components=3, dim=2)).cuda()
    fit_model(fresh, x.cuda(), objective="TraceEnum_ELBO", steps=20, lr=SPEC.train["lr"], progress=False)
    assert fresh.sample(10).device.type == "cuda"


# --- data --------------------------------------------------------------------------------------
def test_registry_and_smoke_sizes():
    assert get_spec("mixture") is SPEC
    assert SPEC.objective_for(SPEC.config())["name"] == "TraceEnum_ELBO"
    cats = load_data("train", smoke=True)
    assert cats.x.shape == (200, 1) and cats.y.shape == (200,)
    assert load_data("test", data="synthetic2d").x.shape == (2000, 2)


def test_train_and_test_are_disjoint():
    train = load_data("train", data="synthetic2d").x
    test = load_data("test", data="synthetic2d").x
    assert not (train[:, None, :] == test[None]).all(-1).any()


@pytest.mark.parametrize("header", [True, False])
def test_csv_round_trip(tmp_path, header):
    values = np.random.default_rng(3).normal(size=(50, 3)).astype(np.float32)
    path = tmp_path / "points.csv"
    np.savetxt(path, values, delimiter=",", header="a,b,c" if header else "", comments="")
    train = load_data("train", data=str(path))
    test = load_data("test", data=str(path))
    assert train.x.shape == (40, 3) and test.x.shape == (10, 3)
    both = torch.cat([train.x, test.x]).numpy()
    np.testing.assert_allclose(np.sort(both, axis=0), np.sort(values, axis=0), rtol=1e-6)
    assert not (train.x[:, None, :] == test.x[None]).all(-1).any()


@pytest.mark.parametrize(
    "text, message",
    [("a,b\n1,2\n3,x\n", "non-numeric"), ("1,2\n3,nan\n", "NaN"), ("a,b\n", "no data rows"),
     ("1,2\n3\n", "non-numeric")],
)
def test_csv_errors(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_data("train", data=str(path))


def test_missing_csv_and_unknown_name():
    with pytest.raises(DataError, match="does not exist"):
        load_data("train", data="/nonexistent/points.csv")
    with pytest.raises(DataError, match="unknown data set"):
        load_data("train", data="dogs")


# --- reports -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cats", "synthetic2d"])
def test_figures_and_metrics(tmp_path, name):
    truth = true_parameters(name)
    k, d = truth["locs"].shape
    model = MixtureModel(MixtureConfig(num_components=k, dim=d))
    model.set_parameters(truth["weights"], truth["locs"], truth["covariances"])
    data = load_data("test", data=name, smoke=True)
    paths = SPEC.figures(model, data, tmp_path)
    assert len(paths) == 1 and all(p.stat().st_size > 0 for p in paths.values())
    metrics = model.metrics(data)
    exact = model.exact_log_prob(data.x).mean().item()
    assert metrics["log_lik_per_point"] == pytest.approx(exact)
    assert metrics["assignment_accuracy"] > 0.8
