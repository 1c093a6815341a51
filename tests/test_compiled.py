"""The compiled Pyro objective (``fit(..., compile=True)``, :mod:`pyro_zoo.inference.compiled`) against the
eager one: a replayed graph draws the same random numbers as the program run eagerly, so at the
same seed both give the same loss and the same gradient of every parameter -- checked on every
registered model, a user's file, and programs written with ``pyro.param``, ``PyroModule``,
AutoGuides and a non-reparametrised guide. A program whose structure changes, or that reads a
tensor's value in Python, falls back to the eager objective with one logged sentence; a new batch
shape is traced again, not a fallback."""

from __future__ import annotations

import logging

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.nn import PyroModule, PyroSample
from torch import nn

from pyro_zoo.inference.compiled import CompiledLoss
from pyro_zoo.inference.train import as_objective, fit, fit_model
from pyro_zoo.models import get_spec
from tests.conftest import requires_cuda
from tests.test_contract import MODELS

DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])]
#: relative agreement of compiled and eager loss and gradients (float32 rounding; measured: 0 or ~1e-7)
SAME = dict(rtol=1e-5, atol=1e-6)


def scaled(scale):
    return poutine.scale(scale=scale)


def smoke_batch(name, device):
    """(spec, model, batch): the smoke model fitted to its data, its first 32 rows preprocessed,
    and the parameters a program creates lazily (AutoGuides) made by one run of guide and model."""
    spec = get_spec(name)
    data = spec.load_data("train", smoke=True)
    implied = spec.hparams_for(data) if spec.hparams_for else {}
    model = spec.make(smoke=True, **implied).to(device)
    batch = model.preprocess(*(t[:32] for t in data.to(device).inputs(model.inputs)))
    batch = batch if isinstance(batch, tuple) else (batch,)
    with torch.no_grad():
        poutine.trace(model.guide).get_trace(*batch)
        poutine.trace(model.model).get_trace(*batch)
    return spec, model, batch


def leaves_of(loss: CompiledLoss) -> list[torch.Tensor]:
    (graph,) = loss.graphs.values()
    return graph.leaves


def same_step(loss: CompiledLoss, batch, scale=1.0, seed=5):
    """Loss and gradients of the replayed graph and of the eager objective at the same seed."""
    loss(batch, scale)  # the first call runs eagerly and traces
    assert loss.fallback is None and len(loss.graphs) == 1
    leaves = leaves_of(loss)
    results = []
    for run in (loss, loss.eager):
        pyro.set_rng_seed(seed)
        value = run(batch, scale)
        results.append((value.detach(), torch.autograd.grad(value, leaves, allow_unused=True)))
    (replayed, replayed_grads), (eager, eager_grads) = results
    torch.testing.assert_close(replayed, eager, **SAME)
    for a, b in zip(replayed_grads, eager_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, **SAME)
    assert any(g is not None and g.abs().sum() > 0 for g in eager_grads)  # not vacuous
    return eager


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_every_model_compiles_to_its_own_loss_and_gradients(name, device, caplog):
    spec, model, batch = smoke_batch(name, device)
    elbo = as_objective(spec.objective_for(spec.config())).build(spec.max_plate_nesting)
    loss = CompiledLoss(elbo, model.model, model.guide, scaled=scaled)
    if name == "student":  # which columns are latent depends on the data's missing entries
        with caplog.at_level(logging.WARNING, logger="pyro_zoo.inference.compiled"):
            loss(batch, 3.0)
        assert "reads a tensor's value into Python at student/model.py" in loss.fallback
        assert len(caplog.records) == 1
        return
    same_step(loss, batch, scale=3.0)


class Regression(PyroModule):
    """y ~ N(x w + b, 0.5) with PyroSample priors on the weights of a PyroModule[nn.Linear]."""

    def __init__(self, dim=3):
        super().__init__()
        self.linear = PyroModule[nn.Linear](dim, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, dim]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 5.0).expand([1]).to_event(1))

    def forward(self, x, y):
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(mean, 0.5), obs=y)


def regression_data(n=50, dim=3):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=generator)
    return x, x @ torch.arange(1.0, dim + 1) + 0.5 * torch.randn(n, generator=generator)


@pytest.mark.parametrize("autoguide", [AutoNormal, AutoDiagonalNormal, AutoMultivariateNormal,
                                       AutoLowRankMultivariateNormal, AutoDelta])
def test_pyro_module_with_autoguides(autoguide):
    model = Regression()
    guide = autoguide(model)
    batch = regression_data()
    guide(*batch)
    same_step(CompiledLoss(Trace_ELBO(), model, guide, scaled=scaled), batch)


def local_model(x):
    """z_n ~ N(loc, 1), x_n ~ N(z_n, scale): pyro.param s, one constrained."""
    loc = pyro.param("loc", torch.tensor(0.5))
    scale = pyro.param("scale", torch.tensor(1.5), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(loc, 1.0))
        pyro.sample("x", dist.Normal(z, scale), obs=x)


def local_guide(x):
    """q(z_n | x_n) = N(w x_n + c, s): an amortised guide of pyro.param s."""
    w = pyro.param("w", torch.tensor(0.3))
    c = pyro.param("c", torch.tensor(-0.2))
    s = pyro.param("s", torch.tensor(0.8), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(w * x + c, s))


@pytest.mark.parametrize("num_particles", [1, 4])
def test_pyro_params_with_constraints(num_particles):
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)
    same_step(CompiledLoss(elbo, local_model, local_guide, scaled=scaled), (torch.randn(20) * 2,), scale=2.5)


