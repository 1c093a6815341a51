r"""Importance-sampled log p(x), IWAE bounds and the ELBO, for any model/guide pair.

For each data point x and particles z_1..z_K ~ q(z | x),

    log w_k = log p(x, z_k) - log q(z_k | x)
    log p̂(x) = logsumexp_k(log w_k) - log K                 (consistent, biased low in log space)
    IWAE_k   = E[logsumexp_{j<=k}(log w_j) - log k]           (a lower bound, IWAE_1 = ELBO)

The weights come from one vectorised pass per chunk: model and guide run once inside
``pyro.plate("particles", k, dim=-(max_plate_nesting + 1))``, so every site carries a
``(particles, data)`` batch shape. Chunks over particles and over data points bound the memory.
Latent sites the guide does not sample are proposed from the model's prior, so their prior terms
cancel from the weight; ``proposal="prior"`` proposes every latent from the prior (the naive
Monte Carlo estimator of seed 004). Discrete sites the model marks for enumeration
(``infer={"enumerate": "parallel"}``, also inside ``pyro.markov``) are instead summed exactly
inside each weight, log w_k = log sum_z p(x, z, z_k) - log q(z_k | x), as ``TraceEnum_ELBO`` sums
them (:func:`summed_log_weights`); a model whose latents are all enumerated gets its exact log p(x)
with zero variance.

The standard error of log p̂ is the delta-method one, SE = sqrt((sum_k w̄_k^2 - 1/K) K/(K-1)) with
w̄ the self-normalised weights, i.e. sqrt(1/ESS - 1/K) up to the K/(K-1) correction.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import pyro
import pyro.poutine as poutine
import torch
from opt_einsum import shared_intermediates
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.util import site_is_subsample

from pyro_zoo.inference import distributed
from pyro_zoo.inference.arviz_io import arviz
from pyro_zoo.inference.programs import as_tensors
from pyro_zoo.inference.psis import khat_summary, pareto_khat
from pyro_zoo.inference.settings import whole_number
from pyro_zoo.inference.sites import in_data_plate
from pyro_zoo.models.base import DATA_PLATE


def _no_guide(*args, **kwargs):
    return None


@torch.no_grad()
def log_weights(model, guide, data, num_particles: int, max_plate_nesting: int = 1) -> torch.Tensor:
    """Log importance weights of shape ``(num_particles, N)`` from one vectorised pass over
    ``data`` (a tensor or a tuple of tensors, see :mod:`pyro_zoo.inference.programs`). No autograd
    graph, also not for the log-densities: kept alive by the weights, it held every pass's
    activations until the estimate's end (RealNVP on the digits, K = 5000: 1 GB per pass)."""
    data = as_tensors(data)
    x = data[0]
    guide = guide or _no_guide
    with pyro.plate("particles", num_particles, dim=-(max_plate_nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(*data)
        enumerated_model = poutine.enum(model, first_available_dim=-(max_plate_nesting + 2))
        model_trace = poutine.trace(poutine.replay(enumerated_model, trace=guide_trace)).get_trace(*data)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    proposed = {
        name for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }
    if any(_is_enumerated(site) for site in model_trace.nodes.values()):
        shape = (num_particles, x.shape[0])
        return summed_log_weights(model_trace, guide_trace, proposed, max_plate_nesting, shape)
    log_w = x.new_zeros(num_particles, x.shape[0])
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if not (site["is_observed"] or name in proposed):
            continue
        log_w = log_w + _per_datapoint(site, max_plate_nesting)
    for name in proposed:
        log_w = log_w - _per_datapoint(guide_trace.nodes[name], max_plate_nesting)
    return log_w


def _is_enumerated(site) -> bool:
    return site["type"] == "sample" and site["infer"].get("_enumerate_dim") is not None


def summed_log_weights(model_trace, guide_trace, proposed: set, max_plate_nesting: int,
                       shape: tuple[int, int]) -> torch.Tensor:
    """Log weights (particles, N) with the model's enumerated discrete latents summed exactly.

    ``model_trace`` ran under ``poutine.enum`` (sites marked ``infer={"enumerate": "parallel"}``,
    ``pyro.markov`` recycling their dims), replaying the guide's ``proposed`` sites. As
    ``TraceEnum_ELBO`` does, the observed, proposed and enumerated sites' log-probs are packed by
    plate and contracted (``pyro.ops.contract.contract_to_tensor``) over the enumeration dims, down
    to the particles and data plates: log sum_z p(x, z, z_q) for each particle z_q ~ q; the guide's
    log q(z_q | x) is then subtracted; ``shape`` is (particles, N). Every other latent must be
    sampled by the guide or enumerated.
    """
    model_trace.pack_tensors()
    factors = OrderedDict()
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if not (site["is_observed"] or name in proposed or _is_enumerated(site)):
            raise ValueError(f"latent site {name!r} is neither sampled by the guide nor enumerated; with "
                             "enumerated sites in the model, give the guide every other latent")
        _per_datapoint(site, max_plate_nesting)  # raises for a site outside the data plate
        frames = site["cond_indep_stack"]
        ordinal = frozenset(model_trace.plate_to_symbol[f.name] for f in frames if f.vectorized)
        # as TraceEnum_ELBO: an enumerated site's own mask is not applied (its p(z | parents) still sums
        # to one where it is masked, e.g. the observed entries of an obs_mask site)
        packed_log_prob = site["packed"]["unscaled_log_prob" if _is_enumerated(site) else "log_prob"]
        factors.setdefault(ordinal, []).append(packed_log_prob)
    symbols = model_trace.plate_to_symbol
    enum_dims = set(model_trace.symbol_to_dim) - set(symbols.values())
    target = frozenset(symbols[name] for name in ("particles", DATA_PLATE) if name in symbols)
    with shared_intermediates() as cache:
        summed = contract_to_tensor(factors, enum_dims, target_ordinal=target, cache=cache)
    summed = packed.unpack(summed, model_trace.symbol_to_dim)
    summed = summed.reshape((1,) * (max_plate_nesting + 1 - summed.dim()) + summed.shape)
    summed = summed.sum(tuple(range(1, max_plate_nesting))) if max_plate_nesting > 1 else summed
    log_w = summed.expand(shape)
    for name in proposed:
        log_w = log_w - _per_datapoint(guide_trace.nodes[name], max_plate_nesting)
    return log_w


def _per_datapoint(site, max_plate_nesting: int) -> torch.Tensor:
    """Reduce a site's log-prob to shape (particles, N), summing any plates inside the data plate."""
    if not in_data_plate(site):
        raise ValueError(
            f"site {site['name']!r} is outside the {DATA_PLATE!r} plate: per-data-point importance "
            "sampling needs every latent inside it; score a model with global latents by its "
            "posterior (the eval report's ArviZ side), or give it a local_pair() with them fixed"
        )
    log_prob = site["log_prob"]
    log_prob = log_prob.reshape((1,) * (max_plate_nesting + 1 - log_prob.dim()) + log_prob.shape)
    inner = tuple(range(1, max_plate_nesting))
    return log_prob.sum(inner) if inner else log_prob


@dataclass
class ImportanceResult:
    """Per-data-point estimates (tensors of shape (N,), on the CPU) and their summary."""

    num_particles: int
    log_px: torch.Tensor
    log_px_se: torch.Tensor
    ess: torch.Tensor
    iwae: dict[int, torch.Tensor] = field(default_factory=dict)
    iwae_se: dict[int, torch.Tensor] = field(default_factory=dict)
    khat: torch.Tensor | None = None
    seconds: float = 0.0

    @property
    def elbo(self) -> torch.Tensor:
        return self.iwae[1]

    def summary(self) -> dict:
        """Means over data points in nats per data point, with standard errors of those means."""
        n = self.log_px.numel()
        out = {
            "num_particles": self.num_particles,
            "num_data": n,
            "log_px": self.log_px.mean().item(),
            "log_px_se": (self.log_px_se.square().sum().sqrt() / n).item(),
            "ess_mean": self.ess.mean().item(),
            "seconds": self.seconds,
            "iwae": {k: v.mean().item() for k, v in self.iwae.items()},
            "iwae_se": {k: (v.square().sum().sqrt() / n).item() for k, v in self.iwae_se.items()},
        }
        if self.khat is not None:
            out["khat"] = khat_summary(self.khat, self.num_particles)
        return out


def weight_statistics(log_w: torch.Tensor, iwae_ks=(1, 10, 100, 1000)) -> dict[str, torch.Tensor]:
    """log p̂, its SE, ESS and IWAE_k (with SE over the K/k groups) from log weights (K, N)."""
    K = log_w.shape[0]
    log_norm = torch.logsumexp(log_w, 0)
    w = torch.exp(log_w - log_norm)
    sum_sq = w.square().sum(0)
    stats = {
        "log_px": log_norm - math.log(K),
        "log_px_se": ((sum_sq - 1 / K).clamp(min=0) * K / max(K - 1, 1)).sqrt(),
        "ess": 1 / sum_sq,
    }
    for k in sorted({k for k in iwae_ks if k <= K} | {K}):
        groups = K // k
        bound = torch.logsumexp(log_w[: groups * k].reshape(groups, k, -1), 1) - math.log(k)
        stats[f"iwae_{k}"] = bound.mean(0)
        se = bound.std(0) / math.sqrt(groups) if groups > 1 else torch.full_like(bound[0], float("nan"))
        stats[f"iwae_se_{k}"] = se
    return stats


class EstimateTooLarge(ValueError):
    """An estimate whose importance weights would not fit in the memory at hand (the message names
    ``num_particles`` in backquotes, like :class:`~pyro_zoo.inference.settings.SettingError`)."""


#: float32-sized copies of the (K, N) weights held at once (log w, w, groups, PSIS's float64
#: copies; measured: 4.4 GB peak for K = 10^8 and one data point on the DLGM)
WEIGHT_COPIES = 12
#: at most this many bytes of weights on a CPU, whatever the RAM: beyond it a larger K buys
#: nothing an evaluation needs and the request is more likely a typo
CPU_WEIGHT_BYTES = 2 * 2**30
#: tensor size per vectorised pass on a CPU: larger tensors are mmap'd by the C allocator and
#: page-faulted afresh on every pass (benchmarks/RESULTS.md, the importance-sampling section)
CPU_CHUNK_ELEMENTS = 2**21


def default_chunk_elements(device: torch.device) -> int:
    """Elements per (particle x data point x data dimension) tensor of one vectorised pass: 8 MB on
    a CPU; on a GPU an eighth of its free memory in float32 (at most 2**28), to keep it busy."""
    if device.type != "cuda":
        return CPU_CHUNK_ELEMENTS
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(2**28, max(CPU_CHUNK_ELEMENTS, free // (8 * 4))))


def memory_budget(device: torch.device) -> int:
    """Bytes the weights of one chunk may take: half the free GPU memory; on a CPU a quarter of
    the available RAM, at most :data:`CPU_WEIGHT_BYTES`."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return min(CPU_WEIGHT_BYTES, os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4)


def plan_chunks(num_data: int, width: int, num_particles: int, device: torch.device,
                chunk_elements: int | None = None, data_chunk: int | None = None) -> tuple[int, int]:
    """(data points per chunk, particles per pass): the weights of a chunk within
    :func:`memory_budget`, each pass within ``chunk_elements``; :class:`EstimateTooLarge` when
    even one data point's weights do not fit."""
    chunk_elements = chunk_elements or default_chunk_elements(device)
    budget = memory_budget(device)
    per_point = num_particles * 4 * WEIGHT_COPIES
    if per_point > budget:
        raise EstimateTooLarge(
            f"{num_particles} particles need about {per_point / 2**30:.1f} GiB for one data point's "
            f"importance weights, more than the {budget / 2**30:.1f} GiB at hand; lower the number of "
            f"particles (`num_particles`) to at most {budget // (4 * WEIGHT_COPIES)}")
    by_passes = chunk_elements // (64 * width)
    data_chunk = data_chunk or max(1, min(num_data, by_passes, budget // per_point))
    particle_chunk = max(1, min(num_particles, chunk_elements // (data_chunk * width)))
    return data_chunk, particle_chunk


def estimate_log_likelihood(
    model,
    guide,
    data,
    num_particles: int = 1000,
    *,
    max_plate_nesting: int = 1,
    iwae_ks=(1, 10, 100, 1000),
    data_chunk: int | None = None,
    chunk_elements: int | None = None,
    psis: bool = True,
    validate: bool = False,
    progress: bool = False,
    seed: int | None = None,
) -> ImportanceResult:
    """Importance-sampled log p(x) per data point with K = ``num_particles``; see module doc.

    ``data``: a tensor or a tuple of tensors (``model(*data)``, e.g. ``(x, y)`` for log p(x | y)).
    ``guide=None`` proposes from the prior. Memory is planned from what is asked
    (:func:`plan_chunks`): each vectorised pass holds about ``chunk_elements`` floats per
    (particle x data point x data dimension) tensor (default by device,
    :func:`default_chunk_elements`), and the data points of a chunk (``data_chunk``, default: as
    many as fit alongside at least 64 particles and within the memory budget) keep their K
    weights each.

    ``seed``: chunk [lo, hi) draws its particles from a generator seeded by (seed, lo), so the
    per-data-point estimates do not depend on how chunks are shared out; under ``torchrun`` the
    chunks are (:func:`pyro_zoo.inference.distributed.map_chunks`: rank 0's chunk plan, contiguous runs
    of chunks per rank, results gathered on every rank), and the estimates are identical whatever
    the number of ranks. ``seed=None`` with one process draws from the global torch RNG.
    """
    if psis:
        arviz()  # imports ArviZ: seconds in a fresh process, a cost of the process, not of the estimate
    start = time.perf_counter()
    num_particles = whole_number("num_particles", num_particles)
    data_chunk = None if data_chunk is None else whole_number("data_chunk", data_chunk)
    chunk_elements = None if chunk_elements is None else whole_number("chunk_elements", chunk_elements)
    iwae_ks = tuple(whole_number("iwae_ks", k) for k in iwae_ks)
    data = as_tensors(data)
    x = data[0]
    width = max(1, sum(t[0].numel() for t in data))
    distributed.world(x.device)  # under torchrun: join the process group (NCCL for CUDA data)
    data_chunk, particle_chunk = distributed.broadcast(  # one plan for every rank (the memory at rank 0)
        plan_chunks(x.shape[0], width, num_particles, x.device, chunk_elements, data_chunk))

    def one_chunk(lo: int, hi: int) -> dict[str, torch.Tensor]:
        rows = tuple(t[lo:hi] for t in data)
        log_w = torch.cat([
            log_weights(model, guide, rows, min(particle_chunk, num_particles - done), max_plate_nesting)
            for done in range(0, num_particles, particle_chunk)
        ])
        stats = {key: value.cpu() for key, value in weight_statistics(log_w, iwae_ks).items()}
        if psis:
            stats["khat"] = pareto_khat(log_w)
        return stats

    with pyro.validation_enabled(validate):
        chunks = distributed.map_chunks(one_chunk, x.shape[0], data_chunk, seed=seed, device=x.device,
                                        progress=progress)
    return _joined(chunks, num_particles, start)


def _joined(chunks: list[dict], num_particles: int, start: float) -> ImportanceResult:
    """One :class:`ImportanceResult` of the chunks' statistics (in data order)."""
    cat = {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}
    khat = cat.pop("khat", None)
    ks = sorted(int(key.split("_")[1]) for key in cat if key.startswith("iwae_") and "se" not in key)
    return ImportanceResult(
        num_particles=num_particles,
        log_px=cat["log_px"],
        log_px_se=cat["log_px_se"],
        ess=cat["ess"],
        iwae={k: cat[f"iwae_{k}"] for k in ks},
        iwae_se={k: cat[f"iwae_se_{k}"] for k in ks},
        khat=khat,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def evidence_log_weights(model, guide, data, num_particles: int, max_plate_nesting: int = 1) -> torch.Tensor:
    """Log weights (num_particles,) of the whole data set as one point: log p(D, z_k) - log q(z_k | D)
    with every latent, global or local, drawn by ``guide`` (an AutoGuide's auxiliary site and
    Jacobian terms count in log q) and every plate summed."""
    data = as_tensors(data)
    with pyro.plate("particles", num_particles, dim=-(max_plate_nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(*data)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*data)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_w = data[0].new_zeros(num_particles)
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if trace is model_trace and not (site["is_observed"] or name in guide_trace.nodes):
                raise ValueError(f"latent site {name!r} is not drawn by the guide; the evidence needs a "
                                 "guide over every latent")
            log_prob = site["log_prob"]
            log_prob = log_prob.reshape((1,) * (max_plate_nesting + 1 - log_prob.dim()) + log_prob.shape)
            log_w = log_w + sign * log_prob.sum(tuple(range(1, log_prob.dim()))).expand(num_particles)
    return log_w


def estimate_evidence(model, guide, data, num_particles: int = 1000, *, max_plate_nesting: int = 1,
                      iwae_ks=(1, 10, 100, 1000), particle_chunk: int = 10_000) -> ImportanceResult:
    """Importance-sampled log p(D) of the whole data set, for models whose latents are global:
    :func:`evidence_log_weights` in chunks of ``particle_chunk``, summarised as one data point
    (log p̂(D), its SE, ESS and IWAE_k including the ELBO at k = 1)."""
    start = time.perf_counter()
    log_w = torch.cat([
        evidence_log_weights(model, guide, data, min(particle_chunk, num_particles - done), max_plate_nesting)
        for done in range(0, num_particles, particle_chunk)
    ]).unsqueeze(-1)
    stats = {key: value.cpu() for key, value in weight_statistics(log_w, iwae_ks).items()}
    ks = sorted(int(key.split("_")[1]) for key in stats if key.startswith("iwae_") and "se" not in key)
    return ImportanceResult(num_particles=num_particles, log_px=stats["log_px"], log_px_se=stats["log_px_se"],
                            ess=stats["ess"], iwae={k: stats[f"iwae_{k}"] for k in ks},
                            iwae_se={k: stats[f"iwae_se_{k}"] for k in ks}, khat=pareto_khat(log_w),
                            seconds=time.perf_counter() - start)
