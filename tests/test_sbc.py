"""Simulation-based calibration: the conjugate student guide passes, a deliberately overconfident
one (concentrations x 3) fails, and SVI fits are checked in a slow run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyro_zoo.inference.sbc import SBCResult, sbc
from pyro_zoo.models.dlgm import DLGM
from pyro_zoo.models.student import StudentConfig, StudentNetwork
from tests.conftest import SEED

pytestmark = pytest.mark.usefixtures("one_thread")

TEMPLATE = torch.zeros(50, 5, dtype=torch.long)


def conjugate(model, x):
    model.conjugate_update(x)


def overconfident(model, x):
    model.conjugate_update(x)
    with torch.no_grad():
        for log_strength in model.log_strength.values():
            log_strength.add_(math.log(3.0))


@pytest.mark.statistical
def test_sbc_passes_for_the_conjugate_guide_and_fails_when_it_is_overconfident(tmp_path):
    good = sbc(StudentNetwork, TEMPLATE, num_replications=100, fit_guide=conjugate)
    bad = sbc(StudentNetwork, TEMPLATE, num_replications=100, fit_guide=overconfident)
    print(f"SBC min p-value: conjugate {good.min_p_value:.3g}, concentrations x 3 {bad.min_p_value:.3g} "
          f"(threshold {good.summary()['threshold']:.2g})")
    assert len(good.p_values) == 2 + 2 + 12 + 4 + 6
    assert good.passed and not bad.passed
    # a too-narrow guide puts the prior draw in its tails: ranks pile up in the end bins
    ends = sum(bad.histogram(name)[[0, -1]].sum() for name in bad.ranks) / len(bad.ranks)
    assert ends > 1.5 * 2 * bad.num_replications / bad.bins
    fig = bad.figure()
    assert fig.dpi >= 100 and fig.axes[0].get_ylabel() and any(ax.get_xlabel() for ax in fig.axes)
    fig.savefig(tmp_path / "sbc.png")
    assert (tmp_path / "sbc.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.statistical
def test_uniformity_test_on_known_ranks():
    rng = np.random.default_rng(SEED)
    uniform = SBCResult({"a": rng.integers(0, 100, 2000)}, num_draws=99, num_replications=2000, bins=10)
    skewed = SBCResult({"a": rng.integers(0, 60, 2000)}, num_draws=99, num_replications=2000, bins=10)
    assert uniform.histogram("a").sum() == 2000 and uniform.p_values["a"] > 1e-3
    assert skewed.p_values["a"] < 1e-10 and not skewed.passed


def test_sbc_needs_global_latents():
    with pytest.raises(ValueError, match="no global latent"):
        sbc(lambda: DLGM(), torch.zeros(5, 2), num_replications=1, fit_guide=lambda m, x: None)


@pytest.mark.slow
@pytest.mark.statistical
def test_sbc_of_natural_gradient_svi_passes():
    result = sbc(StudentNetwork, TEMPLATE, num_replications=200,
                 fit_guide=lambda model, x: model.natural_gradient_svi(x, steps=100))
    print(f"SBC of natural-gradient SVI: min p {result.min_p_value:.3g}")
    assert result.passed


@pytest.mark.slow
@pytest.mark.statistical
def test_sbc_of_adam_svi_started_near_the_expected_counts_passes():
    # the default fit (pyro_zoo.inference.train.fit, Adam on TraceEnum_ELBO, 200 steps): Adam barely moves
    # a row's strength, so it starts near the expected count of a row (50 rows / a few parent configurations)
    result = sbc(lambda: StudentNetwork(StudentConfig(init_concentration=50.0)), TEMPLATE,
                 num_replications=100)
    print(f"SBC of Adam SVI: min p {result.min_p_value:.3g} ({result.seconds:.0f} s)")
    assert result.passed
