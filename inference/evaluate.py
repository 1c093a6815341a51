r"""The evaluation report behind ``zoo eval``: importance-sampled log p(x) and its diagnostics.

For a zoo model and a data split, :func:`evaluate` estimates per data point, with the model's
``local_pair()`` as proposal and K = ``num_particles`` (see :mod:`pyro_zoo.inference.importance`),

    log p̂(x) = logsumexp_k log w_k - log K,      IWAE_k,      ELBO = IWAE_1,

then averages over the N data points; the standard error of a mean is sqrt(sum_n SE_n^2) / N
(importance-sampling noise given the data). Where the model has an exact log p(x), the report
adds it and the gap (log p̂ - log p) / SE. Diagnostics: PSIS k̂ per data point and the fraction
of points over the sample-size-aware threshold min(1 - 1/log10 K, 0.7), with a warning when more
are over it than chance explains (:mod:`pyro_zoo.inference.diagnostics`), the IS effective sample size,
KL per latent unit and active units (generic, for real-valued local latents, and the model's own
``kl_per_dim`` / ``active_units`` where it has them), ``model.metrics(data)`` and wall time.
Every log-likelihood is in nats per data point.

The estimator ladder (``report["ladder"]``): every estimate of the mean log p(x) side by side,
with its SE and wall time, in the order the theory guarantees on average,

    ELBO = IWAE_1 <= IWAE_k <= IS (K particles) <= AIS   (<= exact log p(x) where known),

and, with ``methods`` containing "bdmc", bidirectional Monte Carlo on data simulated from the
model (forward AIS <= log p(x) <= reverse AIS; :mod:`pyro_zoo.inference.ais`). ``methods`` picks the rungs
beyond importance sampling, which always runs (it is the report's base): "ais", "bdmc", "sbc"
(simulation-based calibration of the guide over global latents, :mod:`pyro_zoo.inference.sbc`). A method
that does not apply to the model (AIS on discrete latents, SBC without global latents) raises
:class:`pyro_zoo.models.DataError` naming why.

With ``out_dir`` it writes ``report.json``, ``bound_vs_k.png`` (ELBO, IWAE_k, IS log p(x) and
the exact value against k), ``ladder.png`` (the ladder), ``khat.png`` (histogram of k̂ with the
threshold and the finite-variance line 0.5), ``sbc.png`` (rank histograms, with "sbc") and the
model's own figures;
:func:`write_index` writes an ``index.md`` over several such reports.

A model whose latents are global (``capabilities.importance_sampling`` False) has no
per-data-point proposal: its report says so in ``log_px.estimator`` and compares posterior means
and sds of the global latents instead -- guide draws, NUTS and the exact posterior where the
model declares one (:func:`compare_posteriors`; ``posterior_table.md`` and ``vi_vs_nuts.png``).

Where such a model declares its exact evidence (``capabilities.exact_evidence``), the report adds
``evidence`` (:func:`evidence_report`): log p(D) of the whole data set, exact, the ELBO, IS with
the guide as proposal (reliable where k̂ < 0.5) and, with "ais", AIS from the prior, each with
its error in nats. For sequence models (``capabilities.sequences``) with an exact log p(x) it adds
``length_sweep`` (:func:`length_sweep`) and ``error_vs_length.png``: the error of the ELBO, IS
and (with "ais") AIS against the exact value on prefixes of T/8, T/4, T/2 and T steps.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import pyro.poutine as poutine
import torch
from matplotlib.figure import Figure

from pyro_zoo.inference import distributed
from pyro_zoo.inference.ais import ais, ais_evidence, bdmc, check_applies
from pyro_zoo.inference.arviz_io import arviz, from_guide, from_nuts, plot_vi_vs_nuts
from pyro_zoo.inference.arviz_io import summary as arviz_summary
from pyro_zoo.inference.checkpoint import write_atomic
from pyro_zoo.inference.diagnostics import ess_summary, latent_usage, model_latent_usage
from pyro_zoo.inference.importance import estimate_evidence, estimate_log_likelihood
from pyro_zoo.inference.plain import to_json
from pyro_zoo.inference.psis import FINITE_VARIANCE_K, khat_summary
from pyro_zoo.inference.sbc import DEFAULT_FIT, global_sites, sbc
from pyro_zoo.models.base import DataError, DataSplit

UNITS = "nats per data point"
#: the estimators ``evaluate(..., methods=...)`` and ``zoo eval --method`` take
#: what the report says in place of log p(x) for a model whose latents are global
NO_IMPORTANCE_SAMPLING = (
    "per-data-point importance sampling does not apply: this model's latents are global (shared by all "
    "data points), so there is no per-data-point proposal; its posterior is compared instead (guide vs "
    "NUTS vs exact, posterior_comparison)"
)
#: the estimators of a report
METHODS = ("is", "ais", "bdmc", "sbc")
#: defaults of the AIS/BDMC rungs (``num_chains`` chains, ``num_steps`` intermediate distributions)
AIS_SETTINGS = {"num_chains": 16, "num_steps": 100, "proposal": "guide"}
#: BDMC simulates at most this many data points
BDMC_POINTS = 100
#: prefix lengths of the error-vs-T sweep of sequence models, as fractions of the full length T
SWEEP_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 1)
#: defaults of the SBC check: replications, guide draws, simulated data points per replication
SBC_SETTINGS = {"num_replications": 100, "num_draws": 99, "num_data": 50}


def check_methods(methods) -> tuple[str, ...]:
    """``methods`` as a tuple with "is" first; an unknown name is a :class:`DataError`."""
    methods = tuple(dict.fromkeys(["is", *(methods or ())]))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DataError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)} (several allowed)")
    return methods


def evaluate(model, data, *, num_particles: int = 1000, iwae_ks=(1, 10, 100, 1000), max_plate_nesting=1,
             out_dir=None, progress: bool = True, seed: int | None = None, methods=("is",),
             ais_settings: dict | None = None, sbc_settings: dict | None = None, nuts_samples: int = 500,
             posterior_data: DataSplit | None = None, figures: Callable | None = None) -> dict:
    """Evaluate ``model`` (a ``ZooModel``) on ``data`` (a ``DataSplit``, or a tensor (N, ...)), whose
    ``inputs`` the model declares (``(x, y)`` for log p(x | y)). ``methods``: any of :data:`METHODS`
    ("is" always runs where it applies); ``ais_settings`` and ``sbc_settings`` override
    :data:`AIS_SETTINGS` and :data:`SBC_SETTINGS`. A model with global latents (no importance
    sampling) gets the posterior comparison of :func:`compare_posteriors` instead (``num_particles``
    guide draws, ``nuts_samples`` NUTS draws, 0 skips NUTS) on ``posterior_data`` (the guide's
    training data; default ``data``). ``seed`` seeds the importance sampler per chunk of data
    points. Under ``torchrun`` all ranks sample and rank 0 alone reports (the others return
    ``{"rank": r}``). Returns a JSON-serialisable dict (non-finite numbers as ``None``); writes
    ``report.json`` and the figures (``figures(model, data, out_dir)``: the model's own) under ``out_dir``.
    """
    methods, start = check_methods(methods), time.perf_counter()
    out_dir = None if out_dir is None else Path(out_dir)
    data = (data if isinstance(data, DataSplit) else DataSplit(x=data)).to(model.device)
    inputs = data.inputs(model.inputs)
    model.check_inputs(inputs)
    model.eval()
    x = inputs[0]
    ais_run = {**AIS_SETTINGS, "max_plate_nesting": max_plate_nesting, **(ais_settings or {})}
    ais_run = ais_run if "ais" in methods else None
    local_model, local_guide = model.local_pair()
    _check_applicable(methods, model, local_model, local_guide, inputs, max_plate_nesting)
    report = {"model": type(model).__name__, "units": UNITS, "num_data": x.shape[0],
              "num_particles": num_particles, "source": data.source}
    result, idata, extra = None, None, {}
    if model.capabilities.importance_sampling:
        result = estimate_log_likelihood(local_model, local_guide, inputs, num_particles,
                                         max_plate_nesting=max_plate_nesting, iwae_ks=iwae_ks,
                                         progress=progress, seed=seed)
        # other per-data-point estimators go through distributed.map_chunks, before this line
        here = distributed.world()
        if not here.main:
            return {"rank": here.rank}
        idata = _importance_report(model, local_model, local_guide, inputs, result, max_plate_nesting, report)
    else:
        conditioned = data if posterior_data is None else posterior_data.to(model.device)
        extra = _posterior_report(model, conditioned, num_particles, nuts_samples, max_plate_nesting, ais_run,
                                  report)
    report["metrics"] = model.metrics(data)
    sbc_result = _other_methods(methods, model, local_model, local_guide, x, max_plate_nesting, ais_settings,
                                sbc_settings, report)
    if result is not None:
        report["ladder"] = ladder(report)
    if result is not None and model.capabilities.sequences and model.capabilities.exact_log_prob:
        report["length_sweep"] = length_sweep(model, local_model, local_guide, x, num_particles, ais_run,
                                              max_plate_nesting, seed)
        report["seconds"]["length_sweep"] = sum(row["seconds"] for row in report["length_sweep"])
    report["figures"] = {} if out_dir is None else _report_figures(
        model, data, result, report, out_dir, idata, extra, figures, sbc_result)
    report["seconds"]["total"] = time.perf_counter() - start
    report = to_json(report)
    if out_dir is not None:
        write_atomic(out_dir / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def _posterior_report(model, data: DataSplit, num_particles: int, nuts_samples: int, max_plate_nesting: int,
                      ais_run: dict | None, report: dict) -> dict:
    """The report of a model with global latents: the posterior comparison on ``data`` (the data
    its guide was trained on) and, where the model declares it, the evidence; returns
    :func:`compare_posteriors`' result."""
    report["log_px"] = {"value": None, "se": None, "estimator": NO_IMPORTANCE_SAMPLING}
    inputs = data.inputs(model.inputs)
    extra = compare_posteriors(model, inputs, num_particles, nuts_samples, max_plate_nesting)
    report["posterior_comparison"] = extra["table"]
    report["posterior_data"] = data.source
    report["seconds"] = {"posterior_comparison": extra["seconds"]}
    if model.capabilities.exact_evidence:
        report["evidence"] = evidence_report(model, inputs, num_particles, ais_run, max_plate_nesting)
        report["seconds"]["evidence"] = report["evidence"]["seconds"]
    return extra


def _report_figures(model, data, result, report: dict, out_dir: Path, idata, extra: dict, figures,
                    sbc_result) -> dict:
    """Every figure of the report, written under ``out_dir``: ``{caption: path relative to it}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _figures(model, data, result, report, out_dir, idata, extra)
    if figures is not None:
        own = figures(model, data, out_dir)
        written.update({caption: _relative(path, out_dir) for caption, path in own.items()})
    if result is not None:
        written["estimator ladder"] = _relative(_ladder_figure(report, out_dir / "ladder.png"), out_dir)
    if "length_sweep" in report:
        written["error against the exact log p(x) vs sequence length T"] = _relative(
            _sweep_figure(report["length_sweep"], out_dir / "error_vs_length.png"), out_dir)
    if sbc_result is not None:
        sbc_result.figure().savefig(out_dir / "sbc.png", dpi=100)
        written["SBC rank histograms"] = "sbc.png"
    return written


def _importance_report(model, local_model, local_guide, inputs, result, max_plate_nesting, report):
    """Fill ``report`` with the importance-sampling estimates; returns the guide's ArviZ data of
    the global latents (or None)."""
    summary = result.summary()
    num_particles = result.num_particles
    report.update({
        "log_px": {"value": summary["log_px"], "se": summary["log_px_se"],
                   "estimator": f"importance sampling, K = {num_particles}, proposal: the guide of "
                                "local_pair() (the prior for latents it leaves out; enumerated "
                                "discrete latents summed exactly in each weight)"},
        "elbo": {"value": summary["iwae"][1], "se": summary["iwae_se"][1]},
        "iwae": {str(k): {"value": v, "se": summary["iwae_se"][k]} for k, v in summary["iwae"].items()},
        "ess": ess_summary(result.ess, num_particles),
        "khat": khat_summary(result.khat, num_particles),
    })
    x = inputs[0]
    if model.capabilities.exact_log_prob:
        report["exact"] = _exact(model, x, summary)
    usage = _latent_usage(local_model, local_guide, inputs, max_plate_nesting)
    if usage:
        report["latent_usage"] = usage
    if model.capabilities.latent_usage:
        report.update(model_latent_usage(model, x))
    idata = _global_posterior(model, inputs)
    if idata is not None:
        report["posterior_summary"] = arviz_summary(idata).to_dict(orient="index")
    report["seconds"] = {"importance_sampling": result.seconds}
    return idata


def _other_methods(methods, model, local_model, local_guide, x, max_plate_nesting, ais_settings, sbc_settings,
                   report):
    """AIS, BDMC and SBC into ``report`` as ``methods`` asks; returns the SBC result (or None)."""
    ais_settings = {**AIS_SETTINGS, "max_plate_nesting": max_plate_nesting, **(ais_settings or {})}
    if "ais" in methods and model.capabilities.importance_sampling:
        report["ais"] = _ais(local_model, local_guide, x, ais_settings)
        report["seconds"]["ais"] = report["ais"]["seconds"]
    if "bdmc" in methods:
        report["bdmc"] = _bdmc(model, local_model, local_guide, x, ais_settings)
        report["seconds"]["bdmc"] = report["bdmc"]["seconds"]
    if "sbc" not in methods:
        return None
    sbc_settings = {**SBC_SETTINGS, **(sbc_settings or {})}
    sbc_result = _sbc(model, x, max_plate_nesting, sbc_settings)
    fitted_by = "the given fit_guide" if "fit_guide" in sbc_settings else (
        f"SVI (pyro_zoo.inference.train.fit_model, {_fit_text()})")
    report["sbc"] = {**sbc_result.summary(),
                     "data_per_replication": min(sbc_settings["num_data"], len(x)),
                     "fit": f"each replication refits a copy of the evaluated model by {fitted_by}"}
    report["seconds"]["sbc"] = sbc_result.seconds
    return sbc_result


def _check_applicable(methods, model, local_model, local_guide, inputs: tuple, max_plate_nesting: int):
    """Raise :class:`DataError` before any estimation when a requested method cannot run on ``model``."""
    x = inputs[0]
    if len(inputs) > 1 and {"ais", "bdmc", "sbc"} & set(methods):
        raise DataError(f"AIS, BDMC and SBC take models of one input; {type(model).__name__} takes "
                        f"{len(inputs)} ({', '.join(model.inputs)}): use `methods` is")

    capabilities = model.capabilities
    if "ais" in methods and not (capabilities.importance_sampling or capabilities.exact_evidence):
        raise DataError("AIS does not apply to this model: its latents are global, and AIS of the whole data "
                        "set's evidence needs an exact value to compare with (capabilities.exact_evidence)")
    if ("ais" in methods and model.capabilities.importance_sampling) or "bdmc" in methods:
        proposal = "guide" if local_guide is not None else "prior"
        try:
            check_applies(local_model, local_guide, x, proposal, max_plate_nesting)
        except ValueError as err:
            name = "AIS" if "ais" in methods else "BDMC"
            raise DataError(f"{name} does not apply to this model: {err}") from None
    if "sbc" in methods:
        with torch.no_grad():
            trace = poutine.trace(poutine.uncondition(model.model)).get_trace(x[:1])
        if not global_sites(trace):
            raise DataError(f"SBC does not apply to this model: {type(model).__name__} has no global "
                            "latent variables (sample sites outside the 'data' plate); use `methods` is, ais "
                            "or bdmc")


def _ais(local_model, local_guide, x: torch.Tensor, settings: dict) -> dict:
    settings = dict(settings)
    if local_guide is None:
        settings["proposal"] = "prior"
    try:
        result = ais(local_model, local_guide, x, **settings)
    except ValueError as err:
        raise DataError(f"AIS does not apply to this model: {err}") from None
    summary = result.summary()
    return {
        "value": summary["log_px"], "se": summary["log_px_se"], "seconds": summary["seconds"],
        "estimator": f"AIS, {summary['num_chains']} chains x {summary['num_steps']} intermediate "
                     f"distributions, proposal: the {summary['proposal']}, {summary['schedule']} schedule, "
                     f"HMC with {summary['num_leapfrog']} leapfrog steps",
        "acceptance": summary["acceptance"],
        "acceptance_min": summary["acceptance_min"],
        "step_size_final": summary["step_size_final"],
    }


def _bdmc(model, local_model, local_guide, x: torch.Tensor, settings: dict) -> dict:
    settings = dict(settings)
    if local_guide is None:
        settings["proposal"] = "prior"
    try:
        result = bdmc(local_model, local_guide, x[:BDMC_POINTS], **settings)
    except ValueError as err:
        raise DataError(f"BDMC does not apply to this model: {err}") from None
    out = {"data": f"{result.x.shape[0]} points simulated from the model", **result.summary()}
    if model.capabilities.exact_log_prob:
        with torch.no_grad():
            out["exact"] = model.exact_log_prob(result.x).double().mean().item()
    return out


def _fit_text() -> str:
    return ", ".join(f"{k}={v}" for k, v in DEFAULT_FIT.items())


def _sbc(model, x: torch.Tensor, max_plate_nesting: int, settings: dict):
    settings = dict(settings)
    template = x[: settings.pop("num_data")]
    # every replication refits a copy of the evaluated model (its start is the trained guide)
    try:
        return sbc(lambda: copy.deepcopy(model), template, max_plate_nesting=max_plate_nesting, **settings)
    except ValueError as err:
        raise DataError(f"SBC does not apply to this model: {err}") from None


def ladder(report: dict) -> list[dict]:
    """The rungs of ``report`` in ladder order: name, value, se, seconds, what it is, and on which data."""
    is_seconds = report["seconds"]["importance_sampling"]
    shared = "one importance-sampling run gives ELBO, IWAE_k and IS"
    rungs = [{"name": "ELBO", "value": report["elbo"]["value"], "se": report["elbo"]["se"],
              "seconds": is_seconds, "kind": "lower bound", "data": "evaluated", "note": shared}]
    for k, entry in report["iwae"].items():
        if k not in ("1", str(report["num_particles"])):
            rungs.append({"name": f"IWAE_{k}", "value": entry["value"], "se": entry["se"],
                          "seconds": is_seconds, "kind": "lower bound", "data": "evaluated", "note": shared})
    rungs.append({"name": f"IS (K = {report['num_particles']})", "value": report["log_px"]["value"],
                  "se": report["log_px"]["se"], "seconds": is_seconds, "kind": "stochastic lower bound",
                  "data": "evaluated", "note": shared})
    if "ais" in report:
        rungs.append({"name": "AIS", "value": report["ais"]["value"], "se": report["ais"]["se"],
                      "seconds": report["ais"]["seconds"], "kind": "stochastic lower bound",
                      "data": "evaluated", "note": report["ais"]["estimator"]})
    if "exact" in report:
        rungs.append({"name": "exact", "value": report["exact"]["log_px"], "se": 0.0, "seconds": None,
                      "kind": "exact", "data": "evaluated", "note": "the model's exact_log_prob"})
    if "bdmc" in report:
        b = report["bdmc"]
        note = f"BDMC, {b['num_chains']} chains x {b['num_steps']} steps; {b['data']}"
        rungs.append({"name": "BDMC lower (forward AIS)", "value": b["lower"], "se": b["lower_se"],
                      "seconds": b["seconds"] / 2, "kind": "stochastic lower bound", "data": "simulated",
                      "note": note})
        if "exact" in b:
            rungs.append({"name": "exact (simulated data)", "value": b["exact"], "se": 0.0, "seconds": None,
                          "kind": "exact", "data": "simulated", "note": "the model's exact_log_prob"})
        rungs.append({"name": "BDMC upper (reverse AIS)", "value": b["upper"], "se": b["upper_se"],
                      "seconds": b["seconds"] / 2, "kind": "stochastic upper bound", "data": "simulated",
                      "note": note})
    return rungs


def evidence_report(model, inputs: tuple, num_particles: int, ais_settings: dict | None,
                    max_plate_nesting: int = 1) -> dict:
    """log p(D) of the whole data set for a model with global latents: exact (the model's
    ``exact_log_evidence``), ELBO and IS with the guide as proposal (``num_particles``), and, with
    ``ais_settings``, AIS from the prior; errors (estimate - exact) in nats. IS is called reliable
    where PSIS k̂ < 0.5 (below it the delta-method SE holds; above it IS sits below the exact value
    by more than its SE says)."""
    start = time.perf_counter()
    with torch.no_grad():
        exact = model.exact_log_evidence(*inputs)
    summary = estimate_evidence(model.model, model.guide, inputs, num_particles,
                                max_plate_nesting=max_plate_nesting, iwae_ks=(1,)).summary()
    khat = summary["khat"]["max"]
    out = {"units": "nats (the whole data set)", "exact": exact,
           "elbo": {"value": summary["iwae"][1], "se": summary["iwae_se"][1],
                    "gap": exact - summary["iwae"][1]},
           "is": {"value": summary["log_px"], "se": summary["log_px_se"], "error": summary["log_px"] - exact,
                  "khat": khat, "ess": summary["ess_mean"], "reliable": bool(khat < FINITE_VARIANCE_K),
                  "estimator": f"importance sampling of the whole data set, K = {num_particles}, "
                               "proposal: the guide"}}
    if ais_settings is not None:
        dropped = ("proposal", "adaptation", "data_chunk")
        settings = {k: v for k, v in ais_settings.items() if k not in dropped}
        ais = ais_evidence(model.model, None, inputs[0], proposal="prior", **settings).summary()
        out["ais"] = {"value": ais["log_px"], "se": ais["log_px_se"], "error": ais["log_px"] - exact,
                      "acceptance": ais["acceptance"],
                      "estimator": f"AIS of the whole data set, {ais['num_chains']} chains x "
                                   f"{ais['num_steps']} steps from the prior, HMC, pilot-tuned step sizes"}
    return {**out, "seconds": time.perf_counter() - start}


def length_sweep(model, local_model, local_guide, x: torch.Tensor, num_particles: int,
                 ais_settings: dict | None, max_plate_nesting: int = 1,
                 seed: int | None = None) -> list[dict]:
    """Each estimator's error against the exact mean log p(x) on the prefixes x[:, :T] of sequence
    data, for T in :data:`SWEEP_FRACTIONS` of the full length: ELBO, IS with ``num_particles`` and,
    with ``ais_settings``, AIS; errors (estimate - exact) and SEs in nats per sequence."""
    rows = []
    for length in sorted({max(1, round(f * x.shape[1])) for f in SWEEP_FRACTIONS}):
        start = time.perf_counter()
        prefix = x[:, :length]
        with torch.no_grad():
            exact = model.exact_log_prob(prefix).double().mean().item()
        summary = estimate_log_likelihood(local_model, local_guide, prefix, num_particles, iwae_ks=(1,),
                                          max_plate_nesting=max_plate_nesting, psis=False,
                                          seed=seed).summary()
        row = {"length": length, "exact": exact, "elbo_error": summary["iwae"][1] - exact,
               "elbo_se": summary["iwae_se"][1], "is_error": summary["log_px"] - exact,
               "is_se": summary["log_px_se"], "is_ess_mean": summary["ess_mean"]}
        if ais_settings is not None:
            ais = _ais(local_model, local_guide, prefix, ais_settings)
            row.update(ais_error=ais["value"] - exact, ais_se=ais["se"], ais_acceptance=ais["acceptance"])
        rows.append({**row, "seconds": time.perf_counter() - start})
    return rows


def _sweep_figure(rows: list[dict], path: Path) -> Path:
    fig = Figure(figsize=(6.5, 4.2), dpi=100)
    ax = fig.add_subplot()
    lengths = [row["length"] for row in rows]
    for key, label, colour in (("elbo", "ELBO", "C0"), ("is", "IS", "C1"), ("ais", "AIS", "C2")):
        if f"{key}_error" in rows[0]:
            ax.errorbar(lengths, [row[f"{key}_error"] for row in rows], marker="o", capsize=3, color=colour,
                        yerr=[2 * _finite(row[f"{key}_se"]) for row in rows], label=f"{label} (±2 SE)")
    ax.axhline(0.0, color="k", lw=0.8, label="exact log p(x)")
    ax.set_xscale("log")
    ax.set_xlabel("sequence length T (prefixes of the evaluated sequences)")
    ax.set_ylabel(f"estimate - exact, {UNITS}")
    ax.set_title("error of each estimator against the exact value as T grows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _ladder_figure(report: dict, path: Path) -> Path:
    groups = [("evaluated", f"{report['num_data']} evaluated data points")]
    if "bdmc" in report:
        groups.append(("simulated", report["bdmc"]["data"]))
    fig = Figure(figsize=(7, 1.2 + 0.45 * len(report["ladder"]) + 0.6 * len(groups)), dpi=100)
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, (data, title) in zip(axes, groups, strict=True):
        plot_ladder(ax, report["ladder"], data, f"estimator ladder: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_ladder(ax, ladder: list[dict], data: str = "evaluated", title: str = "estimator ladder"):
    """The rungs of ``ladder`` (a report's ``"ladder"``) on ``data`` ("evaluated" or "simulated"),
    each at its value with ±2 SE, drawn on the matplotlib axes ``ax``."""
    colours = {"lower bound": "C0", "stochastic lower bound": "C1", "stochastic upper bound": "C3",
               "exact": "k"}
    rungs = [r for r in ladder if r["data"] == data]
    for y, rung in enumerate(rungs):
        if rung["value"] is None:
            continue
        marker = "D" if rung["kind"] == "exact" else "o"
        ax.errorbar(rung["value"], y, xerr=2 * _finite(rung["se"]), fmt=marker, color=colours[rung["kind"]],
                    capsize=3)
    ax.set_yticks(range(len(rungs)), [r["name"] for r in rungs])
    ax.invert_yaxis()
    ax.set_xlabel(f"mean log p(x), {UNITS} (±2 SE)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def compare_posteriors(model, inputs: tuple, num_draws: int = 1000, nuts_samples: int = 500,
                       max_plate_nesting: int = 1) -> dict:
    """Posterior means and sds of the global latents: the guide (``num_draws`` draws), NUTS
    (``nuts_samples`` draws after as many warm-up steps; skipped at 0) and, where the model
    declares it, the exact posterior. Returns ``{"table": {element: {"guide_mean", "guide_sd",
    "guide_mcse", "nuts_mean", "nuts_sd", "nuts_mcse", "nuts_ess", "exact_mean", "exact_sd"}},
    "guide": InferenceData, "nuts": InferenceData or None, "seconds": float}``; an element is
    named as ArviZ names it (``w[3]``); MCSE is the Monte Carlo standard error of the mean
    (sd / sqrt(S) for independent guide draws, ArviZ's ``mcse_mean`` for the chain).
    """
    start = time.perf_counter()
    guide = from_guide(model.model, model.guide, inputs, num_draws, max_plate_nesting=max_plate_nesting,
                       log_likelihood=False)
    nuts = None
    if nuts_samples:
        nuts = from_nuts(model.model, inputs, num_samples=nuts_samples, warmup=nuts_samples,
                         max_plate_nesting=max_plate_nesting, log_likelihood=False, full_mass=True)
    table = {}
    for name, row in arviz_summary(guide, kind="stats", round_to="none").iterrows():
        table[name] = {"guide_mean": row["mean"], "guide_sd": row["sd"],
                       "guide_mcse": row["sd"] / math.sqrt(num_draws)}
    if nuts is not None:
        for name, row in arviz_summary(nuts, round_to="none").iterrows():
            if name in table:
                table[name].update(nuts_mean=row["mean"], nuts_sd=row["sd"], nuts_mcse=row["mcse_mean"],
                                   nuts_ess=row["ess_bulk"])
    if model.capabilities.exact_global_posterior:
        with torch.no_grad():
            for site, posterior in model.exact_global_posterior(*inputs).items():
                for name, mean, sd in _elements(site, posterior.mean, posterior.variance.sqrt()):
                    if name in table:
                        table[name].update(exact_mean=mean, exact_sd=sd)
    return {"table": table, "guide": guide, "nuts": nuts, "seconds": time.perf_counter() - start}


def _elements(site: str, mean: torch.Tensor, sd: torch.Tensor):
    """(ArviZ element name, mean, sd) for each element of a site's value."""
    if mean.dim() == 0:
        yield site, mean.item(), sd.item()
        return
    for index in itertools.product(*(range(n) for n in mean.shape)):
        yield f"{site}[{', '.join(map(str, index))}]", mean[index].item(), sd[index].item()


def posterior_table_markdown(table: dict) -> str:
    """The posterior comparison as a Markdown table (means ± sds; blank where a source is absent)."""
    columns = [("guide", "guide (VI)"), ("nuts", "NUTS"), ("exact", "exact")]
    present = [(key, title) for key, title in columns if any(f"{key}_mean" in row for row in table.values())]
    lines = ["| latent | " + " | ".join(f"{title} mean ± sd" for _, title in present) + " |",
             "| --- |" + " --- |" * len(present)]
    for name, row in table.items():
        cells = [f"{row[f'{key}_mean']:.4g} ± {row[f'{key}_sd']:.3g}" if f"{key}_mean" in row else ""
                 for key, _ in present]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _exact(model, x: torch.Tensor, summary: dict) -> dict:
    with torch.no_grad():
        exact = model.exact_log_prob(x).double().mean().item()
    gap = summary["log_px"] - exact
    se = summary["log_px_se"]
    return {
        "log_px": exact,
        "is_minus_exact": gap,
        "gap_in_se": gap / se if se > 0 else None,
        "elbo_gap": exact - summary["iwae"][1],
    }


def _latent_usage(model, guide, inputs: tuple, max_plate_nesting: int) -> dict:
    if guide is None or inputs[0].shape[0] < 2:
        return {}
    return latent_usage(model, guide, tuple(t[:2000] for t in inputs), max_plate_nesting=max_plate_nesting)


def _figures(model, data: DataSplit, result, report: dict, out_dir: Path, idata, extra) -> dict[str, str]:
    paths = {}
    if "posterior_comparison" in report:
        table = posterior_table_markdown(report["posterior_comparison"])
        paths["posterior means ± sds: guide vs NUTS vs exact (table)"] = write_atomic(
            out_dir / "posterior_table.md", table)
        if extra.get("nuts") is not None:
            paths["posterior of the global latents: guide vs NUTS (ArviZ forest)"] = plot_vi_vs_nuts(
                extra["guide"], extra["nuts"], out_dir / "vi_vs_nuts.png")
    if result is not None:
        paths["bounds vs number of particles k"] = _bound_figure(report, out_dir / "bound_vs_k.png")
    if result is not None and result.khat is not None:
        paths["PSIS k-hat of the importance weights"] = _khat_figure(result.khat, report["khat"],
                                                                     out_dir / "khat.png")
    if idata is not None:
        caption = "guide posterior of the global latents (ArviZ)"
        paths[caption] = _forest_figure(idata, out_dir / "posterior.png")
    return {caption: _relative(path, out_dir) for caption, path in paths.items()}


def _global_posterior(model, inputs: tuple, num_samples: int = 500):
    """ArviZ InferenceData of guide draws of the global latents, or None when there are none."""
    try:
        return from_guide(model.model, model.guide, inputs, num_samples, log_likelihood=False)
    except ValueError:
        return None


def _forest_figure(idata, path: Path) -> Path:
    az = arviz()
    size = sum(idata.posterior[v].isel(chain=0, draw=0).size for v in idata.posterior.data_vars)
    fig = Figure(figsize=(7, 1.5 + 0.3 * size))
    ax = fig.add_subplot()
    az.plot_forest(idata, combined=True, hdi_prob=0.94, ax=ax)
    ax.set_title("guide posterior of the global latents (94% HDI)")
    ax.set_xlabel("value of the latent (guide draws: 94% HDI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _bound_figure(report: dict, path: Path) -> Path:
    ks = sorted(int(k) for k in report["iwae"])
    values = [report["iwae"][str(k)]["value"] for k in ks]
    errors = [_finite(report["iwae"][str(k)]["se"]) * 2 for k in ks]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.errorbar(ks, values, yerr=errors, marker="o", capsize=3, label="IWAE_k (ELBO at k = 1), ±2 SE")
    estimate, se = report["log_px"]["value"], report["log_px"]["se"]
    ax.axhline(estimate, color="C1", ls="--", label=f"IS log p(x), K = {report['num_particles']}")
    ax.axhspan(estimate - 2 * se, estimate + 2 * se, color="C1", alpha=0.2)
    if "exact" in report:
        ax.axhline(report["exact"]["log_px"], color="k", label="exact log p(x)")
    ax.set_xscale("log")
    ax.set_xlabel("number of particles k")
    ax.set_ylabel(f"nats per data point (mean over {report['num_data']})")
    ax.set_title("bounds on log p(x) vs k")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _khat_figure(khat: torch.Tensor, summary: dict, path: Path) -> Path:
    k = khat[torch.isfinite(khat)].numpy()
    bounded = int(torch.isneginf(khat).sum())
    missing = int(torch.isnan(khat).sum())
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    if k.size:
        ax.hist(k, bins=min(50, max(10, k.size // 10)), color="C0")
    ax.axvline(FINITE_VARIANCE_K, color="C2", ls="--", label=f"{FINITE_VARIANCE_K} (finite variance below)")
    if "threshold" in summary:
        ax.axvline(summary["threshold"], color="C3", ls="--",
                   label=f"{summary['threshold']:.2f}: threshold at K = {summary['num_particles']} "
                         f"({summary['over threshold']:.0%} of points over; "
                         f"{summary['over threshold by chance']:.0%} by chance alone)")
    ax.set_xlabel("Pareto k̂ per data point")
    ax.set_ylabel("data points")
    notes = [f"{bounded} with bounded weights (k̂ = -inf)"] if bounded else []
    notes += [f"{missing} not estimated"] if missing else []
    ax.set_title("PSIS k̂ of the importance weights" + "".join(f"; {n}" for n in notes), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def write_index(out_dir, title: str, sections) -> Path:
    """Write ``out_dir/index.md`` (and ``index.json`` with every section's metrics).

    ``sections``: a list of ``(heading, metrics dict, {caption: path})``; ``.png`` paths are
    embedded as images, other paths (e.g. a ``report.json``) linked; paths are written relative
    to ``out_dir``. Nested metrics are flattened to ``a.b.c`` rows of a table. Returns the path
    of ``index.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    note = f"All log-likelihoods in {UNITS}; metrics as JSON in [index.json](index.json)."
    lines = [f"# {title}", "", note, ""]
    collected = {}
    for heading, metrics, files in sections:
        collected[heading] = to_json(metrics)
        lines += [f"## {heading}", ""]
        rows = _flatten(collected[heading])
        if rows:
            lines += ["| metric | value |", "| --- | --- |"]
            lines += [f"| {key} | {_format(value)} |" for key, value in rows]
            lines.append("")
        for caption, path in (files or {}).items():
            link = _relative(path, out_dir)
            lines.append(f"![{caption}]({link})" if link.endswith(".png") else f"- [{caption}]({link})")
            lines.append("")
    write_atomic(out_dir / "index.json", json.dumps(collected, indent=2, allow_nan=False) + "\n")
    index = write_atomic(out_dir / "index.md", "\n".join(lines).rstrip() + "\n")
    return index


def _finite(value) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def _flatten(metrics: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, name + ".")
        else:
            rows.append((name, value))
    return rows


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        shown = ", ".join(_format(v) for v in value[:8])
        return f"[{shown}{', ...' if len(value) > 8 else ''}]"
    return str(value).replace("|", "\\|")


def _relative(path, out_dir: Path) -> str:
    """``path`` relative to ``out_dir`` where it lies inside it; a relative path that does not
    exist from the working directory is taken as relative to ``out_dir`` already."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        return path.as_posix()
    try:
        return path.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


__all__ = [
    "AIS_SETTINGS", "METHODS", "NO_IMPORTANCE_SAMPLING", "SBC_SETTINGS", "SWEEP_FRACTIONS", "UNITS",
    "check_methods", "compare_posteriors", "evaluate", "evidence_report", "ladder", "length_sweep",
    "plot_ladder", "posterior_table_markdown", "write_index"
]
