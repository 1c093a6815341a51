r"""Diagnostics of importance weights and of how a Gaussian-type guide uses its latents.

Pareto k̂ (Vehtari et al. 2024, "Pareto smoothed importance sampling", JMLR 25(72)). The
largest importance weights w = p(x, z) / q(z | x) are fitted by a generalised Pareto
distribution with shape k; the weights have finite moments of order < 1/k: finite variance (the
importance-sampling estimate and its delta-method SE valid) for k < 1/2. With S particles an
estimate is reliable up to the sample-size-aware threshold (the paper's section 3, as ArviZ's
``loo`` uses it)

    tau(S) = min(1 - 1 / log10 S, 0.7)          (0.5 at S = 100, 0.67 at 1000, 0.7 from 2154)

k̂ comes from ArviZ's ``psislw`` (see :func:`inference.importance.pareto_khat`), one per data point:
NaN where S is too small to fit a tail, -inf where the largest weights are tied (bounded weights).
:func:`khat_summary` reports the fraction of data points over tau(S), never one word for the whole
set, and warns when that fraction is more than chance alone puts there where every point's weights
have finite variance: k̂ fits M = ceil(min(S / 5, 3 sqrt S)) tail draws, so at k = 1/2 it scatters
(about normally) with sd (1 + k) / sqrt(M) (the maximum-likelihood asymptotics, shrunk by ArviZ's
weak prior to (M k + 5) / (M + 10)); the share over tau by chance is then 50 % at S = 100, 12 % at
S = 1000 and 2 % at S = 5000, and the summary warns above that share plus 4 binomial SEs.

Importance-sampling effective sample size (Kong 1992): ESS = (sum_k w_k)^2 / sum_k w_k^2, in
[1, K]; ESS / K near 1 means q(z | x) is close to p(z | x).

Latent usage for guides whose latent sites factorise over units (e.g. q(z | x) =
N(mu(x), diag(sigma(x)^2))), computed generically from traces:

    KL_d      = E_x E_q[ KL(q(z_d | x, pa) || p(z_d | pa)) ]        per unit d, nats per data point
    A_d       = Var_x( E_{q(z | x)}[z_d] )  (over the N rows)        active if A_d > 0.01

(Burda et al. 2016, "Importance Weighted Autoencoders", section 5.2), where pa are the unit's
parents in the model, drawn from the guide. Models may also define ``kl_per_dim(x)`` and
``active_units(x)``; :func:`model_latent_usage` calls them when present.
"""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent, kl_divergence

from inference.importance import MIN_PSIS_PARTICLES, pareto_khat
from inference.programs import as_tensors
from models.base import DATA_PLATE

#: k < 1/2: the weights have finite variance
FINITE_VARIANCE_K = 0.5
#: the largest threshold, reached from S = 10^(1 / 0.3) = 2154 particles
KHAT_MAX_THRESHOLD = 0.7
ACTIVE_THRESHOLD = 0.01


def khat_threshold(num_particles: int) -> float:
    """tau(S) = min(1 - 1 / log10 S, 0.7) of Vehtari et al. (2024) for S = ``num_particles``."""
    return min(1 - 1 / math.log10(num_particles), KHAT_MAX_THRESHOLD)


def khat_over_by_chance(num_particles: int) -> float:
    """The share of data points whose k̂ exceeds tau(S) by chance alone where the weights have
    finite variance (k = 1/2): P(N(mean, sd^2) > tau) with the mean and sd of the module docstring."""
    tail = math.ceil(min(num_particles / 5, 3 * math.sqrt(num_particles)))
    mean = (tail * FINITE_VARIANCE_K + 5) / (tail + 10)
    sd = (1 + FINITE_VARIANCE_K) / math.sqrt(tail) * tail / (tail + 10)
    return 0.5 * math.erfc((khat_threshold(num_particles) - mean) / (sd * math.sqrt(2)))


def khat_summary(khat: torch.Tensor, num_particles: int) -> dict:
    """k̂ per data point against tau(S), S = ``num_particles``: the threshold, the fraction of data
    points over it, the fraction chance alone puts there (finite-variance weights), the fractions
    not estimated, max and median; and a ``warning`` when the fraction over tau exceeds the chance
    share by more than 4 binomial standard errors (see the module docstring)."""
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
            f"k̂ > {threshold:.2f} at {over:.0%} of the data points, more than chance puts there where the "
            f"weights have finite variance (up to {allowed:.0%}): there the importance-sampling estimate "
            "and its SE are unreliable; use more particles, a better proposal or AIS")
    return out


def importance_ess(log_w: torch.Tensor) -> torch.Tensor:
    """ESS = (sum w)^2 / sum w^2 per data point, shape (N,), from log weights (K, N)."""
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


