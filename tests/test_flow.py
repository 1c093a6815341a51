"""Tests of the normalizing flow (models/flow/): its density against quadrature and against the change
of variables computed by torch autograd, the discrete log P(x) of dequantised grey levels against
quadrature over each bin, the order of its bounds, training and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.autograd.functional import jacobian

from pyro_zoo.cli import main
from pyro_zoo.inference.importance import estimate_log_likelihood, log_weights
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import DataError
from pyro_zoo.models.flow import SPEC, Flow, FlowConfig, hparams_for, load_data


def random_flow(data_dim: int, likelihood: str = "continuous", levels: int = 4, scale: float = 3.0) -> Flow:
    """A small flow whose couplings are far from the identity (weights scaled by ``scale``), built
    from a fixed seed without touching the global random state (which the checks' draws use)."""
    config = FlowConfig(data_dim=data_dim, likelihood=likelihood, levels=levels, num_layers=4, hidden=(16,))
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(2)
        flow = Flow(config)
        for parameter in flow.parameters():
            parameter.copy_(torch.randn_like(parameter) * scale / math.sqrt(max(parameter.shape[-1], 1)))
    return flow.double()


def grid(low: float, high: float, cells: int) -> tuple[torch.Tensor, float]:
    """Midpoints of ``cells`` x ``cells`` squares covering [low, high]^2, and one square's area."""
    width = (high - low) / cells
    ticks = torch.linspace(low + width / 2, high - width / 2, cells, dtype=torch.float64)
    return torch.cartesian_prod(ticks, ticks), width**2


def mass(flow: Flow, low: float, high: float, cells: int = 400) -> float:
    points, area = grid(low, high, cells)
    with torch.no_grad():
        return (flow.density().log_prob(points).exp().sum() * area).item()


def test_density_integrates_to_the_mass_its_samples_put_in_the_box():
    """Midpoint quadrature of p over a box equals the fraction of 100,000 samples in it (4 SE plus
    the quadrature error), and that box holds nearly all the mass."""
    flow = random_flow(2, scale=0.5)
    with torch.no_grad():
        inside = (flow.density().sample((100_000,)).abs() <= 20).all(1).double().mean().item()
    quadrature = mass(flow, -20, 20, cells=800)
    assert inside > 0.99
    assert abs(quadrature - inside) <= 4 * math.sqrt(inside * (1 - inside) / 100_000) + 5e-3


@pytest.mark.parametrize("likelihood", ["continuous", "discrete"])
def test_log_density_is_the_change_of_variables(likelihood):
    """log p(y) = log N(g^{-1}(y)) + log |det J_{g^{-1}}(y)| with the Jacobian from torch autograd and
    its determinant from torch.linalg.slogdet, independent of Pyro's log-determinants."""
    flow = random_flow(6, likelihood, levels=5, scale=1.0)
    y = torch.rand(5, 6, dtype=torch.float64)
    y = y * 5 if likelihood == "discrete" else torch.randn_like(y) * 2

    def inverse(point):
        for transform in reversed(flow.transforms()):
            point = transform.inv(point)
        return point

    for point in y:
        _, log_det = torch.linalg.slogdet(jacobian(inverse, point))
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(inverse(point)).sum() + log_det
        torch.testing.assert_close(flow.density().log_prob(point), expected, rtol=1e-8, atol=1e-8)


def bin_probabilities(flow: Flow, levels: int, cells: int = 40) -> torch.Tensor:
    """P(x) = integral of p over the unit bin of x, by midpoint quadrature, for every x in {0..L-1}^2."""
    offsets, area = grid(0.0, 1.0, cells)
    images = torch.cartesian_prod(*[torch.arange(levels, dtype=torch.float64)] * 2)
    with torch.no_grad():
        density = flow.density().log_prob(images[:, None, :] + offsets).exp()
    return images, density.sum(1) * area


def test_discrete_bounds_bracket_the_bin_probability():
    """On 2-D grey levels 0..3: the dequantisation bound (ELBO) <= the importance-weighted bound
    (IS, K = 20,000, a stochastic lower bound: one-sided with 4 SE) <= log P(x) by quadrature over
    each bin, the IS bound within 4 SE plus 0.01 of it; the bins hold the mass the flow's samples
    put in [0, L)^2."""
    levels = 4
    flow = random_flow(2, "discrete", levels=levels, scale=1.5)
    images, probs = bin_probabilities(flow, levels)
    with torch.no_grad():
        y = flow.density().sample((100_000,))
    in_box = ((y >= 0) & (y < levels)).all(1).double().mean().item()
    assert abs(probs.sum().item() - in_box) <= 4 * math.sqrt(in_box * (1 - in_box) / 100_000) + 2e-3
    result = estimate_log_likelihood(flow.model, flow.guide, images, 20_000, iwae_ks=(1,), psis=False)
    exact = probs.log()
    assert (result.iwae[1] < result.log_px).all()
    assert (result.log_px <= exact + 4 * result.log_px_se).all()
    assert ((result.log_px - exact).abs() <= 4 * result.log_px_se + 0.01).all(), (result.log_px, exact)
    assert (exact - result.iwae[1]).min() > 0.01  # the ELBO's gap is real, so the checks have teeth


def test_importance_weights_hold_no_graph():
    """The flow's density runs its couplings when a site's log-probability is computed, after the
    trace: the importance weights must still carry no autograd graph, which would keep every
    pass's activations alive until the estimate ends (the digits table's flow at K = 5000 ran out
    of 23 GB that way)."""
    flow = random_flow(2, "discrete", levels=4)
    x = torch.tensor([[0.0, 3.0], [2.0, 1.0]], dtype=torch.float64)
    assert not log_weights(flow.model, flow.guide, x, 8).requires_grad
    assert not estimate_log_likelihood(flow.model, flow.guide, x, 30, iwae_ks=(1,)).log_px.requires_grad


def test_pyro_objective_is_the_dequantisation_bound():
    """Trace_ELBO on model/guide (the uniform guide cancels the uniform prior) has the mean of
    E_u[log p(x + u)] computed in torch: 200 draws each, within 4 SE of their difference."""
    flow = random_flow(2, "discrete", levels=4)
    x = torch.tensor([[0.0, 3.0], [2.0, 1.0]], dtype=torch.float64)
    pyros = torch.tensor([-Trace_ELBO().loss(flow.model, flow.guide, x) for _ in range(200)])
    ours = torch.stack([flow.dequantized_bound(x).sum().detach() for _ in range(200)])
    se = (pyros.var() / 200 + ours.var() / 200).sqrt()
    assert abs(pyros.mean() - ours.mean()) <= 4 * se


def test_digits_data_and_hparams():
    assert hparams_for(load_data("train")) == {"data_dim": 64, "levels": 17}
    digits = load_data("test", data="digits")
    assert torch.equal(digits.x, digits.x.round()) and digits.x.max() == 16


def test_training_raises_the_bound(one_thread):
    train, test = load_data("train"), load_data("test")
    flow = SPEC.build(SPEC.resolve(smoke=True, data=train))
    before = flow.metrics(test)["dequantized_bound"]
    fit_model(flow, train.x, epochs=3, batch_size=64, lr=1e-3, progress=False)
    after = flow.metrics(test)["dequantized_bound"]
    assert after["value"] - before["value"] > 4 * math.hypot(after["se"], before["se"])


def test_non_integer_data_are_refused():
    flow = Flow(FlowConfig(num_layers=1, hidden=(8,)))
    x = load_data("train").x
    with pytest.raises(DataError, match=r"whole grey levels 0\.\.16"):
        flow.check_data(x + 0.5)
    with pytest.raises(DataError, match=r"whole grey levels 0\.\.16"):
        flow.check_data(x + 1)  # 17 is beyond the levels
    Flow(FlowConfig(likelihood="continuous", num_layers=1, hidden=(8,))).check_data(x + 0.5)


def test_cli_refuses_data_beyond_the_levels(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "flow", "--smoke", "--set", "levels=5", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "whole grey levels 0..4" in err[0], err
    assert not out.exists()
