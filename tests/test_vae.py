"""Tests of the VAE (models/vae.py) and the image data (models/data.py) on the 8x8 digits."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine

from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import DataError
from pyro_zoo.models import data as image_data
from pyro_zoo.models.vae import SPEC, VAE, VAEConfig, hparams_for, load_data
from tests.conftest import SEED

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def digits():
    return load_data("train", smoke=True), load_data("test", smoke=True)


def small_vae(device, z_dim=2) -> VAE:
    return VAE(VAEConfig(data_dim=64, hidden=(64,), z_dim=z_dim)).to(device)


def test_spec_shapes_match_default_data(digits):
    train, test = digits
    assert SPEC.make(smoke=True).event_shape == tuple(train.x.shape[1:]) == (64,)
    assert SPEC.make().event_shape == (784,)
    assert SPEC.hparams_for is hparams_for
    assert hparams_for(test) == {"data_dim": 64, "likelihood": "bernoulli"}
    assert SPEC.make(**hparams_for(test)).event_shape == (64,)


def test_digits_split(digits):
    train, test = digits
    assert train.x.shape == (1438, 64) and test.x.shape == (359, 64)
    assert train.y.shape == (1438,) and set(test.y.tolist()) == set(range(10))
    assert 0 <= train.x.min() and train.x.max() <= 1
    assert len(torch.unique(train.x)) == 17
    assert set(torch.unique(test.x).tolist()) == {0.0, 1.0}
    assert torch.equal(load_data("test", smoke=True).x, test.x)


def test_data_name_rule(tmp_path):
    assert image_data.data_name() == "digits"
    assert image_data.data_name(None, data_dir=tmp_path) == "mnist"
    assert image_data.data_name("MNIST") == "mnist"
    assert image_data.data_name("digits", data_dir=tmp_path) == "digits"
    with pytest.raises(DataError, match="choose one of"):
        image_data.data_name("cifar")


def test_missing_mnist_without_download(tmp_path):
    with pytest.raises(DataError, match="`data_dir`") as info:
        image_data.load_mnist("train", tmp_path, download=False)
    assert str(tmp_path) in str(info.value)


def test_missing_mnist_when_download_fails(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(MNIST, "download", offline)
    with pytest.raises(DataError, match="could not be downloaded"):
        load_data("train", data_dir=tmp_path, data="mnist")


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="needs ../shared/data/MNIST/raw")
def test_real_mnist_files():
    test = image_data.load_mnist("test", SHARED_DATA, download=False)
    assert test.x.shape == (10000, 784) and test.x.dtype == torch.float32
    assert test.x.min() == 0 and test.x.max() == 1 and len(torch.unique(test.x)) > 200
    digit_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(test.y).tolist() == digit_counts
    small = load_data("test", data_dir=SHARED_DATA, data="mnist", smoke=True)
    assert small.x.shape == (500, 784) and set(torch.unique(small.x).tolist()) == {0.0, 1.0}


def test_shapes(device, digits):
    x = digits[1].x[:7].to(device)
    vae = small_vae(device, z_dim=3)
    samples = vae.sample(5)
    assert samples.shape == (5, 64) and set(torch.unique(samples).tolist()) <= {0.0, 1.0}
    assert vae.encode(x).shape == (7, 3)
    assert vae.decode(torch.zeros(2, 4, 3, device=device)).shape == (2, 4, 64)
    recon = vae.reconstruct(x)
    assert recon.shape == (7, 64) and 0 <= recon.min() and recon.max() <= 1
    with pyro.plate("particles", 4, dim=-2):
        guide_trace = poutine.trace(vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    assert guide_trace.nodes["z"]["value"].shape == (4, 7, 3)
    assert model_trace.nodes["x"]["log_prob"].shape == (4, 7)


def test_log_likelihood_is_bernoulli_of_decoder_logits(device, digits):
    x = digits[1].x[:20].to(device)
    vae = small_vae(device)
    z = torch.randn(20, 2, device=device)
    trace = poutine.trace(poutine.condition(vae.model, data={"z": z})).get_trace(x)
    site = trace.nodes["x"]
    first, last = vae.decoder[0][0], vae.decoder[1]
    logits = F.linear(F.softplus(F.linear(z, first.weight, first.bias)), last.weight, last.bias)
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    assert torch.allclose(site["fn"].log_prob(x), expected, atol=1e-4)


@pytest.mark.statistical
def test_kl_per_dim_matches_monte_carlo(device, digits):
    x = digits[1].x[:100].to(device)
    vae = small_vae(device, z_dim=4)
    with torch.no_grad():
        vae.loc_head.weight.mul_(3.0)
        q = vae.posterior(x)
        z = q.sample((2000,))
        # log q(z_i | x) - log N(z_i; 0, 1), draws (M, N, K)
        terms = q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)
        monte_carlo = terms.mean((0, 1))
        se = (terms.var(0).sum(0) / terms.shape[0]).sqrt() / terms.shape[1]
        exact = vae.kl_per_dim(x)
    assert exact.shape == (4,)
    assert ((exact - monte_carlo).abs() < 4 * se).all(), (exact, monte_carlo, se)


def test_active_units_counts_dimensions_that_move(device, digits):
    x = digits[1].x.to(device)
    vae = small_vae(device, z_dim=5)
    with torch.no_grad():
        vae.loc_head.weight[:2].zero_()
        vae.loc_head.weight[2:].mul_(20.0)
    assert vae.active_units(x) == 3
    assert vae.active_units(x, threshold=1e9) == 0


@pytest.mark.statistical
def test_training_lowers_test_neg_elbo(device, digits):
    train, test = (split.to(device) for split in digits)
    vae = small_vae(device, z_dim=4)
    with torch.no_grad():
        before = vae.neg_elbo(test.x, num_samples=10)
    result = fit_model(vae, train.x, epochs=20, batch_size=128, lr=3e-3, progress=False, seed=SEED)
    with torch.no_grad():
        after = vae.neg_elbo(test.x, num_samples=10)
    gain = before - after
    assert gain.mean() > 4 * gain.std() / math.sqrt(len(gain))
    assert result.losses[-1] < result.losses[0]


def test_metrics_and_figures(device, digits, tmp_path):
    test = digits[1]
    vae = SPEC.make(smoke=True).to(device)
    metrics = vae.metrics(test)
    neg_elbo = metrics["neg_elbo_analytic_kl"]
    assert neg_elbo["value"] > 0 and neg_elbo["se"] > 0 and neg_elbo["unit"] == "nats per image"
    assert len(metrics["kl_per_dim"]["values"]) == vae.z_dim
    assert 0 <= metrics["active_units"]["value"] <= vae.z_dim
    paths = SPEC.figures(vae, test, tmp_path)
    assert set(paths) == {"samples", "reconstructions", "latent interpolation"}
    two = SPEC.figures(small_vae(device), test, tmp_path / "two")  # a 2-D latent space is also drawn
    assert set(two) == {"samples", "reconstructions", "latent interpolation", "latent space"}
    assert all(Path(path).stat().st_size > 0 for path in paths.values())


def test_check_data_rejects_unscaled_pixels(device):
    vae = small_vae(device)
    with pytest.raises(DataError, match="rescale"):
        vae.check_data(torch.full((3, 64), 255.0, device=device))


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="needs ../shared/data/MNIST/raw")
def test_mnist_ten_epochs_reaches_103_nats(device):
    train = load_data("train", data_dir=SHARED_DATA).to(device)
    test = load_data("test", data_dir=SHARED_DATA)
    vae = SPEC.make().to(device)
    start = time.perf_counter()
    fit_model(vae, train.x, epochs=10, progress=False, seed=0,
        **{k: v for k, v in SPEC.train.items() if k != "epochs"})
    seconds_per_epoch = (time.perf_counter() - start) / 10
    neg_elbo = vae.metrics(test)["neg_elbo_analytic_kl"]
    print(f"MNIST: {seconds_per_epoch:.2f} s per epoch, test -ELBO {neg_elbo['value']:.2f} "
          f"+- {neg_elbo['se']:.2f} nats per image")
    assert neg_elbo["value"] <= 103.0


@pytest.mark.parametrize("grad", [True, False])
def test_bernoulli_pixels_matches_torch_bernoulli(grad):
    from pyro_zoo.models.nn import BernoulliPixels

    logits = torch.randn(3, 5, 64) * 4
    x = torch.bernoulli(torch.full((5, 64), 0.3))
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum(-1)
    with torch.set_grad_enabled(grad):
        got = BernoulliPixels(logits).log_prob(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert BernoulliPixels(logits).sample((2,)).shape == (2, 3, 5, 64)


def test_elbo_loss_is_trace_mean_field_elbo_on_the_same_draw(device, digits):
    """The closed-form training loss is Pyro's TraceMeanField_ELBO: same z, same value and gradient."""
    x = digits[1].x[:50].to(device)
    vae = small_vae(device, z_dim=3)
    pyro.set_rng_seed(3)
    ours = vae.elbo_loss(x, num_data=500)
    ours_grad = torch.autograd.grad(ours, list(vae.parameters()))
    pyro.set_rng_seed(3)
    pyros = pyro.infer.TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x, num_data=500)
    pyros_grad = torch.autograd.grad(pyros, list(vae.parameters()))
    torch.testing.assert_close(ours, pyros, rtol=1e-5, atol=1e-3)
    for a, b in zip(ours_grad, pyros_grad, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_iwae_bound_is_the_log_mean_of_pyro_importance_weights(device, digits):
    """L_k from the same k draws equals log (1/k) sum_i w_i with w_i from Pyro's model/guide traces."""
    from pyro_zoo.inference.importance import log_weights

    x = digits[1].x[:20].to(device)
    vae = small_vae(device, z_dim=3)
    pyro.set_rng_seed(5)
    with torch.no_grad():
        bound = vae.iwae_bound(x, 7)
    pyro.set_rng_seed(5)
    log_w = log_weights(vae.model, vae.guide, x, 7)
    torch.testing.assert_close(bound, log_w.logsumexp(0) - math.log(7), rtol=1e-5, atol=1e-4)


def test_iwae_training_uses_the_k_sample_bound(device, digits):
    x = digits[1].x[:20].to(device)
    vae = VAE(VAEConfig(data_dim=64, hidden=(64,), z_dim=3, train_samples=5)).to(device)
    pyro.set_rng_seed(6)
    loss = vae.elbo_loss(x, num_data=40)
    pyro.set_rng_seed(6)
    torch.testing.assert_close(loss, -2 * vae.iwae_bound(x, 5).sum())
    with pytest.raises(ValueError, match="train_samples"):
        VAE(VAEConfig(train_samples=0))


# ---------------------------------------------------------------- categorical pixels (grey levels 0..16)

@pytest.fixture(scope="module")
def grey():
    return load_data("train", data="digits17"), load_data("test", data="digits17")


def categorical_vae(device, z_dim=3, train_samples=1) -> VAE:
    config = VAEConfig(data_dim=64, hidden=(64,), z_dim=z_dim, likelihood="categorical", levels=17,
                       train_samples=train_samples)
    return VAE(config).to(device)


def test_digits17_implies_the_categorical_likelihood(grey):
    assert hparams_for(grey[0]) == {"data_dim": 64, "likelihood": "categorical", "levels": 17}
    assert torch.equal(grey[1].x, grey[1].x.round()) and grey[1].x.max() == 16  # never binarised
    with pytest.raises(DataError, match="whole grey levels"):
        categorical_vae("cpu").check_data(grey[0].x / 16)
    with pytest.raises(DataError, match="rescale"):
        small_vae("cpu").check_data(grey[0].x)


def test_categorical_likelihood_is_a_softmax_over_the_levels(device, grey):
    """log p(x | z) of the site "x" = sum_d log_softmax(f(z)_d)[x_d], with f(z) cut into 64 x 17 logits."""
    x = grey[1].x[:20].to(device)
    vae = categorical_vae(device)
    z = torch.randn(20, 3, device=device)
    site = poutine.trace(poutine.condition(vae.model, data={"z": z})).get_trace(x).nodes["x"]
    logits = vae.decoder(z).reshape(20, 64, 17)
    expected = logits.log_softmax(-1).gather(-1, x.long().unsqueeze(-1)).squeeze(-1).sum(-1)
    torch.testing.assert_close(site["fn"].log_prob(x), expected, rtol=1e-5, atol=1e-4)
    assert set(vae.sample(50).unique().tolist()) <= set(range(17))


@pytest.mark.parametrize("train_samples", [1, 4])
def test_categorical_closed_form_is_the_pyro_objective(device, grey, train_samples):
    """The fast path of the categorical VAE on the same draws: TraceMeanField_ELBO (k = 1) or the
    IWAE bound from Pyro's importance weights (k = 4)."""
    from pyro_zoo.inference.importance import log_weights

    x = grey[1].x[:30].to(device)
    vae = categorical_vae(device, train_samples=train_samples)
    pyro.set_rng_seed(3)
    ours = vae.elbo_loss(x, num_data=60)
    pyro.set_rng_seed(3)
    if train_samples == 1:
        pyros = pyro.infer.TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x, num_data=60)
    else:
        with torch.no_grad():
            pyros = -2 * (log_weights(vae.model, vae.guide, x, 4).logsumexp(0) - math.log(4)).sum()
    torch.testing.assert_close(ours, pyros, rtol=1e-5, atol=1e-3)


def test_categorical_vae_beats_independent_pixels(grey, one_thread):
    """After 20 epochs on Tomczak's 1,000 training digits, the importance-sampled test log p(x)
    (a stochastic lower bound) is above that of independent categorical pixels fitted to the same
    images (add-one smoothed frequencies, numpy): 106.5 nats; the VAE reaches about 101."""
    from pyro_zoo.inference.importance import estimate_log_likelihood
    from tests.test_arm import independent_pixels_nll

    train, test = grey
    vae = SPEC.build(SPEC.resolve(smoke=True, data=train))
    assert vae.pixels.categorical
    fit_model(vae, train.x, epochs=20, batch_size=64, lr=3e-3, progress=False)
    estimate = estimate_log_likelihood(vae.model, vae.guide, test.x, 200).summary()
    assert estimate["log_px"] > -independent_pixels_nll(train.x, test.x, 17)
