"""The Python API refuses what it cannot do with the zoo's own errors, before any step runs: a
count or rate out of range is a :class:`SettingError` naming its keyword, a program that is not
finite is :class:`TrainingDiverged`, a model too large to build a :class:`DataError`; a resume
may change the learning rate and clipping (saying so once) but not the batch size. The command
line names each keyword by its flag."""

from __future__ import annotations

import logging
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_zoo.cli import flagged
from pyro_zoo.inference.ais import ais, beta_schedule
from pyro_zoo.inference.checkpoint import load_checkpoint
from pyro_zoo.inference.importance import estimate_log_likelihood
from pyro_zoo.inference.settings import MAX_STEPS, SettingError
from pyro_zoo.inference.train import TrainingDiverged, fit, fit_model
from pyro_zoo.models import MAX_LAYERS, REGISTRY, DataError, get_spec
from pyro_zoo.models.spec import LARGE_TENSOR, LargeTensorsOnMeta
from tests.toy import NormalNormal


def loc_model(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


def no_guide(x):
    pass


def nan_factor_model(x):
    loc_model(x)
    pyro.factor("broken", torch.tensor(math.nan))


def renyi(num_particles) -> dict:
    return {"name": "RenyiELBO", "num_particles": num_particles}


BAD_SETTINGS = {
    "steps=0": ("steps", {"steps": 0}),
    "steps=-3": ("steps", {"steps": -3}),
    "steps=2.5": ("steps", {"steps": 2.5}),
    "steps=True": ("steps", {"steps": True}),
    "steps over the maximum": ("steps", {"steps": MAX_STEPS + 1}),
    "neither steps nor epochs": ("steps", {}),
    "epochs=0": ("epochs", {"epochs": 0}),
    "epochs=inf": ("epochs", {"epochs": math.inf}),
    "epochs=nan": ("epochs", {"epochs": math.nan}),
    "epochs=1e300": ("epochs", {"epochs": 1e300}),
    "batch_size=0": ("batch_size", {"steps": 5, "batch_size": 0}),
    "batch_size=2.5": ("batch_size", {"steps": 5, "batch_size": 2.5}),
    "lr=-1": ("lr", {"steps": 5, "lr": -1}),
    "lr=nan": ("lr", {"steps": 5, "lr": math.nan}),
    "lr=0": ("lr", {"steps": 5, "lr": 0}),
    "clip_norm=0": ("clip_norm", {"steps": 5, "clip_norm": 0}),
    "log_every=0": ("log_every", {"steps": 5, "log_every": 0}),
    "num_particles=10.5": ("num_particles", {"steps": 5, "objective": renyi(10.5)}),
    "num_particles=0": ("num_particles", {"steps": 5, "objective": renyi(0)}),
    "checkpoint_seconds=nan": ("checkpoint_seconds", {"steps": 5, "checkpoint_seconds": math.nan}),
    "checkpoint_seconds=-1": ("checkpoint_seconds", {"steps": 5, "checkpoint_seconds": -1}),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS), ids=list(BAD_SETTINGS))
def test_fit_refuses_a_bad_setting_by_name_before_any_step(case):
    setting, options = BAD_SETTINGS[case]
    with pytest.raises(SettingError, match=f"`{setting}`") as caught:
        fit(loc_model, no_guide, torch.randn(20), progress=False, **options)
    assert caught.value.setting == setting
    assert "loc" not in pyro.get_param_store()


