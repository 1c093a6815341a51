"""The contract every model keeps -- registered ones and a user's own file (``USER_FILE``, a plain
Pyro program with an AutoGuide); a new model is checked with no edits here.

The contract is small: ``model(*inputs)``/``guide(*inputs)`` over the declared ``inputs``, one
SVI step with finite gradients, matching sites, a state that round-trips, data checks and a
complete spec. Everything else is checked where the model declares it (``capabilities``).
"""

from __future__ import annotations

from pathlib import Path

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.poutine.util import site_is_subsample

from pyro_zoo.inference.importance import log_weights
from pyro_zoo.inference.train import ELBOS, as_objective
from pyro_zoo.models import REGISTRY, get_spec
from tests.conftest import requires_cuda

DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])]
#: a user's own model file, resolved by get_spec like a registered name
USER_FILE = str(Path(__file__).resolve().parent / "user_model_example.py")
MODELS = [*sorted(REGISTRY), pytest.param(USER_FILE, id="user_model_example.py")]


def _elbo(spec):
    return as_objective(spec.objective_for(spec.config.smoke())).build(spec.max_plate_nesting)


def _setup(name, device):
    """(spec, model, inputs): the smoke model fitted to its data (as ``zoo train`` builds it) and
    the first 32 rows of its declared inputs, e.g. ``(x,)`` or ``(x, y)``."""
    spec = get_spec(name)
    data = spec.load_data("train", smoke=True)
    model = spec.build(spec.resolve(smoke=True, data=data)).to(device)
    inputs = tuple(t[:32] for t in data.to(device).inputs(model.inputs))
    return spec, model, inputs


def _preprocessed(model, inputs):
    out = model.preprocess(*inputs)
    return out if isinstance(out, tuple) else (out,)


def _touch(model, inputs):
    """Run guide and model once, so parameters a program creates lazily (AutoGuides) exist."""
    with torch.no_grad():
        poutine.trace(model.guide).get_trace(*inputs)
        poutine.trace(model.model).get_trace(*inputs)


def _trainable(model):
    """Module parameters and param-store parameters (a plain program's), each once."""
    found = {id(p): p for p in model.parameters()}
    found.update({id(p): p for p in pyro.get_param_store().get_state()["params"].values()})
    return list(found.values())


