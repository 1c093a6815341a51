"""Tests of the neural autoregressive model (models/arm/) and Tomczak's digits protocol (data set
digits17): exact log p(x) against enumeration of every image, the autoregressive property, ancestral
samples against the exact probabilities, training against an independent-pixels baseline, bad input."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from pyro.infer import Trace_ELBO
from scipy.stats import chisquare
from sklearn.datasets import load_digits

from pyro_zoo.cli import main
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import DataError
from pyro_zoo.models.arm import ARM, SPEC, ARMConfig, hparams_for, load_data


def tiny_arm(likelihood: str, data_dim: int, levels: int = 17, hidden=(16, 16)) -> ARM:
    """A small ARM with weights scaled up, so that its conditionals are far from uniform."""
    arm = ARM(ARMConfig(data_dim=data_dim, hidden=hidden, likelihood=likelihood, levels=levels))
    with torch.no_grad():
        for parameter in arm.parameters():
            parameter.mul_(4.0)
    return arm


def all_images(data_dim: int, levels: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(levels), repeat=data_dim)), dtype=torch.float32)


def test_digits17_is_tomczaks_protocol():
    """Rows 0-999, 1000-1349, 1350-1796 of scikit-learn's digits, in its order, as whole grey levels."""
    digits = load_digits()
    sizes = {"train": 1000, "validation": 350, "test": 447}
    start = 0
    for split, size in sizes.items():
        data = load_data(split)
        assert data.x.shape == (size, 64) and data.info["levels"] == 17
        np.testing.assert_array_equal(data.x.numpy(), digits.data[start:start + size])
        np.testing.assert_array_equal(data.y.numpy(), digits.target[start:start + size])
        start += size
    assert start == len(digits.data)
    with pytest.raises(DataError, match="only data set digits17 has a 'validation' split"):
        load_data("validation", data="digits")


def test_hparams_follow_the_data():
    assert hparams_for(load_data("train")) == {"data_dim": 64, "likelihood": "categorical", "levels": 17}
    assert hparams_for(load_data("train", data="digits")) == {"data_dim": 64, "likelihood": "bernoulli"}


