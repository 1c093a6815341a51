"""Plain Pyro programs, as Pyro's tutorials write them, trained and judged by the zoo.

Program kinds: module-level functions with ``pyro.param`` and ``pyro.module``, a ``PyroModule``,
each AutoGuide, a model conditioned on inputs (log p(x | y)) and a model with global latents.
For each: ``fit``, a checkpoint that ``resume`` continues bit for bit, and a score (importance
sampling for per-data-point latents, ArviZ for global ones).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import autoguide
from pyro.nn import PyroModule, PyroParam
from torch import nn
from torch.distributions import constraints

from pyro_zoo.inference.arviz_io import from_guide
from pyro_zoo.inference.importance import estimate_log_likelihood
from pyro_zoo.inference.train import fit
from pyro_zoo.models import DATA_PLATE
from tests.conftest import SEED, agrees_as_lower_bound, log_mean_bias

# --- a conditional linear-Gaussian model as plain functions ------------------------------------
#   z_n ~ N(0, 1),  x_n | y_n, z_n ~ N(w y_n + c z_n, s)   =>   x_n | y_n ~ N(w y_n, sqrt(c^2 + s^2))


def conditional_model(x, y):
    w = pyro.param("w", torch.tensor(0.0))
    c = pyro.param("c", torch.tensor(1.0))
    s = pyro.param("s", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate(DATA_PLATE, x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(w * y + c * z, s), obs=x)


def conditional_guide(x, y):
    a = pyro.param("a", torch.tensor(0.0))
    b = pyro.param("b", torch.tensor(0.0))
    scale = pyro.param("q_scale", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate(DATA_PLATE, x.shape[0]):
        pyro.sample("z", dist.Normal(a * x + b * y, scale))


def exact_conditional_log_prob(x, y):
    store = pyro.get_param_store()
    w, c, s = store["w"].detach(), store["c"].detach(), store["s"].detach()
    return dist.Normal(w * y, (c**2 + s**2).sqrt()).log_prob(x)


def conditional_data(n=400, seed=SEED):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, generator=g)
    x = 1.5 * y + 0.8 * torch.randn(n, generator=g) + 0.6 * torch.randn(n, generator=g)
    return x, y


@pytest.mark.statistical
def test_conditional_functions_train_and_is_matches_closed_form():
    x, y = conditional_data()
    result = fit(conditional_model, conditional_guide, (x, y), steps=300, lr=0.05, batch_size=100,
                 progress=False)
    assert result.losses[-1] < result.losses[0]
    with pyro.get_param_store().scope(result.param_state):
        assert abs(pyro.param("w").item() - 1.5) < 0.2  # the regression slope, SE ~ 0.05 at N = 400
        estimate = estimate_log_likelihood(conditional_model, conditional_guide, (x, y), 2000, psis=False)
        exact = exact_conditional_log_prob(x, y).double()
    gap = estimate.log_px.double().mean() - exact.mean()
    se = estimate.log_px_se.double().square().sum().sqrt() / len(x)
    assert agrees_as_lower_bound(gap, 0.0, se, log_mean_bias(se, len(x)), rounding=1e-6), (gap, se)


def test_param_store_is_scoped_per_run():
    """Two programs using the same param name with different shapes train in one process."""

    def model_a(x):
        loc = pyro.param("loc", torch.zeros(3))
        with pyro.plate(DATA_PLATE, x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def model_b(x):
        loc = pyro.param("loc", torch.zeros(2))
        with pyro.plate(DATA_PLATE, x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def empty_guide(x):
        pass

    first = fit(model_a, empty_guide, torch.ones(10, 3), steps=5, lr=0.1, progress=False)
    second = fit(model_b, empty_guide, torch.ones(10, 2), steps=5, lr=0.1, progress=False)
    assert first.param_state["params"]["loc"].shape == (3,)
    assert second.param_state["params"]["loc"].shape == (2,)
    assert pyro.get_param_store()["loc"].shape == (2,)  # the latest run is left in the global store


# --- pyro.module: a decoder network registered from a plain function ---------------------------


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(1, 2)

    def forward(self, z):
        return self.net(z.unsqueeze(-1))


DECODER = Decoder()


def module_model(x):
    pyro.module("decoder", DECODER)
    with pyro.plate(DATA_PLATE, x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(DECODER(z), 0.5).to_event(1), obs=x)


def module_guide(x):
    weight = pyro.param("enc_w", torch.zeros(2))
    scale = pyro.param("enc_scale", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate(DATA_PLATE, x.shape[0]):
        pyro.sample("z", dist.Normal(x @ weight, scale))


# --- a PyroModule model with per-data-point latents, and AutoGuides over global latents --------


class LocalGaussian(PyroModule):
    """z_n ~ N(0, 1), x_n ~ N(m + z_n, s): a PyroModule with constrained PyroParams."""

    def __init__(self):
        super().__init__()
        self.m = PyroParam(torch.tensor(0.0))
        self.s = PyroParam(torch.tensor(1.0), constraint=constraints.positive)

    def forward(self, x):
        with pyro.plate(DATA_PLATE, x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(self.m + z, self.s), obs=x)


def regression_model(features, y):
    """Bayesian linear regression: w ~ N(0, I), y_n ~ N(features_n . w, 0.5); conjugate."""
    w = pyro.sample("w", dist.Normal(torch.zeros(features.shape[1]), 1.0).to_event(1))
    with pyro.plate(DATA_PLATE, features.shape[0]):
        pyro.sample("y", dist.Normal((features * w).sum(-1), 0.5), obs=y)


def regression_data(n=60, seed=SEED):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 2, generator=g)
    y = features @ torch.tensor([1.0, -0.5]) + 0.5 * torch.randn(n, generator=g)
    return features, y


def exact_regression_posterior(features, y):
    precision = torch.eye(2) + features.T @ features / 0.25
    cov = torch.linalg.inv(precision)
    return cov @ features.T @ y / 0.25, cov.diagonal().sqrt()


AUTOGUIDES = ["AutoNormal", "AutoDiagonalNormal", "AutoLowRankMultivariateNormal", "AutoIAFNormal",
              "AutoDelta"]


def make_program(kind: str):
    """(model, guide, data, steps, lr) for each program kind of the module docstring."""
    if kind == "functions+param":
        return conditional_model, conditional_guide, conditional_data(64), 30, 0.05
    if kind == "functions+module":
        torch.manual_seed(SEED)
        DECODER.net.reset_parameters()  # the module lives at module level, as in Pyro's tutorials
        return module_model, module_guide, torch.randn(64, 2), 30, 0.05
    if kind == "PyroModule":
        model = LocalGaussian()
        x = torch.randn(64, generator=torch.Generator().manual_seed(SEED + 1)) + 2.0
        return model, autoguide.AutoNormal(model), x, 30, 0.05
    guide_class = getattr(autoguide, kind)
    options = {"hidden_dim": [8]} if kind == "AutoIAFNormal" else {}
    if kind == "AutoLowRankMultivariateNormal":
        options = {"rank": 1}
    return regression_model, guide_class(regression_model, **options), regression_data(), 30, 0.05


KINDS = ["functions+param", "functions+module", "PyroModule", *AUTOGUIDES]


def _new_program(kind):
    pyro.clear_param_store()
    return make_program(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(kind, tmp_path):
    """16 steps straight vs 7 steps, a checkpoint, a fresh program object and a resume to 16,
    batch 16 of 64 (so it stops mid-epoch): identical losses and parameters."""
    model, guide, data, _, lr = _new_program(kind)
    straight = fit(model, guide, data, steps=16, lr=lr, batch_size=16, seed=3, progress=False, log_every=1)
    model, guide, data, _, lr = _new_program(kind)
    ckpt = tmp_path / "ckpt.pt"
    fit(model, guide, data, steps=7, lr=lr, batch_size=16, seed=3, progress=False, log_every=1,
        checkpoint=ckpt, checkpoint_seconds=0)
    model, guide, data, _, lr = _new_program(kind)
    resumed = fit(model, guide, data, steps=16, lr=lr, batch_size=16, seed=3, progress=False, log_every=1,
                  checkpoint=ckpt, resume=True)
    assert resumed.losses == straight.losses
    a, b = straight.param_state["params"], resumed.param_state["params"]
    assert sorted(a) == sorted(b) and a
    for name in a:
        assert torch.equal(a[name], b[name]), name


def exact_marginal_log_prob(kind: str, model, data) -> torch.Tensor:
    """log p(x) (log p(x | y) for the conditional model) in closed form, shape (N,), under the
    current parameters: every local-latent program here is linear-Gaussian in z ~ N(0, 1)."""
    with torch.no_grad():
        if kind == "functions+param":
            return exact_conditional_log_prob(*data)
        if kind == "functions+module":  # x = W z + b + N(0, 0.5^2 I)
            weight, bias = DECODER.net.weight, DECODER.net.bias
            cov = weight @ weight.T + 0.25 * torch.eye(2)
            return dist.MultivariateNormal(bias, cov).log_prob(data)
        return dist.Normal(model.m, (1 + model.s**2).sqrt()).log_prob(data)  # x = m + z + N(0, s^2)


@pytest.mark.statistical
@pytest.mark.parametrize("kind", ["functions+param", "functions+module", "PyroModule"])
def test_local_latent_programs_are_scored_by_importance_sampling(kind):
    """IS with the trained guide agrees with each program's closed-form log p(x) within 4 SE, beyond
    its known bias (a stochastic lower bound; :func:`tests.conftest.log_mean_bias`)."""
    model, guide, data, _, lr = _new_program(kind)
    result = fit(model, guide, data, steps=300, lr=lr, progress=False)
    with pyro.get_param_store().scope(result.param_state):
        estimate = estimate_log_likelihood(model, guide, data, 1000, psis=False)
        exact = exact_marginal_log_prob(kind, model, data).double()
    assert estimate.log_px.shape == (64,) and torch.isfinite(estimate.log_px).all()
    gap = estimate.log_px.double().mean() - exact.mean()
    se = estimate.log_px_se.double().square().sum().sqrt() / 64
    agrees = agrees_as_lower_bound(gap, 0.0, se, log_mean_bias(se, 64), rounding=1e-6)
    assert agrees, (kind, gap.item(), se.item())


@pytest.mark.statistical
@pytest.mark.parametrize("kind", AUTOGUIDES)
def test_autoguides_reach_the_conjugate_posterior_and_convert_to_arviz(kind):
    """The guide's posterior mean of w is within a quarter posterior sd of the exact one (the
    Gaussian family and AutoDelta's MAP hold it exactly; the rest is optimisation noise, damped by
    a learning rate decaying 100-fold, as Robbins-Monro asks);
    importance sampling refuses the global latent with a sentence that says what to do."""
    model, guide, data, _, _ = _new_program(kind)
    steps = 1500
    fit(model, guide, data, steps=steps, lr=0.05, lr_decay=lambda step: 0.01 ** (step / steps),
        progress=False)
    mean, sd = exact_regression_posterior(*data)
    draws = 1 if kind == "AutoDelta" else 2000
    idata = from_guide(model, guide, data, draws)
    guide_mean = torch.as_tensor(idata.posterior["w"].values.reshape(-1, 2).mean(0), dtype=torch.float32)
    mc_se = sd / math.sqrt(draws)
    assert ((guide_mean - mean).abs() < 0.25 * sd + 4 * mc_se).all(), (kind, guide_mean, mean, sd)
    assert idata.log_likelihood["x"].shape == (1, draws, 60)
    with pytest.raises(ValueError, match="ArviZ"):
        estimate_log_likelihood(model, guide, data, 10)
