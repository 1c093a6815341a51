r"""The one module that converts Pyro output to ArviZ ``InferenceData`` (arviz 0.23).

Two sources of posterior draws of a model's global latents θ (latents outside the data plate):

* :func:`from_guide` -- S draws θ_s ~ q(θ) from a trained guide (``az.from_dict``);
* :func:`from_nuts` -- S draws from ``pyro.infer.MCMC(NUTS(model))`` (``az.from_pyro``).

Both carry the same groups: ``posterior`` (one variable per global site, shape
``(chain, draw, *site_shape)``), ``observed_data`` (``x``, shape ``(data, ...)``) and a
pointwise ``log_likelihood`` with one variable ``x`` of shape ``(chain, draw, data)``,

    log_likelihood[c, s, n] = log p(x_n | θ_{c,s}) = sum over the observed sites of row n,

computed in one vectorised trace of the model conditioned on all draws at once under
``pyro.plate("particles", S, dim=-(max_plate_nesting + 1))``, as in :mod:`pyro_zoo.inference.importance`.
This needs a model whose only latents are global (per-row latents would have to be summed out);
latent sites whose mask is all False (``obs_mask`` on fully observed data) contribute nothing
and are ignored. NUTS also gets the model with such sites conditioned away, so no enumeration
runs for fully observed data. A later move to ArviZ 1.x touches only this file.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch
from matplotlib.figure import Figure
from pyro.infer import MCMC, NUTS
from pyro.poutine.util import site_is_subsample

from pyro_zoo.inference.programs import as_tensors
from pyro_zoo.inference.sites import in_data_plate, is_global_latent
from pyro_zoo.models.base import DATA_PLATE

DATA_VAR = "x"
DIMS = {DATA_VAR: [DATA_PLATE]}
#: arviz 0.23 warns at import, once a day per machine, that a 1.x refactor is coming; the text
#: starts with a newline, hence the leading \s*.
ARVIZ_REFACTOR_WARNING = r"\s*ArviZ is undergoing a major refactor"


def arviz():
    """The ``arviz`` module, imported without its once-a-day refactor notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ARVIZ_REFACTOR_WARNING, category=FutureWarning)
        import arviz as az  # here, not at the top: the notice is raised at import
    return az


def from_guide(
    model,
    guide,
    data,
    num_samples: int = 1000,
    *,
    max_plate_nesting: int = 1,
    log_likelihood: bool = True,
):
    """InferenceData of ``num_samples`` guide draws of the global latents (chain=1, draw=S).

    ``model``/``guide`` are Pyro programs taking ``data`` (a tensor ``x``, or a tuple such as
    ``(x, y)``, see :mod:`pyro_zoo.inference.programs`), e.g. a zoo model's ``model``/``guide``. Raises
    ``ValueError`` if the guide samples no global latent, or (with ``log_likelihood``) if the
    model has per-row latents.
    """
    az = arviz()
    data = as_tensors(data)
    with torch.no_grad():
        reference = poutine.trace(guide).get_trace(*data)
        names = [name for name, site in reference.nodes.items() if is_global_latent(site)]
        if not names:
            raise ValueError("the guide samples no global latent (outside the 'data' plate); "
                             "from_guide summarises global latents only")
        with pyro.plate("particles", num_samples, dim=-(max_plate_nesting + 1)):
            trace = poutine.trace(guide).get_trace(*data)
    samples = {
        name: trace.nodes[name]["value"].reshape((num_samples,) + reference.nodes[name]["value"].shape)
        for name in names
    }
    groups = {"posterior": {name: _numpy(value)[None] for name, value in samples.items()}}
    if log_likelihood:
        log_lik = pointwise_log_likelihood(model, data, samples, max_plate_nesting=max_plate_nesting)
        groups["log_likelihood"] = {DATA_VAR: _numpy(log_lik)[None]}
    with _log_level("arviz", logging.ERROR):  # one chain of independent draws: no R-hat, by design
        return az.from_dict(**groups, observed_data=_observed(data), dims=DIMS)


def from_nuts(
    model,
    data,
    num_samples: int = 500,
    warmup: int = 200,
    *,
    num_chains: int = 1,
    max_plate_nesting: int = 1,
    seed: int | None = None,
    progress: bool = False,
    log_likelihood: bool = True,
    **nuts_kwargs,
):
    """Run ``MCMC(NUTS(model))`` on ``data`` (a tensor ``x`` or a tuple such as ``(x, y)``, passed
    as ``model(*data)``) and convert it with ``az.from_pyro``.

    The chain runs with one torch thread (NUTS on small models is dominated by per-step
    overhead, and thread contention slows it ~10x on busy machines). The posterior and
    ``sample_stats`` come from ``az.from_pyro``; ``log_likelihood`` and ``observed_data`` are
    replaced by the pointwise ones of the module docstring, the same as :func:`from_guide` gives.
    ``nuts_kwargs`` go to ``NUTS`` (e.g. ``target_accept_prob``).
    """
    az = arviz()

    if seed is not None:
        pyro.set_rng_seed(seed)
    data = as_tensors(data)
    target = _without_masked_latents(model, data)
    kernel = NUTS(target, max_plate_nesting=max_plate_nesting, **nuts_kwargs)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, num_chains=num_chains,
                disable_progbar=not progress)
    with _one_thread():
        mcmc.run(*data)
    with _log_level("arviz", logging.ERROR if num_chains < 2 else None):  # one chain: no R-hat, said once
        idata = az.from_pyro(mcmc, log_likelihood=False)
    if "observed_data" in idata.groups():
        del idata.observed_data
    groups = {"observed_data": _observed(data)}
    if log_likelihood:
        samples = mcmc.get_samples()
        log_lik = pointwise_log_likelihood(model, data, samples, max_plate_nesting=max_plate_nesting)
        groups["log_likelihood"] = {DATA_VAR: _numpy(log_lik).reshape(num_chains, num_samples, -1)}
    idata.extend(az.from_dict(**groups, dims=DIMS))
    return idata