def ess_summary(ess: torch.Tensor, num_particles: int) -> dict:
    """Mean, median and min of the IS effective sample size over data points, also relative to K."""
    ess = torch.as_tensor(ess, dtype=torch.float32).reshape(-1).cpu()
    return {
        "mean": ess.mean().item(),
        "median": ess.median().item(),
        "min": ess.min().item(),
        "relative_mean": ess.mean().item() / num_particles,
    }


def psis_diagnostics(log_w: torch.Tensor) -> dict:
    """k̂ summary and ESS summary of log weights (K, N) in one dict."""
    return {
        "khat": khat_summary(pareto_khat(log_w), log_w.shape[0]),
        "ess": ess_summary(importance_ess(log_w), log_w.shape[0]),
    }


def latent_usage(
    model,
    guide,
    x,
    *,
    num_particles: int = 16,
    max_plate_nesting: int = 1,
    threshold: float = ACTIVE_THRESHOLD,
) -> dict[str, dict]:
    """KL per unit and active units of every real-valued local latent site of ``guide``.

    ``x``: the data, a tensor or a tuple of tensors (``model(*x)``, e.g. ``(x, y)``).

    Returns ``{site: {"kl": float, "kl_per_dim": [U floats] or None, "activity": [U floats],
    "active_units": int, "num_units": U}}`` where the U units of a site are its event elements
    (and inner-plate elements), KL in nats per data point. KL_d is the closed form
    ``kl_divergence`` of the per-unit distributions where PyTorch has one, else the Monte Carlo
    average of log q - log p over ``num_particles`` draws. Where q or p does not factorise over
    units (e.g. a full-covariance guide) only the site's total KL is given (``kl_per_dim`` None).
    Sites outside the data plate and discrete sites are left out.
    """
    data = as_tensors(x)
    x = data[0]
    if x.shape[0] < 2:
        raise ValueError("active units need at least two data points (a variance over x)")
    with torch.no_grad(), pyro.plate("particles", num_particles, dim=-(max_plate_nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(*data)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*data)
    shape = (num_particles, x.shape[0])
    usage = {}
    for name, site in guide_trace.nodes.items():
        if not _is_local_real_latent(site) or name not in model_trace.nodes:
            continue
        q, p = site["fn"], model_trace.nodes[name]["fn"]
        q_units, p_units = _units(q), _units(p)
        factorised = q_units is not None and p_units is not None
        if factorised:
            q, p = q_units, p_units
        kl = _per_unit(_kl(q, p, site["value"]), shape, max_plate_nesting).mean(0)
        kl_per_dim = kl.mean(0) if factorised else None
        # A_d = Var_x(E_q[z_d | x]), E_q averaged over the guide's draws of upstream latents
        activity = _per_unit(site["fn"].mean, shape, max_plate_nesting).mean(0).var(0, correction=0)
        usage[name] = {
            "kl": kl.sum(-1).mean().item(),
            "kl_per_dim": None if kl_per_dim is None else kl_per_dim.tolist(),
            "activity": activity.tolist(),
            "active_units": int((activity > threshold).sum()),
            "num_units": activity.numel(),
        }
    return usage


def _kl(q, p, value: torch.Tensor) -> torch.Tensor:
    """KL(q || p) in closed form where PyTorch has it, else the one-draw estimate log q - log p."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return q.log_prob(value) - p.log_prob(value)


def model_latent_usage(model, x: torch.Tensor) -> dict:
    """The model's own ``kl_per_dim(x)`` and ``active_units(x)`` (``capabilities.latent_usage``)."""
    with torch.no_grad():
        return {"kl_per_dim": _plain(model.kl_per_dim(x)), "active_units": _plain(model.active_units(x))}


def _is_local_real_latent(site) -> bool:
    if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
        return False
    if not any(frame.name == DATA_PLATE for frame in site["cond_indep_stack"]):
        return False
    support = site["fn"].support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _units(fn):
    """The per-unit distribution under ``Independent`` wrappers, or None if it does not factorise."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn if fn.event_shape == () else None


def _per_unit(t: torch.Tensor, shape: tuple[int, int], max_plate_nesting: int) -> torch.Tensor:
    """Elementwise tensor (particles, *inner plates, N, *event) -> (particles, N, units)."""
    batch_dims = max_plate_nesting + 1
    t = t.reshape((1,) * max(0, batch_dims - t.dim()) + t.shape)
    t = t.expand(shape[:1] + t.shape[1:])
    t = t.movedim(batch_dims - 1, 1)
    return t.reshape(shape[0], shape[1], -1)


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.detach().cpu().tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


__all__ = [
    "ACTIVE_THRESHOLD", "FINITE_VARIANCE_K", "KHAT_MAX_THRESHOLD", "ess_summary", "importance_ess",
    "khat_over_by_chance", "khat_summary", "khat_threshold", "latent_usage", "model_latent_usage",
    "pareto_khat", "psis_diagnostics"
]
