"""The contract every registered model must keep; a new model is checked with no edits here."""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.poutine.util import site_is_subsample

from inference.importance import log_weights
from inference.train import ELBOS, as_objective
from models import REGISTRY, get_spec
from tests.conftest import requires_cuda

DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])]


def _elbo(spec):
    return as_objective(spec.objective_for(spec.hparams)).build(spec.max_plate_nesting)


def _setup(name, device):
    spec = get_spec(name)
    model = spec.make(smoke=True).to(device)
    data = spec.load_data("train", smoke=True).to(device)
    return spec, model, data.x[:32]


def _sites(trace):
    return {
        name: site for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_one_svi_step(name, device):
    spec, model, x = _setup(name, device)
    loss = _elbo(spec).differentiable_loss(model.model, model.guide, model.preprocess(x))
    assert torch.isfinite(loss), f"{name}: loss {loss}"
    assert loss.device.type == device
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert len(pyro.get_param_store()) == 0, f"{name}: parameters must be nn.Parameters, not pyro.param"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_closed_form_loss_has_the_pyro_objective_expectation(name):
    """A declared closed-form ``elbo_loss`` (the opt-in fast path) and the spec's Pyro objective
    agree in mean over repeated draws, within 4 standard errors of the difference (plus float
    rounding); a model that declares none has none."""
    spec, model, x = _setup(name, "cpu")
    x = model.preprocess(x)
    if not model.capabilities.closed_form_loss:
        with pytest.raises(NotImplementedError):
            model.elbo_loss(x)
        return
    pyro_fn = _elbo(spec).loss
    ours = torch.tensor([model.elbo_loss(x, num_data=100).item() for _ in range(200)], dtype=torch.float64)
    pyros = torch.tensor([pyro_fn(model.model, model.guide, x, num_data=100) for _ in range(200)])
    se = (ours.var() / len(ours) + pyros.var() / len(pyros)).sqrt()
    gap = abs(ours.mean() - pyros.mean())
    assert gap <= 4 * se + 1e-5 * abs(pyros.mean()), (ours.mean(), pyros.mean(), se)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_model_and_guide_sites_agree(name):
    _, model, x = _setup(name, "cpu")
    guide_trace = poutine.trace(model.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    latent = {n for n, s in _sites(model_trace).items() if not s["is_observed"]}
    enumerated = {n for n in latent if model_trace.nodes[n]["infer"].get("enumerate") == "parallel"}
    guide_sites = set(_sites(guide_trace))
    assert guide_sites <= latent, f"guide samples sites the model lacks: {guide_sites - latent}"
    missing = latent - enumerated - guide_sites
    assert not missing, f"latents missing from the guide: {missing}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_samples_have_documented_shape(name, device):
    _, model, x = _setup(name, device)
    samples = model.sample(7)
    assert samples.shape == (7, *model.event_shape)
    assert samples.device.type == device
    assert samples.dtype.is_floating_point == model.data_dtype.is_floating_point
    model.check_data(samples)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_vectorised_log_weights(name, device):
    spec, model, x = _setup(name, device)
    local_model, local_guide = model.local_pair()
    log_w = log_weights(local_model, local_guide, model.preprocess(x[:8]), 5, spec.max_plate_nesting)
    assert log_w.shape == (5, 8)
    assert torch.isfinite(log_w).all()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_state_dict_round_trip(name):
    spec, model, x = _setup(name, "cpu")
    clone = spec.make(smoke=True)
    clone.load_state_dict(model.state_dict())
    for a, b in zip(model.state_dict().values(), clone.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    if model.capabilities.exact_log_prob:
        torch.testing.assert_close(model.exact_log_prob(x), clone.exact_log_prob(x))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_spec_is_complete(name):
    spec = get_spec(name)
    assert spec.name == name
    assert spec.objective_for(spec.hparams)["name"] in ELBOS
    assert spec.description
    settings = spec.train_settings(smoke=True)
    assert ("steps" in settings) != ("epochs" in settings)
    assert "lr" in settings


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_rejects_bad_data(name):
    from models import DataError

    _, model, x = _setup(name, "cpu")
    with pytest.raises(DataError):
        model.check_data(x.unsqueeze(-1))
    if x.dtype.is_floating_point:
        bad = x.clone()
        bad.view(-1)[0] = float("nan")
        with pytest.raises(DataError):
            model.check_data(bad)