@pytest.mark.parametrize("likelihood, data_dim, levels", [("bernoulli", 5, 2), ("categorical", 3, 4)])
def test_probabilities_of_all_images_sum_to_one(likelihood, data_dim, levels):
    """Enumeration of all L^D images: sum_x p(x) = 1 (each conditional is normalised and the masks
    make their product a distribution), and the Pyro program's Trace_ELBO is -log p(x)."""
    arm = tiny_arm(likelihood, data_dim, levels)
    images = all_images(data_dim, levels)
    with torch.no_grad():
        log_px = arm.exact_log_prob(images).double()
    assert torch.logsumexp(log_px, 0).exp().item() == pytest.approx(1.0, abs=1e-5)
    assert log_px.max() - log_px.min() > 2.0  # far from uniform, so the check has teeth
    loss = Trace_ELBO().loss(arm.model, arm.guide, images[:7])
    assert loss == pytest.approx(-log_px[:7].sum().item(), rel=1e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical"])
def test_conditional_d_ignores_pixels_d_and_after(likelihood):
    """The d-th conditional's logits are the same whatever x_d, ..., x_D are."""
    torch.manual_seed(1)
    levels = 17 if likelihood == "categorical" else 2
    arm = tiny_arm(likelihood, 16, levels, hidden=(32, 32))
    x = torch.randint(levels, (5, 16)).float()
    with torch.no_grad():
        reference = arm.logits(x)
        for d in range(16):
            other = x.clone()
            other[:, d:] = torch.randint(levels, (5, 16 - d)).float()
            torch.testing.assert_close(arm.logits(other)[:, d], reference[:, d], rtol=0, atol=0)
            if d + 1 < 16:  # and depends on x_<d+1: a change of x_d moves conditional d + 1
                changed = x.clone()
                changed[:, d] = (x[:, d] + 1) % levels
                assert not torch.equal(arm.logits(changed)[:, d + 1], reference[:, d + 1])


def test_ancestral_samples_follow_the_exact_probabilities():
    """Counts of the 27 images in 20,000 samples against n p(x): Pearson's chi-square test (cells
    expected fewer than 5 times pooled) does not reject at level 1e-4."""
    arm = tiny_arm("categorical", 3, 3)
    images = all_images(3, 3)
    with torch.no_grad():
        probs = arm.exact_log_prob(images).exp().double()
        samples = arm.sample(20_000)
    codes = (samples * torch.tensor([9.0, 3.0, 1.0])).sum(1).long()
    counts = torch.bincount(codes, minlength=27).double()
    expected = probs / probs.sum() * len(samples)
    rare = expected < 5
    observed = torch.cat([counts[~rare], counts[rare].sum().reshape(1)])
    pooled = torch.cat([expected[~rare], expected[rare].sum().reshape(1)])
    assert (~rare).sum() >= 5  # enough well-filled cells for the test to have power
    assert chisquare(observed.numpy(), pooled.numpy()).pvalue > 1e-4, (counts, expected)


def independent_pixels_nll(train: torch.Tensor, test: torch.Tensor, levels: int) -> float:
    """Test NLL per image of independent categorical pixels fitted by add-one smoothed frequencies."""
    counts = np.stack([np.bincount(column, minlength=levels) for column in train.long().numpy().T]) + 1.0
    log_p = np.log(counts / counts.sum(1, keepdims=True))
    return float(-log_p[np.arange(test.shape[1]), test.long().numpy()].sum(1).mean())


def test_training_beats_independent_pixels(one_thread):
    """Maximum likelihood by SVI lowers the exact test NLL from log(17) per pixel to below that of
    independent pixels fitted to the same images (the chain rule's conditionals help)."""
    train, test = load_data("train"), load_data("test")
    arm = SPEC.build(SPEC.resolve(smoke=True, data=train))
    with torch.no_grad():
        before = -arm.exact_log_prob(test.x).mean().item()
    assert before == pytest.approx(64 * math.log(17), rel=0.02)
    fit_model(arm, train.x, epochs=30, batch_size=64, lr=3e-3, progress=False)
    with torch.no_grad():
        after = -arm.exact_log_prob(test.x).mean().item()
    baseline = independent_pixels_nll(train.x, test.x, 17)
    assert after < baseline < before, (after, baseline, before)


def test_bad_data_is_refused():
    arm = SPEC.build(SPEC.resolve(smoke=True, data=load_data("train")))
    with pytest.raises(DataError, match=r"whole grey levels 0\.\.16"):
        arm.check_data(load_data("train", data="digits").x)  # grey levels / 16
    with pytest.raises(DataError, match="takes \\(N, 64\\)"):
        arm.check_data(torch.zeros(3, 784))
    bernoulli = ARM(ARMConfig(likelihood="bernoulli", hidden=(64,)))
    with pytest.raises(DataError, match="rescale"):
        bernoulli.check_data(load_data("train").x)


def test_cli_refuses_a_likelihood_that_does_not_fit_the_data(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "arm", "--smoke", "--data", "digits", "--set", "likelihood=categorical",
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "whole grey levels" in err[0], err
    assert not out.exists()


def test_cli_train_and_eval(tmp_path, capsys):
    """``zoo train arm`` then ``zoo eval``: importance sampling over the empty guide is log p(x) itself."""
    out = tmp_path / "run"
    assert main(["train", "arm", "--smoke", "--out", str(out), "--no-progress", "--epochs", "1"]) == 0
    assert main(["eval", "arm", "--checkpoint", str(out / "checkpoint.pt"), "--num-particles", "5",
                 "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["log_px"]["value"] == pytest.approx(report["exact"]["log_px"], abs=1e-3)
    assert set(report["figures"]) >= {"samples", "learned conditionals"}
