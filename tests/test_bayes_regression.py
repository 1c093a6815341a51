"""Bayesian linear regression on the diabetes data: AutoMultivariateNormal, NUTS and the exact
conjugate posterior agree; the eval report says why importance sampling does not apply."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyro_zoo.inference.evaluate import NO_IMPORTANCE_SAMPLING, compare_posteriors, evaluate
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import get_spec
from tests.conftest import SEED

#: with a rate decaying 100-fold over these steps the guide's mean is within 0.07 posterior sd of
#: the exact one at each of 20 seeds (ZOO_TEST_SEED 1..20: the guide's loc against m_N); over
#: 2000 steps it was not, 0.63 sd at seed 7: the posterior's ridge (the collinear serum features
#: s1, s2) converges slowly under Adam
STEPS = 4000
#: the guide's optimisation error allowed, in exact posterior sds: the 0.07 above, rounded up
OPTIMISATION_ERROR = 0.1
NUTS_SAMPLES = 200
GUIDE_DRAWS = 4000


@pytest.fixture(scope="module")
def fitted():
    """The model trained on the train split with a learning rate decaying 100-fold (Robbins-Monro),
    and its posterior comparison (guide draws, NUTS, exact) on the same data."""
    torch.manual_seed(SEED)
    spec = get_spec("bayes_regression")
    data = spec.load_data("train")
    model = spec.make()
    inputs = data.inputs(model.inputs)
    fit_model(model, inputs, objective=spec.objective_for(spec.config()), steps=STEPS, lr=0.05,
              lr_decay=lambda step: 0.01 ** (step / STEPS), progress=False)
    return model, data, compare_posteriors(model, inputs, GUIDE_DRAWS, NUTS_SAMPLES)


def test_building_creates_the_guide_parameters_and_shares_none():
    """The guide's parameters exist from the start (a complete state dict) and belong to the model:
    none goes to Pyro's global param store, so two models built one after the other share nothing."""
    spec = get_spec("bayes_regression")
    first, second = spec.make(), spec.make()
    assert set(first.state_dict()) == {"autoguide.loc", "autoguide.scale_unconstrained",
                                       "autoguide.scale_tril_unconstrained"}
    assert first.autoguide.loc.shape == (10,)
    assert not list(pyro.get_param_store().keys())
    assert first.autoguide.loc is not second.autoguide.loc


def test_exact_posterior_is_the_least_squares_limit():
    """Independent check of the closed form: with a flat prior (tau large) the posterior mean is
    the least-squares solution of numpy's lstsq."""
    spec = get_spec("bayes_regression")
    data = spec.load_data("train")
    model = spec.make(prior_scale=1e4)
    posterior = model.exact_global_posterior(*data.inputs(model.inputs))["w"]
    ols = torch.linalg.lstsq(data.x.double(), data.y.double().unsqueeze(-1)).solution.squeeze(-1)
    torch.testing.assert_close(posterior.mean.double(), ols, atol=1e-4, rtol=1e-4)


@pytest.mark.statistical
def test_guide_is_within_a_quarter_posterior_sd_of_the_exact_posterior(fitted):
    """|E_q[w_d] - m_N,d| < sd_N,d / 4 + 4 MCSE: the exact posterior is Gaussian and lies inside the
    full-covariance family, so at the ELBO's optimum q is the posterior and the only error left is
    the stochastic optimiser's (damped by the decaying rate) plus the Monte Carlo error of the
    guide draws; a quarter of a posterior sd is small against the posterior's own spread, so a
    guide that passes is as good as exact for any inference read off it."""
    _, _, comparison = fitted
    for name, row in comparison["table"].items():
        gap = abs(row["guide_mean"] - row["exact_mean"])
        assert gap < row["exact_sd"] / 4 + 4 * row["guide_mcse"], (name, row)
        assert abs(row["guide_sd"] / row["exact_sd"] - 1) < 0.25, (name, row)


@pytest.mark.statistical
def test_nuts_matches_the_exact_posterior(fitted):
    """NUTS means within 4 of their Monte Carlo standard errors (ArviZ's mcse_mean) of the exact ones."""
    _, _, comparison = fitted
    for name, row in comparison["table"].items():
        assert abs(row["nuts_mean"] - row["exact_mean"]) < 4 * row["nuts_mcse"], (name, row)


@pytest.mark.statistical
def test_guide_and_nuts_means_agree(fitted):
    """Guide and NUTS means within 4 combined MC standard errors, sqrt(MCSE_guide^2 + MCSE_nuts^2),
    plus the guide's optimisation error (:data:`OPTIMISATION_ERROR` posterior sds, measured): both
    estimate the same posterior mean (the family holds it exactly), and that error, 0.015 on w[4]
    whose posterior sd is 0.21, is of the size of NUTS's MCSE from 200 draws (0.018)."""
    _, _, comparison = fitted
    for name, row in comparison["table"].items():
        se = math.hypot(row["guide_mcse"], row["nuts_mcse"])
        allowed = 4 * se + OPTIMISATION_ERROR * row["exact_sd"]
        assert abs(row["guide_mean"] - row["nuts_mean"]) < allowed, (name, row)


def test_report_says_why_there_is_no_importance_sampling(fitted, tmp_path):
    model, data, _ = fitted
    test = get_spec("bayes_regression").load_data("test")
    report = evaluate(model, test, num_particles=200, nuts_samples=50, out_dir=tmp_path, progress=False,
                      posterior_data=data)
    assert report["log_px"] == {"value": None, "se": None, "estimator": NO_IMPORTANCE_SAMPLING}
    assert set(report["posterior_comparison"]) == {f"w[{d}]" for d in range(10)}
    assert "diabetes train" in report["posterior_data"]
    table = (tmp_path / "posterior_table.md").read_text()
    assert "NUTS mean ± sd" in table and "exact mean ± sd" in table
    assert (tmp_path / "vi_vs_nuts.png").is_file()
    assert 0 < report["metrics"]["rmse_posterior_mean"]["value"] < 1  # better than predicting the mean