def switch_model(x):
    """z_n ~ Bernoulli(0.3), x_n ~ N(4 z_n - 2, 1)."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(4 * z - 2, 1.0), obs=x)


def switch_guide(x):
    """q(z_n | x_n) = Bernoulli(sigmoid(a x_n + b)): not reparametrisable, a score-function gradient."""
    a, b = pyro.param("a", torch.tensor(0.5)), pyro.param("b", torch.tensor(0.1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Bernoulli(logits=a * x + b))


def test_a_score_function_guide_keeps_the_surrogate_gradient_and_the_loss_value():
    x = torch.randn(30) * 2
    eager = same_step(CompiledLoss(Trace_ELBO(), switch_model, switch_guide, scaled=scaled), (x,))
    pyro.set_rng_seed(5)
    assert eager.item() == pytest.approx(Trace_ELBO().loss(switch_model, switch_guide, x), rel=1e-6)


def test_fit_compiled_trains_like_fit_uncompiled_and_traces_each_batch_shape_once(caplog, monkeypatch):
    """44 rows at batch 16: batches of 16, 16 and 12, so two shapes (and two scales) per epoch."""
    x, y = regression_data(44)
    eager_steps = []
    checked = CompiledLoss.checked

    def counted(self, *args):
        eager_steps.append(1)
        return checked(self, *args)

    monkeypatch.setattr(CompiledLoss, "checked", counted)
    runs = []
    for compile in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = Regression()
        guide = AutoNormal(model)
        with caplog.at_level(logging.INFO, logger="pyro_zoo.inference"):
            result = fit(model, guide, (x, y), steps=12, batch_size=16, lr=0.05, progress=False, log_every=4,
                         compile=compile)
        runs.append((result.losses, [p.detach().clone() for p in result.param_state["params"].values()]))
    assert not caplog.records  # no fallback: a new batch shape is traced, not a structure change
    assert len(eager_steps) == 2  # one eager step per batch shape; the other 10 steps replayed
    (eager_losses, eager_params), (losses, params) = runs
    assert losses == pytest.approx(eager_losses, rel=1e-5)
    for a, b in zip(params, eager_params, strict=True):
        torch.testing.assert_close(a, b, **SAME)
    assert eager_losses[-1] < eager_losses[0]  # it learned, so the comparison is not vacuous


def test_fit_model_compiled_on_the_vae_matches_the_eager_run(caplog):
    spec = get_spec("vae")
    data = spec.load_data("train", smoke=True).x[:200]
    runs = []
    for compile in (False, True):
        pyro.set_rng_seed(0)
        model = spec.make(smoke=True, data_dim=data.shape[1])
        with caplog.at_level(logging.INFO, logger="pyro_zoo.inference"):
            runs.append(fit_model(model, data, objective="TraceMeanField_ELBO", steps=10, batch_size=64,
                                  lr=1e-2, progress=False, compile=compile).losses)
    assert not caplog.records
    assert runs[1] == pytest.approx(runs[0], rel=1e-5)


def test_a_structure_change_between_steps_falls_back_with_one_sentence(caplog):
    extra = {"on": False}

    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
            if extra["on"]:  # Python state a trace cannot see
                pyro.sample("x_again", dist.Normal(loc, 2.0), obs=x)

    loss = CompiledLoss(Trace_ELBO(), model, lambda x: None, scaled=scaled, check_every=3)
    x = torch.randn(10) + 1
    with caplog.at_level(logging.WARNING, logger="pyro_zoo.inference.compiled"):
        for call in range(1, 9):
            extra["on"] = call >= 5
            value = loss((x,), 1.0)
            if call in (1, 2, 3):
                assert loss.fallback is None
    # call 6 is the first check after the change (calls 3 and 6 check): from there on, eager
    assert "sample sites changed" in loss.fallback and "x_again" in loss.fallback
    assert [r.getMessage() for r in caplog.records] == [
        f"compile: {loss.fallback}; training continues with the uncompiled Pyro objective"]
    torch.testing.assert_close(value, Trace_ELBO().differentiable_loss(model, lambda x: None, x))


def test_a_program_reading_tensor_values_in_python_trains_uncompiled(caplog):
    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            if x.mean() > 0:  # a data-dependent branch
                pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
            else:
                pyro.sample("x", dist.Normal(loc, 3.0), obs=x)

    x = torch.cat([torch.randn(20) + 2, torch.randn(20) - 2])
    runs = []
    for compile in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        with caplog.at_level(logging.WARNING, logger="pyro_zoo.inference"):
            runs.append(fit(model, lambda x: None, x, steps=8, batch_size=10, lr=0.1, progress=False,
                            compile=compile).losses)
    assert runs[1] == runs[0]
    (record,) = caplog.records
    assert "reads a tensor's value into Python at tests/test_compiled.py:" in record.getMessage()


def test_objectives_without_a_traced_form_train_uncompiled_with_one_sentence(caplog):
    x = torch.randn(20)
    with caplog.at_level(logging.WARNING, logger="pyro_zoo.inference"):
        result = fit(local_model, local_guide, x, steps=3, progress=False, compile=True,
                     objective={"name": "RenyiELBO", "num_particles": 2, "options": {"alpha": 0.0}})
    assert len(result.losses) == 3
    (record,) = caplog.records
    assert record.getMessage().startswith("compile: RenyiELBO has no traced form")


def test_enumerated_discrete_latents_compile():
    """TraceEnum_ELBO summing out z in parallel: the traced body is Pyro's own differentiable_loss."""

    @pyro.infer.config_enumerate
    def model(x):
        weights = pyro.param("weights", torch.tensor([0.4, 0.6]), constraint=dist.constraints.simplex)
        locs = pyro.param("locs", torch.tensor([-1.0, 1.0]))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)

    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    same_step(CompiledLoss(elbo, model, lambda x: None, scaled=scaled), (torch.randn(25),), scale=2.0)