def test_the_step_bound_counts_epochs_in_steps():
    """10 epochs of 20 one-row batches are 200 steps; MAX_STEPS / 20 + 1 epochs are one epoch too many."""
    x = torch.randn(20)
    assert fit(loc_model, no_guide, x, epochs=10, batch_size=1, progress=False).step == 200
    with pytest.raises(SettingError, match=f"the {MAX_STEPS} steps"):
        fit(loc_model, no_guide, x, epochs=MAX_STEPS // 20 + 1, batch_size=1, progress=False)


def importance(num_particles, **options):
    return lambda m, x: estimate_log_likelihood(m.model, m.guide, x, num_particles, **options)


ESTIMATOR_CALLS = {
    "ais num_chains=0": ("num_chains", lambda m, x: ais(m.model, m.guide, x, num_chains=0)),
    "ais num_steps=0": ("num_steps", lambda m, x: ais(m.model, m.guide, x, num_steps=0)),
    "ais num_leapfrog=1.5": ("num_leapfrog", lambda m, x: ais(m.model, m.guide, x, num_leapfrog=1.5)),
    "ais data_chunk=0": ("data_chunk", lambda m, x: ais(m.model, m.guide, x, data_chunk=0)),
    "beta_schedule(0)": ("num_steps", lambda m, x: beta_schedule(0)),
    "IS num_particles=10.5": ("num_particles", importance(10.5)),
    "IS num_particles=0": ("num_particles", importance(0)),
    "IS data_chunk=0": ("data_chunk", importance(9, data_chunk=0)),
}


@pytest.mark.parametrize("case", list(ESTIMATOR_CALLS), ids=list(ESTIMATOR_CALLS))
def test_estimators_refuse_bad_counts_by_name(case):
    setting, call = ESTIMATOR_CALLS[case]
    with pytest.raises(SettingError, match=f"`{setting}`") as caught:
        call(NormalNormal(), torch.randn(5))
    assert caught.value.setting == setting


@pytest.mark.parametrize("validate", [True, False], ids=["validation on", "validation off"])
@pytest.mark.parametrize("case", ["NaN data", "NaN log-prob"])
def test_a_program_that_is_not_finite_is_the_zoos_divergence_error(case, validate):
    x = torch.randn(20)
    if case == "NaN data":
        x[3] = math.nan
    model = loc_model if case == "NaN data" else nan_factor_model
    with pyro.validation_enabled(validate), pytest.raises(TrainingDiverged, match="before any training step"):
        fit(model, no_guide, x, steps=5, progress=False, log_every=1)


def test_a_program_error_is_not_called_a_divergence():
    def mismatched(x):
        loc = pyro.param("loc", torch.zeros(3))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    with pytest.raises(ValueError, match="Shape mismatch"):
        fit(mismatched, no_guide, torch.randn(20), steps=5, progress=False)


def test_resume_refuses_another_batch_size_and_fewer_steps_than_done(tmp_path):
    path, x = tmp_path / "run.pt", torch.randn(40)
    fit_model(NormalNormal(), x, steps=10, batch_size=8, lr=0.05, progress=False, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(SettingError, match="`batch_size` = 8, not 4"):
        fit_model(NormalNormal(), x, steps=20, batch_size=4, progress=False, checkpoint=path, resume=True)
    with pytest.raises(SettingError, match="at step 10, beyond the 5 steps"):
        fit_model(NormalNormal(), x, steps=5, batch_size=8, progress=False, checkpoint=path, resume=True)
    with pytest.raises(SettingError, match="`checkpoint`"):
        fit_model(NormalNormal(), x, steps=20, batch_size=8, progress=False, resume=True)
    assert path.read_bytes() == before


def test_resume_takes_the_rate_and_clipping_asked_now_and_says_so_once(tmp_path, caplog):
    path, x = tmp_path / "run.pt", torch.randn(40)
    fit_model(NormalNormal(), x, steps=10, lr=0.05, progress=False, checkpoint=path)
    with caplog.at_level(logging.INFO, logger="pyro_zoo.inference"):
        fit_model(NormalNormal(), x, steps=15, lr=0.05, progress=False, checkpoint=path, resume=True)
        assert not caplog.records  # nothing changed, nothing said
        fit_model(NormalNormal(), x, steps=20, lr=0.001, clip_norm=1.0, progress=False, checkpoint=path,
                  resume=True)
    assert len(caplog.records) == 1
    assert "`lr` = 0.001, `clip_norm` = 1.0" in caplog.records[0].getMessage()
    state = load_checkpoint(path)
    assert (state["lr"], state["clip_norm"], state["step"]) == (0.001, 1.0, 20)
    assert [group["lr"] for group in state["optimizer_state"]["param_groups"]] == [0.001]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_model_is_sized_without_allocating(name):
    """ModelSpec.check_size builds every zoo model with its large tensors on the meta device: it must
    build there (else it is not bounded), count what a real build holds, and allocate none of its
    large parameters (buffers computed from small ones, such as MADE's masks, are real)."""
    spec = get_spec(name)
    config = spec.config()
    with pyro.validation_enabled(False), LargeTensorsOnMeta():
        sized = spec.build(config)
    real = spec.build(config)
    assert (sum(t.numel() for t in (*sized.parameters(), *sized.buffers()))
            == sum(t.numel() for t in (*real.parameters(), *real.buffers())))
    assert all(t.is_meta for t in sized.parameters() if t.numel() >= LARGE_TENSOR)
    spec.check_size(config)


@pytest.mark.parametrize(("name", "hparams", "gigabytes"), [
    ("mixture", {"dim": 100_000, "num_components": 2}, "80 GB"),  # K D^2 = 2e10 covariance entries
    ("bayes_regression", {"data_dim": 100_000}, "40 GB"),  # the guide's D x D scale_tril
    # encoder and decoder each 784 x 10^4 + 11 x 10^8 weights, plus biases and heads: 2.217e9
    ("vae", {"data_dim": 784, "hidden": (10_000,) * 12}, "8.87 GB"),
])
def test_a_model_too_large_to_build_is_refused_with_its_size(name, hparams, gigabytes):
    with pytest.raises(DataError, match=gigabytes):
        spec = get_spec(name)
        spec.check_size(spec.config.from_dict(hparams))


def test_layer_lists_are_bounded():
    spec = get_spec("vae")
    assert spec.config.from_dict({"hidden": (8,) * MAX_LAYERS}).hidden == (8,) * MAX_LAYERS
    with pytest.raises(DataError, match=f"at most {MAX_LAYERS}"):
        spec.config.from_dict({"hidden": (8,) * (MAX_LAYERS + 1)})


def test_the_command_line_names_settings_by_their_flags():
    assert flagged("`num_particles` must be ..., lower `lr`, `resume=True`, `zoo train`, `other`") == (
        "--num-particles must be ..., lower --lr, --resume, `zoo train`, `other`")
    assert flagged("use `covariance=diag`, pass `data_dir`") == "use --set covariance=diag, pass --data-dir"
