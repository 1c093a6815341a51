from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyro_zoo.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_zoo.inference.train import TrainingDiverged, fit_model
from pyro_zoo.models import get_spec
from tests.toy import Diverging, NormalNormal


@pytest.mark.statistical
def test_svi_learns_the_exact_posterior_of_a_conjugate_model():
    x = torch.randn(2000) * math.sqrt(2)
    model = NormalNormal()
    fit_model(model, x, steps=400, lr=0.05, progress=False)
    # exact posterior N(x/2, 1/2): slope 0.5 and scale sqrt(0.5); the SVI noise here is ~0.01
    assert abs(model.guide_slope.item() - 0.5) < 0.05
    assert abs(model.guide_scale.abs().item() - math.sqrt(0.5)) < 0.05


def test_resume_continues_where_it_stopped(tmp_path):
    x = torch.randn(256)
    ckpt = tmp_path / "ckpt.pt"
    straight = NormalNormal()
    torch.manual_seed(1)
    fit_model(straight, x, steps=40, lr=0.05, batch_size=64, progress=False, log_every=10)
    split = NormalNormal()
    torch.manual_seed(1)
    fit_model(split, x, steps=22, lr=0.05, batch_size=64, progress=False, log_every=11, checkpoint=ckpt)
    resumed = NormalNormal()
    result = fit_model(resumed, x, steps=40, lr=0.05, batch_size=64, progress=False, log_every=10,
                 checkpoint=ckpt, resume=True)
    assert result.step == 40 and len(result.losses) == 40
    assert load_checkpoint(ckpt)["step"] == 40
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
@pytest.mark.parametrize("validate", [True, False])
def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path, validate):
    ckpt = tmp_path / "ckpt.pt"
    model = Diverging()
    with pyro.validation_enabled(validate), pytest.raises(TrainingDiverged, match="lower the learning rate"):
        fit_model(model, torch.zeros(10), steps=50, lr=2.0, progress=False, log_every=1, checkpoint=ckpt)
    state = load_checkpoint(ckpt)
    assert all(math.isfinite(v) for v in state["losses"])
    assert torch.isfinite(state["modules"]["model"]["w"]).all()


def test_checkpoint_write_is_atomic_and_corruption_is_reported(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": "toy", "model_state": {}})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_epochs_and_steps_are_exclusive():
    with pytest.raises(ValueError):
        fit_model(NormalNormal(), torch.zeros(4), steps=1, epochs=1, progress=False)


def test_tol_stops_early_once_the_loss_settles():
    x = torch.randn(500) * math.sqrt(2)
    result = fit_model(NormalNormal(), x, steps=5000, lr=0.05, progress=False, log_every=50, tol=1e-3)
    assert 0 < result.step < 5000
    assert len(result.losses) == result.step


def test_closed_form_loss_follows_the_same_path_as_pyros_elbo():
    """For a mixture (deterministic full-batch loss) training on ``elbo_loss`` and on Pyro's
    TraceEnum_ELBO gives the same parameters after 30 Adam steps."""
    from pyro_zoo.models.mixture import MixtureConfig, MixtureModel, load_data

    x = load_data("train", data="synthetic2d", smoke=True).x
    runs = []
    for closed_form in (True, False):
        model = MixtureModel(MixtureConfig(num_components=3, dim=2))
        pyro.set_rng_seed(0)
        result = fit_model(model, x, objective="TraceEnum_ELBO", steps=30, lr=0.05, progress=False,
                     fast=closed_form)
        runs.append((model, result))
    (ours, ours_result), (pyros, pyros_result) = runs
    assert ours_result.losses == pytest.approx(pyros_result.losses, rel=1e-5)
    for a, b in zip(ours.parameters(), pyros.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_validation_runs_on_the_first_step_only():
    seen = []

    class Spy(NormalNormal):
        def model(self, x, num_data=None):
            seen.append(pyro.distributions.is_validation_enabled())
            super().model(x, num_data)

    with pyro.validation_enabled(True):
        fit_model(Spy(), torch.zeros(8), steps=3, progress=False)
    # the first pass creates the parameters, then three steps: validation on the first two only
    assert seen == [True, True, False, False]


def test_lr_decay_scales_the_learning_rate_and_survives_resume(tmp_path):
    x = torch.randn(256)
    frozen = NormalNormal()
    before = [p.detach().clone() for p in frozen.parameters()]
    fit_model(frozen, x, steps=10, lr=0.05, progress=False, lr_decay=lambda step: 0.0)
    for a, b in zip(before, frozen.parameters(), strict=True):
        torch.testing.assert_close(a, b)

    def halving(step):
        return 0.5 ** (step // 10)

    ckpt = tmp_path / "ckpt.pt"
    straight, split = NormalNormal(), NormalNormal()
    torch.manual_seed(1)
    fit_model(straight, x, steps=40, lr=0.05, batch_size=64, progress=False, log_every=10, lr_decay=halving)
    torch.manual_seed(1)
    fit_model(split, x, steps=20, lr=0.05, batch_size=64, progress=False, log_every=10, checkpoint=ckpt,
        lr_decay=halving)
    resumed = NormalNormal()
    fit_model(resumed, x, steps=40, lr=0.05, batch_size=64, progress=False, log_every=10, checkpoint=ckpt,
        resume=True, lr_decay=halving)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_compiled_loss_trains_like_the_eager_one():
    """Same seed, same losses; fallback_random makes compiled code draw torch's random numbers."""
    import torch._inductor.config

    from pyro_zoo.models.vae import VAE, VAEConfig

    x = torch.rand(256, 16)
    runs = []
    for compile in (False, True):
        pyro.set_rng_seed(0)
        model = VAE(VAEConfig(data_dim=16, hidden=(8,), z_dim=2))
        with torch._inductor.config.patch(fallback_random=True):
            result = fit_model(model, x, steps=8, batch_size=64, lr=1e-2, progress=False, fast=True,
                               compile=compile)
        runs.append(result.losses)
    assert runs[1] == pytest.approx(runs[0], rel=1e-4)


def test_the_iwae_bound_trains_a_zoo_models_parameters():
    """Pyro's RenyiELBO backpropagates only when a trace holds a param site, and a zoo model's
    parameters are nn.Parameters outside Pyro's param store (this trained nothing before). With one
    particle the IWAE bound is the ELBO: one Adam step from the same draws moves every parameter as
    Trace_ELBO's does, and Pyro's param store stays empty."""
    spec = get_spec("vae")
    x = spec.load_data("train", smoke=True).x[:64]
    stepped = {}
    for objective in ({"name": "Trace_ELBO"}, {"name": "RenyiELBO", "options": {"alpha": 0.0}}):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = spec.make(smoke=True)
        before = [p.detach().clone() for p in model.parameters()]
        fit_model(model, x, objective=objective, steps=1, lr=1e-2, seed=1, progress=False)
        stepped[objective["name"]] = [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]
        assert not list(pyro.get_param_store().keys())
    assert all(bool(step.abs().max() > 0) for step in stepped["RenyiELBO"])
    for renyi, trace in zip(stepped["RenyiELBO"], stepped["Trace_ELBO"], strict=True):
        torch.testing.assert_close(renyi, trace, rtol=1e-4, atol=1e-6)

