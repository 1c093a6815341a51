r"""Simulation-based calibration (SBC) of a guide over a model's global latents.

Talts, Betancourt, Simpson, Vehtari & Gelman (2018), "Validating Bayesian inference algorithms
with simulation-based calibration", arXiv:1804.06788. If (θ̃, x̃) ~ p(θ) p(x | θ) and the fitted
guide q(θ | x̃) equals the posterior p(θ | x̃), then θ̃ is one more draw from q: for every scalar
component f(θ) the rank

    r = #{l : f(θ_l) < f(θ̃)},     θ_1..θ_L ~ q(θ | x̃),

is uniform on {0, ..., L}. Repeating R times (a fresh prior draw, data set and fit each time), the
rank histogram of a calibrated guide is flat; a guide too narrow piles ranks at both ends (a U),
one too wide in the middle (a hump), a biased one on one side.

Uniformity test per parameter: ranks binned into B equal bins of the L + 1 values, Pearson's
chi-square X^2 = sum_b (n_b - R/B)^2 / (R/B) on B - 1 degrees of freedom, p = P(chi2_{B-1} > X^2)
(``scipy.stats.chi2``); a run passes when the smallest p-value exceeds ``alpha / P`` for P
parameters (Bonferroni).

Global latents are the model's sample sites outside the "data" plate. One replication: trace
``poutine.uncondition(model)`` on ``x_template`` (draws θ̃ from the prior and x̃ from p(x | θ̃);
the data are assembled from the observed sites as in :func:`pyro_zoo.inference.ais.simulate`), fit a fresh
model (``make_model()``) to x̃, draw L guide samples in one vectorised pass
(``pyro.plate("draws", L, dim=-(max_plate_nesting + 1))``), rank.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from matplotlib.figure import Figure
from scipy.stats import binom, chi2

from pyro_zoo.inference.ais import simulated_data
from pyro_zoo.inference.sites import is_global_latent
from pyro_zoo.inference.train import fit_model

#: SVI settings of each refit (``pyro_zoo.inference.train.fit_model``): TraceEnum_ELBO equals Trace_ELBO where
#: nothing is enumerated, so one setting serves every model; a model with a closed-form loss
#: (``capabilities.closed_form_loss``) is refitted on it, the exact expectation of the same ELBO.
DEFAULT_FIT = {"objective": "TraceEnum_ELBO", "steps": 200, "lr": 0.05}
ALPHA = 0.01


def _fit_guide(model, x: torch.Tensor, **settings) -> None:
    """Fit ``model``'s guide to ``x`` by SVI; the one place SBC calls :func:`pyro_zoo.inference.train.fit`."""
    settings = {"fast": model.capabilities.closed_form_loss, **DEFAULT_FIT, **settings}
    fit_model(model, x, progress=False, **settings)


@dataclass
class SBCResult:
    """Ranks (R,) per scalar parameter (``"p_G[1, 0, 2]"``), in 0..``num_draws``, and their tests."""

    ranks: dict[str, np.ndarray]
    num_draws: int
    num_replications: int
    bins: int
    alpha: float = ALPHA
    seconds: float = 0.0
    chi2: dict[str, float] = field(default_factory=dict)
    p_values: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        expected = self.num_replications / self.bins
        for name in self.ranks:
            counts = self.histogram(name)
            self.chi2[name] = float(((counts - expected) ** 2 / expected).sum())
            self.p_values[name] = float(chi2.sf(self.chi2[name], self.bins - 1))

    def histogram(self, name: str) -> np.ndarray:
        """Counts of the ranks of ``name`` in ``bins`` equal bins of {0..num_draws}, shape (bins,)."""
        binned = self.ranks[name] * self.bins // (self.num_draws + 1)
        return np.bincount(binned, minlength=self.bins)

    @property
    def min_p_value(self) -> float:
        return min(self.p_values.values())

    @property
    def passed(self) -> bool:
        """Every parameter's chi-square p-value above alpha / (number of parameters)."""
        return self.min_p_value > self.alpha / len(self.p_values)

    def summary(self) -> dict:
        worst = min(self.p_values, key=self.p_values.get)
        return {
            "num_replications": self.num_replications,
            "num_draws": self.num_draws,
            "bins": self.bins,
            "num_parameters": len(self.p_values),
            "min_p_value": self.min_p_value,
            "worst_parameter": worst,
            "threshold": self.alpha / len(self.p_values),
            "passed": self.passed,
            "p_values": dict(self.p_values),
            "seconds": self.seconds,
        }

    def figure(self, columns: int = 6):
        """Rank histograms, one panel per parameter, with the 99% band of a uniform histogram."""
        names = list(self.ranks)
        rows = math.ceil(len(names) / columns)
        fig = Figure(figsize=(2.2 * columns, 1.9 * rows + 0.6), dpi=100)
        axes = fig.subplots(rows, columns, squeeze=False)
        expected = self.num_replications / self.bins
        low, high = binom.ppf([0.005, 0.995], self.num_replications, 1 / self.bins)
        for ax, name in zip(axes.flat, names, strict=False):
            ax.bar(np.arange(self.bins), self.histogram(name), width=1.0, color="C0", edgecolor="white")
            ax.axhspan(low, high, color="0.8", zorder=0)
            ax.axhline(expected, color="k", lw=0.8)
            ax.set_title(f"{name}  p={self.p_values[name]:.2g}", fontsize=7)
            ax.set_xticks([])
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        for ax in axes[:, 0]:
            ax.set_ylabel("replications", fontsize=7)
        for ax in axes[-1, :]:
            ax.set_xlabel(f"rank bin (of {self.bins})", fontsize=7)
        verdict = "passes" if self.passed else "FAILS"
        fig.suptitle(f"SBC rank histograms: R = {self.num_replications}, L = {self.num_draws}; "
                     f"{verdict} (min p = {self.min_p_value:.2g}, threshold {self.alpha}/{len(names)})")
        fig.tight_layout()
        return fig


