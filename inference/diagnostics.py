r"""Diagnostics of importance weights and of how a Gaussian-type guide uses its latents (PSIS k̂
is :mod:`pyro_zoo.inference.psis`).

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

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from torch.distributions import Independent, kl_divergence

from pyro_zoo.inference.plain import to_json
from pyro_zoo.inference.programs import as_tensors
from pyro_zoo.inference.psis import khat_summary, pareto_khat
from pyro_zoo.inference.sites import is_local_latent

ACTIVE_THRESHOLD = 0.01


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
        return {"kl_per_dim": to_json(model.kl_per_dim(x)), "active_units": to_json(model.active_units(x))}


def _is_local_real_latent(site) -> bool:
    if not is_local_latent(site):
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


__all__ = [
    "ACTIVE_THRESHOLD", "ess_summary", "importance_ess", "latent_usage", "model_latent_usage",
    "psis_diagnostics",
]