def _sites(trace):
    return {
        name: site for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_one_svi_step(name, device):
    spec, model, inputs = _setup(name, device)
    loss = _elbo(spec).differentiable_loss(model.model, model.guide, *_preprocessed(model, inputs))
    assert torch.isfinite(loss), f"{name}: loss {loss}"
    assert loss.device.type == device
    loss.backward()
    grads = [p.grad for p in _trainable(model) if p.grad is not None]
    assert grads, f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.statistical
@pytest.mark.parametrize("name", MODELS)
def test_closed_form_loss_has_the_pyro_objective_expectation(name):
    """A declared closed-form ``elbo_loss`` (the opt-in fast path) and the spec's Pyro objective
    agree in mean over repeated draws, within 4 standard errors of the difference (plus float
    rounding); a model that declares none has none."""
    spec, model, inputs = _setup(name, "cpu")
    inputs = _preprocessed(model, inputs)
    if not model.capabilities.closed_form_loss:
        with pytest.raises(NotImplementedError):
            model.elbo_loss(*inputs)
        return
    (x,) = inputs  # the closed-form fast path exists for single-input models
    pyro_fn = _elbo(spec).loss
    ours = torch.tensor([model.elbo_loss(x, num_data=100).item() for _ in range(200)], dtype=torch.float64)
    pyros = torch.tensor([pyro_fn(model.model, model.guide, x, num_data=100) for _ in range(200)])
    se = (ours.var() / len(ours) + pyros.var() / len(pyros)).sqrt()
    gap = abs(ours.mean() - pyros.mean())
    assert gap <= 4 * se + 1e-5 * abs(pyros.mean()), (ours.mean(), pyros.mean(), se)


@pytest.mark.parametrize("name", MODELS)
def test_model_and_guide_sites_agree(name):
    _, model, inputs = _setup(name, "cpu")
    guide_trace = poutine.trace(model.guide).get_trace(*inputs)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(*inputs)
    latent = {n for n, s in _sites(model_trace).items() if not s["is_observed"]}
    enumerated = {n for n in latent if model_trace.nodes[n]["infer"].get("enumerate") == "parallel"}
    guide_sites = {n for n, s in _sites(guide_trace).items() if not s["infer"].get("is_auxiliary")}
    assert guide_sites <= latent, f"guide samples sites the model lacks: {guide_sites - latent}"
    missing = latent - enumerated - guide_sites
    assert not missing, f"latents missing from the guide: {missing}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_samples_have_documented_shape(name, device):
    _, model, _ = _setup(name, device)
    if not model.capabilities.samples:
        pytest.skip("declares no sampler (capabilities.samples)")
    samples = model.sample(7)
    assert samples.shape == (7, *model.event_shape)
    assert samples.device.type == device
    assert samples.dtype.is_floating_point == model.data_dtype.is_floating_point
    model.check_data(samples)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_vectorised_log_weights(name, device):
    spec, model, inputs = _setup(name, device)
    if not model.capabilities.importance_sampling:
        pytest.skip("global latents: no per-data-point importance sampling (capabilities)")
    local_model, local_guide = model.local_pair()
    batch = _preprocessed(model, tuple(t[:8] for t in inputs))
    log_w = log_weights(local_model, local_guide, batch, 5, spec.max_plate_nesting)
    assert log_w.shape == (5, 8)
    assert torch.isfinite(log_w).all()


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip(name):
    spec, model, inputs = _setup(name, "cpu")
    _touch(model, inputs)
    clone = spec.build(spec.resolve(smoke=True, data=spec.load_data("train", smoke=True)))
    _touch(clone, inputs)
    clone.load_state_dict(model.state_dict())
    for a, b in zip(model.state_dict().values(), clone.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    if model.capabilities.exact_log_prob:
        torch.testing.assert_close(model.exact_log_prob(*inputs), clone.exact_log_prob(*inputs))


@pytest.mark.parametrize("name", MODELS)
def test_spec_is_complete(name):
    spec = get_spec(name)
    assert spec.name == name or spec.source == name
    assert spec.objective_for(spec.config())["name"] in ELBOS
    assert spec.description
    settings = spec.train_settings(smoke=True)
    assert ("steps" in settings) != ("epochs" in settings)
    assert "lr" in settings


@pytest.mark.parametrize("name", MODELS)
def test_every_hyperparameter_declares_its_bounds_or_choices(name):
    """The config is the one source of ``--set`` checking: a name has choices, a number or a tuple of
    numbers both bounds, a tuple a maximum length; the defaults and the smoke variant obey them."""
    config = get_spec(name).config
    for field, (kind, rule) in config.rules().items():
        if kind is str:
            assert rule.choices, f"{name}: {field} declares no choices"
        elif kind is not bool:
            assert rule.low is not None and rule.high is not None, f"{name}: {field} lacks a bound"
        if kind is tuple:
            assert rule.max_len is not None, f"{name}: {field} declares no maximum length"
    assert config().to_dict() == config.from_dict(config().to_dict()).to_dict()
    config.smoke()


@pytest.mark.parametrize("name", MODELS)
def test_rejects_bad_data(name):
    from pyro_zoo.models import DataError

    _, model, inputs = _setup(name, "cpu")
    x = inputs[0]
    with pytest.raises(DataError):
        model.check_data(x.unsqueeze(-1))
    if x.dtype.is_floating_point:
        bad = x.clone()
        bad.view(-1)[0] = float("nan")
        with pytest.raises(DataError):
            model.check_data(bad)