def global_sites(trace) -> list[str]:
    """Names of the latent sample sites outside the "data" plate, in program order."""
    return [name for name, site in trace.nodes.items() if is_global_latent(site)]


def sbc(
    make_model: Callable[[], object],
    x_template: torch.Tensor,
    *,
    num_replications: int = 100,
    num_draws: int = 99,
    bins: int = 10,
    fit_guide: Callable[[object, torch.Tensor], object] | None = None,
    max_plate_nesting: int = 1,
    alpha: float = ALPHA,
) -> SBCResult:
    """Run SBC; see the module docstring.

    ``make_model()`` returns a fresh zoo model (``.model``/``.guide`` Pyro programs) for every
    replication; ``x_template`` (N, ...) sets the size and type of each simulated data set;
    ``fit_guide(model, x)`` fits it (default: SVI by :func:`pyro_zoo.inference.train.fit` with
    :data:`DEFAULT_FIT`). ``num_draws`` guide draws L per replication, ``bins`` histogram bins.
    Raises ``ValueError`` when the model has no global latents.
    """
    start = time.perf_counter()
    fit_guide = fit_guide or _fit_guide
    ranks: dict[str, list[int]] = {}
    for _ in range(num_replications):
        model = make_model()
        with torch.no_grad():
            prior_trace = poutine.trace(poutine.uncondition(model.model)).get_trace(x_template)
        names = global_sites(prior_trace)
        if not names:
            raise ValueError(f"{type(model).__name__} has no global latent variables (sample sites "
                             "outside the 'data' plate); SBC checks a posterior over such parameters")
        x = simulated_data(prior_trace, x_template)
        fit_guide(model, x)
        with torch.no_grad(), pyro.plate("draws", num_draws, dim=-(max_plate_nesting + 1)):
            guide_trace = poutine.trace(model.guide).get_trace(x)
        for name in names:
            truth = prior_trace.nodes[name]["value"].reshape(-1)
            draws = guide_trace.nodes[name]["value"].reshape(num_draws, -1)
            below = (draws < truth).sum(0)
            ties = (draws == truth).sum(0)
            # ties (discrete parameters) are broken at random
            rank = below + (torch.rand(ties.shape, device=ties.device) * (ties + 1)).floor().long()
            shape = prior_trace.nodes[name]["value"].shape
            for flat, index in enumerate(itertools.product(*map(range, shape))):
                label = f"{name}[{', '.join(map(str, index))}]" if index else name
                ranks.setdefault(label, []).append(int(rank[flat]))
    return SBCResult(
        ranks={k: np.asarray(v) for k, v in ranks.items()},
        num_draws=num_draws,
        num_replications=num_replications,
        bins=bins,
        alpha=alpha,
        seconds=time.perf_counter() - start,
    )


__all__ = ["DEFAULT_FIT", "SBCResult", "global_sites", "sbc"]