def pointwise_log_likelihood(
    model, data, samples: dict[str, torch.Tensor], *, max_plate_nesting: int = 1
) -> torch.Tensor:
    """log p(x_n | θ_s), shape ``(S, N)``, for global draws ``samples`` {site: (S, *site_shape)}."""
    data = as_tensors(data)
    x = data[0]
    num_samples = next(iter(samples.values())).shape[0] if samples else 1
    with torch.no_grad():
        first = {name: value[0] for name, value in samples.items()}
        reference = poutine.trace(poutine.condition(model, data=first)).get_trace(*data)
        values = {}
        for name, value in samples.items():
            missing = max_plate_nesting - len(reference.nodes[name]["fn"].batch_shape)
            values[name] = value.reshape((num_samples,) + (1,) * missing + value.shape[1:])
        with pyro.plate("particles", num_samples, dim=-(max_plate_nesting + 1)):
            trace = poutine.trace(poutine.condition(model, data=values)).get_trace(*data)
        trace.compute_log_prob()
    total = x.new_zeros(num_samples, x.shape[0], dtype=torch.get_default_dtype())
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or name in values:
            continue
        if not site["is_observed"]:
            if _fully_masked(site):
                continue
            raise ValueError(
                f"site {name!r} is a per-row latent; log p(x_n | globals) needs a model whose "
                "latents are all global (pass log_likelihood=False)"
            )
        if site["infer"].get("_deterministic"):
            continue
        total = total + _per_row(site, max_plate_nesting)
    return total


def summary(idata, **kwargs):
    """``az.summary(idata, **kwargs)``: mean, sd, HDI, MCSE, ESS and R-hat per variable.

    R-hat needs two or more chains: for one chain (e.g. independent guide draws) it is NaN, and
    ArviZ's log line saying so is left out.
    """
    az = arviz()
    quiet = idata.posterior.sizes["chain"] < 2
    with _log_level("arviz", logging.ERROR if quiet else None):
        return az.summary(idata, **kwargs)


@contextmanager
def _log_level(name: str, level: int | None):
    # arviz 0.23 logs through its own ``logging.Logger("arviz")`` (``arviz._log``), which is not
    # the one ``logging.getLogger("arviz")`` returns
    logger = getattr(arviz(), "_log", None) if name == "arviz" else None
    logger = logger or logging.getLogger(name)
    previous = logger.level
    if level is not None:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def plot_vi_vs_nuts(idata_vi, idata_nuts, path, var_names=None) -> Path:
    """Forest plot (94% HDI) of the variables both posteriors share, VI and NUTS side by side."""
    az = arviz()
    if var_names is None:
        var_names = [v for v in idata_vi.posterior.data_vars if v in idata_nuts.posterior.data_vars]
    size = sum(idata_vi.posterior[v].isel(chain=0, draw=0).size for v in var_names)
    fig = Figure(figsize=(7, 1.5 + 0.35 * size))
    ax = fig.add_subplot()
    az.plot_forest([idata_vi, idata_nuts], model_names=["VI (guide)", "NUTS"], var_names=var_names,
                   combined=True, hdi_prob=0.94, ax=ax)
    ax.set_title("posterior of the global latents: VI guide vs NUTS (94% HDI)")
    ax.set_xlabel("value of the latent (posterior draws: 94% HDI)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _fully_masked(site) -> bool:
    mask = site["mask"]
    return isinstance(mask, torch.Tensor) and not bool(mask.any())


def _per_row(site, max_plate_nesting: int) -> torch.Tensor:
    """A site's log-prob (particles, *inner plates, N) summed to (particles, N)."""
    if not in_data_plate(site):
        raise ValueError(f"observed site {site['name']!r} is outside the 'data' plate; "
                         "put every observation inside model.data_plate(x)")
    log_prob = site["log_prob"]
    log_prob = log_prob.reshape((1,) * (max_plate_nesting + 1 - log_prob.dim()) + log_prob.shape)
    inner = tuple(range(1, max_plate_nesting))
    return log_prob.sum(inner) if inner else log_prob


def _without_masked_latents(model, data: tuple):
    """``model`` with latent sites whose mask is all False conditioned on a dummy value."""
    with torch.no_grad():
        trace = poutine.trace(model).get_trace(*data)
    dummies = {
        name: site["value"] for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and _fully_masked(site)
    }
    return poutine.condition(model, data=dummies) if dummies else model


@contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _observed(data: tuple) -> dict:
    """The ``observed_data`` group: ``x`` for one tensor, ``data_0``, ``data_1``... for a tuple."""
    if len(data) == 1:
        return {DATA_VAR: _numpy(data[0])}
    return {f"data_{i}": _numpy(t) for i, t in enumerate(data)}


def _numpy(t: torch.Tensor):
    return t.detach().cpu().numpy()


__all__ = ["DATA_VAR", "from_guide", "from_nuts", "plot_vi_vs_nuts", "pointwise_log_likelihood", "summary"]
