r"""Pareto-smoothed importance sampling diagnostics: k̂ per data point and what it means.

Pareto k̂ (Vehtari et al. 2024, "Pareto smoothed importance sampling", JMLR 25(72)). The
largest importance weights w = p(x, z) / q(z | x) are fitted by a generalised Pareto
distribution with shape k; the weights have finite moments of order < 1/k: finite variance (the
importance-sampling estimate and its delta-method SE valid) for k < 1/2. With S particles an
estimate is reliable up to the sample-size-aware threshold (the paper's section 3, as ArviZ's
``loo`` uses it)

    tau(S) = min(1 - 1 / log10 S, 0.7)          (0.5 at S = 100, 0.67 at 1000, 0.7 from 2154)

k̂ comes from ArviZ's ``psislw`` (:func:`pareto_khat`), one per data point:
NaN where S is too small to fit a tail, -inf where the largest weights are tied (bounded weights).
:func:`khat_summary` reports the fraction of data points over tau(S), never one word for the whole
set, and warns when that fraction is more than chance alone puts there where every point's
estimate is still reliable, k = tau(S) (the paper's criterion: below tau(S), S draws suffice). k̂
fits M = ceil(min(S / 5, 3 sqrt S)) tail draws, so at k it scatters (about normally) with sd
(1 + k) / sqrt(M) (the maximum-likelihood asymptotics, shrunk by ArviZ's weak prior to
(M k + 5) / (M + 10)); the share over tau by chance is then 50 % at S = 100, 46 % at S = 1000 and
47 % at S = 5000, and the summary warns above that share plus 4 binomial SEs: when clearly more
than half the points' weights are too heavy-tailed for S particles. A null at the edge of finite
variance (k = 1/2) would be stricter and wrong: the smoke DLGM's weights sit between 1/2 and
tau(1000) at a third of its points in some seeds while its estimate is within its SE of the
exact log p(x) (a seed sweep of the demo's report found that null warning at 6 seeds of 19).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pyro_zoo.inference.arviz_io import arviz

#: the fewest particles for which PSIS has the five tail draws it needs (ceil(K / 5) > 4).
MIN_PSIS_PARTICLES = 21
#: k < 1/2: the weights have finite variance
FINITE_VARIANCE_K = 0.5
#: the largest threshold, reached from S = 10^(1 / 0.3) = 2154 particles
KHAT_MAX_THRESHOLD = 0.7


def pareto_khat(log_w: torch.Tensor) -> torch.Tensor:
    """PSIS Pareto shape k̂ per data point from log weights (K, N), via ArviZ's ``psislw``.

    PSIS fits the largest min(K/5, 3 sqrt(K)) weights, so k̂ is NaN (not estimated) for
    K < ``MIN_PSIS_PARTICLES``. Where the weights are bounded with nothing to fit, k̂ is -inf:
    weights equal to within the square root of the working precision (the exact posterior as
    proposal), or largest weights tied (a few distinct weights from discrete latents, where
    ArviZ reports +inf).
    """
    az = arviz()
    if log_w.shape[0] < MIN_PSIS_PARTICLES:
        return torch.full(log_w.shape[1:2], float("nan"))
    values = log_w.detach().double().cpu()
    spread = values.max(0).values - values.min(0).values
    flat = spread <= math.sqrt(torch.finfo(log_w.dtype).eps) * values.abs().max(0).values.clamp(min=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        _, fitted = az.psislw(values.numpy().T)
    khat = torch.as_tensor(fitted, dtype=torch.float32).reshape(-1)
    return khat.masked_fill(torch.isposinf(khat) | flat, float("-inf"))


def khat_threshold(num_particles: int) -> float:
    """tau(S) = min(1 - 1 / log10 S, 0.7) of Vehtari et al. (2024) for S = ``num_particles``."""
    return min(1 - 1 / math.log10(num_particles), KHAT_MAX_THRESHOLD)


def khat_over_by_chance(num_particles: int, k: float | None = None) -> float:
    """The share of data points whose k̂ exceeds tau(S), S = ``num_particles``, by chance alone where
    every point's weights have Pareto shape ``k`` (default tau(S), the edge of reliability):
    P(N(mean, sd^2) > tau) with the mean and sd of the module docstring."""
    tail = math.ceil(min(num_particles / 5, 3 * math.sqrt(num_particles)))
    threshold = khat_threshold(num_particles)
    k = threshold if k is None else k
    mean = (tail * k + 5) / (tail + 10)
    sd = (1 + k) / math.sqrt(tail) * tail / (tail + 10)
    return 0.5 * math.erfc((threshold - mean) / (sd * math.sqrt(2)))


def khat_summary(khat: torch.Tensor, num_particles: int) -> dict:
    """k̂ per data point against tau(S), S = ``num_particles``: the threshold, the fraction of data
    points over it, the fraction chance alone puts there (every point at k = tau), the fractions
    not estimated, max and median; and a ``warning`` when the fraction over tau exceeds the share
    chance puts there at k = tau by more than 4 binomial standard errors (see the module docstring)."""
    if num_particles < MIN_PSIS_PARTICLES:
        return {"num_particles": num_particles, "not estimated": 1.0,
                "note": f"PSIS needs at least {MIN_PSIS_PARTICLES} particles"}
    k = torch.as_tensor(khat, dtype=torch.float32).reshape(-1).cpu()
    estimated = k[~torch.isnan(k)]
    n = max(k.numel(), 1)
    threshold, chance = khat_threshold(num_particles), khat_over_by_chance(num_particles)
    over = (estimated > threshold).sum().item() / n
    out = {
        "num_particles": num_particles,
        "threshold": threshold,
        "over threshold": over,
        "over threshold by chance": chance,
        "not estimated": 1 - estimated.numel() / n,
        "max": estimated.max().item() if estimated.numel() else float("nan"),
        "median": estimated.median().item() if estimated.numel() else float("nan"),
    }
    allowed = chance + 4 * math.sqrt(chance * (1 - chance) / n)
    if over > allowed:
        out["warning"] = (
            f"k̂ > {threshold:.2f} at {over:.0%} of the data points, more than chance puts there where "
            f"every point's estimate is reliable (up to {allowed:.0%}): there the importance-sampling "
            "estimate and its SE are unreliable; use more particles, a better proposal or AIS")
    return out


__all__ = [
    "FINITE_VARIANCE_K", "KHAT_MAX_THRESHOLD", "MIN_PSIS_PARTICLES", "khat_over_by_chance", "khat_summary",
    "khat_threshold", "pareto_khat",
]
