"""The conditional VAE on the embedded 8x8 digits: training lowers the test loss, importance
sampling bounds log p(x | y) above the ELBO, labels steer the samples, and bad labels are refused."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_zoo.inference.importance import estimate_log_likelihood
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import DataError, get_spec
from tests.conftest import SEED


def _setup():
    spec = get_spec("cvae")
    train, test = spec.load_data("train", smoke=True), spec.load_data("test", smoke=True)
    model = spec.make(smoke=True, **spec.hparams_for(train))
    return spec, model, train.inputs(model.inputs), test.inputs(model.inputs)


def _elbo_per_image(model, inputs) -> torch.Tensor:
    """One-sample ELBO per test image (IWAE_1), shape (N,)."""
    with torch.no_grad():
        return estimate_log_likelihood(model.model, model.guide, inputs, 1, psis=False).log_px.double()


#: a sixth of the smoke run (the demo's), enough for the checks below
EPOCHS = 30


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(SEED)
    spec, model, train, test = _setup()
    before = _elbo_per_image(model, test)
    fit_model(model, train, objective=spec.objective_for(model.config), progress=False,
              **spec.train_settings(smoke=True, epochs=EPOCHS))
    return model, test, before


@pytest.mark.statistical
def test_training_lowers_the_test_loss(trained):
    """The per-image test ELBO rises by more than 4 standard errors of the paired difference."""
    model, test, before = trained
    gain = _elbo_per_image(model, test) - before
    assert gain.mean() > 4 * gain.std() / math.sqrt(len(gain)), gain.mean()


@pytest.mark.statistical
def test_importance_sampling_is_above_the_elbo_and_finite(trained):
    """E[IS log p(x | y)] >= ELBO per image on average (IWAE_K >= IWAE_1 in expectation), both finite;
    the gap is positive by more than 4 standard errors of its mean over the images."""
    model, test, _ = trained
    with torch.no_grad():
        result = estimate_log_likelihood(model.model, model.guide, test, 500, iwae_ks=(1,))
    log_px, elbo = result.log_px.double(), result.iwae[1].double()
    assert torch.isfinite(log_px).all() and torch.isfinite(elbo).all()
    gap = log_px - elbo
    assert gap.mean() > 4 * gap.std() / math.sqrt(len(gap)), gap.mean()


def test_labels_steer_the_decoder(trained):
    """For the same z the decoded images differ between classes (the decoder uses y), and
    sample(n) cycles through the classes."""
    model, _, _ = trained
    z = torch.zeros(10, model.z_dim)
    with torch.no_grad():
        images = model.decode(z, torch.arange(10))
    assert (images[1:] - images[0]).abs().amax(-1).min() > 0.1
    assert model.sample(20).shape == (20, model.data_dim)


def test_figures_are_a_grid_per_class(trained, tmp_path):
    model, test, _ = trained
    spec = get_spec("cvae")
    paths = spec.figures(model, spec.load_data("test", smoke=True), tmp_path)
    assert paths["samples per class"].is_file()


def test_rejects_labels_out_of_range():
    _, model, _, test = _setup()
    x, y = test
    with pytest.raises(DataError, match="labels"):
        model.check_inputs((x, y + 10))
    with pytest.raises(DataError, match="rows"):
        model.check_inputs((x, y[:-1]))
