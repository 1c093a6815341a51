"""Tests of the two-stochastic-layer VAE (models/hvae/): the torch weights and fast path against
Pyro's traces and objectives on the same draws, log p(x) of a tiny model by quadrature over
(z1, z2) against importance sampling and AIS, training, and bad input."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from torch.distributions import Normal

from pyro_zoo.cli import main
from pyro_zoo.inference.ais import ais
from pyro_zoo.inference.importance import estimate_log_likelihood, log_weights
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import DataError
from pyro_zoo.models.hvae import HVAE, SPEC, HVAEConfig, hparams_for, load_data
from tests.test_arm import independent_pixels_nll


@pytest.fixture(scope="module")
def grey():
    return load_data("train"), load_data("test")


def smoke_hvae(data, **overrides) -> HVAE:
    return SPEC.build(SPEC.resolve(smoke=True, data=data, overrides=overrides))


@pytest.mark.parametrize("k", [1, 5])
def test_torch_weights_are_pyros_on_the_same_draws(grey, k):
    """log w from :meth:`HVAE.log_weights` = log p(x, z1, z2) - log q(z1, z2 | x) read from Pyro's
    model and guide traces (pyro_zoo.inference.importance.log_weights), same seed, same draws."""
    x = grey[1].x[:30]
    hvae = smoke_hvae(grey[0])
    pyro.set_rng_seed(3)
    ours = hvae.log_weights(x, k)
    pyro.set_rng_seed(3)
    pyros = log_weights(hvae.model, hvae.guide, x, k)
    torch.testing.assert_close(ours, pyros, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("train_samples", [1, 4])
def test_fast_path_is_the_pyro_objective(grey, train_samples):
    """elbo_loss on the same draws as the spec's Pyro objective: Trace_ELBO (k = 1; value and gradient,
    under a minibatch scale) or RenyiELBO(alpha = 0, k vectorised particles; value, on the whole batch).
    Pyro's RenyiELBO scales each log-weight before its log-mean-exp, log mean_i w_i^s, which under a
    minibatch scale s = N / B is not s times the IWAE bound (the fast path's s log mean_i w_i); and
    its loss_and_grads back-propagates only when the traces hold param sites, which the zoo's
    modules do not register."""
    x = grey[1].x[:30]
    hvae = smoke_hvae(grey[0], train_samples=train_samples)
    assert SPEC.objective(hvae.config)["name"] == ("Trace_ELBO" if train_samples == 1 else "RenyiELBO")
    if train_samples > 1:
        renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True, max_plate_nesting=1)
        pyro.set_rng_seed(4)
        ours = hvae.elbo_loss(x)
        pyro.set_rng_seed(4)
        assert ours.item() == pytest.approx(renyi.loss(hvae.model, hvae.guide, x), rel=1e-5)
        return
    pyro.set_rng_seed(4)
    ours = hvae.elbo_loss(x, num_data=60)
    ours_grad = torch.autograd.grad(ours, list(hvae.parameters()))
    pyro.set_rng_seed(4)
    trace_elbo = pyro.infer.Trace_ELBO(max_plate_nesting=1)
    pyros = trace_elbo.differentiable_loss(hvae.model, hvae.guide, x, num_data=60)
    pyros_grad = torch.autograd.grad(pyros, list(hvae.parameters()))
    torch.testing.assert_close(ours, pyros, rtol=1e-5, atol=1e-2)
    for a, b in zip(ours_grad, pyros_grad, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def tiny_hvae() -> HVAE:
    """2 pixels with 3 grey levels, z1 and z2 of one unit each (built from a fixed seed without
    touching the global random state, which the checks' draws use)."""
    config = HVAEConfig(data_dim=2, hidden1=(8,), z1_dim=1, hidden2=(8,), z2_dim=1, likelihood="categorical",
                        levels=3)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return HVAE(config).double()


def quadrature_log_px(hvae: HVAE, x: torch.Tensor, cells: int = 600) -> torch.Tensor:
    """log p(x) = log int int p(z2) p(z1 | z2) p(x | z1) dz1 dz2 by the midpoint rule on [-9, 9]^2."""
    width = 18 / cells
    ticks = torch.linspace(-9 + width / 2, 9 - width / 2, cells, dtype=torch.float64)
    z2, z1 = ticks[:, None, None].expand(cells, cells, 1), ticks[None, :, None].expand(cells, cells, 1)
    with torch.no_grad():
        log_prior = Normal(0.0, 1.0).log_prob(z2[..., 0]) + Normal(*hvae.prior1(z2)).log_prob(z1)[..., 0]
        logits = hvae.pixels.logits(hvae.decoder(ticks[:, None]))  # (cells of z1, D, L)
        log_lik = hvae.pixels.distribution(logits[:, None]).log_prob(x)  # (cells of z1, N)
    return (log_prior[..., None] + log_lik[None]).logsumexp((0, 1)) + 2 * math.log(width)


def test_tiny_model_by_quadrature_against_is_and_ais():
    """Quadrature over (z1, z2): the 9 images' probabilities sum to 1. Importance sampling from the
    prior (weights p(x | z1) <= 1, K = 20,000) matches it within 4 SE; with the guide as proposal,
    and AIS (16 chains x 100 steps), both stochastic lower bounds: no image above it by 4 SE, and
    their mean over the images within 4 SE plus 0.02 nats of it."""
    hvae = tiny_hvae()
    images = torch.cartesian_prod(*[torch.arange(3, dtype=torch.float64)] * 2)
    exact = quadrature_log_px(hvae, images)
    assert exact.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    prior = estimate_log_likelihood(hvae.model, None, images, 20_000, iwae_ks=(1,), psis=False)
    assert ((prior.log_px - exact).abs() <= 4 * prior.log_px_se + 1e-4).all(), (prior.log_px, exact)
    guided = estimate_log_likelihood(hvae.model, hvae.guide, images, 20_000, iwae_ks=(1,), psis=False)
    annealed = ais(hvae.model, hvae.guide, images, num_chains=16, num_steps=100)
    rungs = ((guided.log_px, guided.log_px_se), (annealed.log_px.double(), annealed.log_px_se.double()))
    for log_px, se in rungs:
        assert (log_px <= exact + 4 * se).all(), (log_px, exact, se)
        assert (exact - log_px).mean() <= 4 * se.square().sum().sqrt() / len(se) + 0.02, (log_px, exact, se)
    assert (exact - guided.iwae[1]).mean() > 0.05  # the guide is not the posterior: the ELBO has a gap


def test_training_beats_independent_pixels(grey, one_thread):
    """After 20 epochs on Tomczak's 1,000 training digits the importance-sampled test log p(x) (a
    stochastic lower bound) is above independent categorical pixels' (106.5 nats)."""
    train, test = grey
    hvae = smoke_hvae(train)
    assert hparams_for(train) == {"data_dim": 64, "likelihood": "categorical", "levels": 17}
    fit_model(hvae, train.x, epochs=20, batch_size=64, lr=3e-3, progress=False, fast=True)
    estimate = estimate_log_likelihood(hvae.model, hvae.guide, test.x, 200).summary()
    assert estimate["log_px"] > -independent_pixels_nll(train.x, test.x, 17)


def test_bad_data_is_refused(grey, tmp_path, capsys):
    with pytest.raises(DataError, match="rescale"):
        smoke_hvae(grey[0], likelihood="bernoulli").check_data(grey[0].x)
    out = tmp_path / "run"
    argv = ["train", "hvae", "--smoke", "--set", "likelihood=bernoulli", "--out", str(out), "--no-progress"]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Bernoulli likelihood takes pixel values in [0, 1]" in err[0], err
    assert not out.exists()


def test_cli_trains_the_iwae_bound(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "hvae", "--smoke", "--epochs", "1", "--set", "train_samples=3", "--out", str(out),
                 "--no-progress", "--json"]) == 0
    metrics = capsys.readouterr().out.strip().splitlines()[-1]
    assert "IWAE-3 (RenyiELBO)" in metrics and "active_units_z1" in metrics
    assert (out / "hvae_samples.png").is_file() and (out / "hvae_reconstructions.png").is_file()
