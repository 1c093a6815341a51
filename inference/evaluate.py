r"""The evaluation report behind ``zoo eval``: importance-sampled log p(x) and its diagnostics.

For a zoo model and a data split, :func:`evaluate` estimates per data point, with the model's
``local_pair()`` as proposal and K = ``num_particles`` (see :mod:`inference.importance`),

    log p̂(x) = logsumexp_k log w_k - log K,      IWAE_k,      ELBO = IWAE_1,

then averages over the N data points; the standard error of a mean is sqrt(sum_n SE_n^2) / N
(importance-sampling noise given the data). Where the model has an exact log p(x), the report
adds it and the gap (log p̂ - log p) / SE. Diagnostics: PSIS k̂ per data point (thresholds 0.5
and 0.7, :mod:`inference.diagnostics`), the IS effective sample size, KL per latent unit and
active units (generic, for real-valued local latents, and the model's own ``kl_per_dim`` /
``active_units`` where it has them), ``model.metrics(data)`` and wall time. Every
log-likelihood is in nats per data point.

With ``out_dir`` it writes ``report.json``, ``bound_vs_k.png`` (ELBO, IWAE_k, IS log p(x) and
the exact value against k), ``khat.png`` (histogram of k̂ with the 0.5 / 0.7 lines) and the
model's own figures; :func:`write_index` writes an ``index.md`` over several such reports.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from inference import distributed
from inference.arviz_io import from_guide
from inference.arviz_io import summary as arviz_summary
from inference.checkpoint import write_atomic
from inference.diagnostics import (
    KHAT_BAD,
    KHAT_GOOD,
    ess_summary,
    khat_summary,
    latent_usage,
    model_latent_usage,
)
from inference.importance import estimate_log_likelihood
from models.base import DataSplit

UNITS = "nats per data point"


def evaluate(
    model,
    data,
    *,
    num_particles: int = 1000,
    iwae_ks=(1, 10, 100, 1000),
    max_plate_nesting: int = 1,
    out_dir=None,
    progress: bool = True,
    seed: int | None = None,
) -> dict:
    """Evaluate ``model`` (a ``ZooModel``) on ``data`` (a ``DataSplit`` or a tensor (N, ...)).

    Returns a JSON-serialisable dict (non-finite numbers become ``None``); writes
    ``report.json`` and PNG figures under ``out_dir`` when given. ``seed`` seeds the
    importance sampler per chunk of data points (see :func:`estimate_log_likelihood`). Under
    ``torchrun`` the data points are sampled by all ranks and rank 0 alone builds the report;
    the other ranks return ``{"rank": r}``.
    """
    start = time.perf_counter()
    data = data if isinstance(data, DataSplit) else DataSplit(x=data)
    data = data.to(model.device)
    x = data.x
    model.check_data(x)
    model.eval()
    local_model, local_guide = model.local_pair()
    result = estimate_log_likelihood(
        local_model, local_guide, x, num_particles,
        max_plate_nesting=max_plate_nesting, iwae_ks=iwae_ks, progress=progress, seed=seed,
    )
    # the hook for other per-data-point estimators (AIS...): run them through
    # inference.distributed.map_chunks, as estimate_log_likelihood does, before this line
    here = distributed.world()
    if not here.main:
        return {"rank": here.rank}
    summary = result.summary()
    report = {
        "model": type(model).__name__,
        "units": UNITS,
        "num_data": summary["num_data"],
        "num_particles": num_particles,
        "source": data.source,
        "log_px": {"value": summary["log_px"], "se": summary["log_px_se"],
                   "estimator": f"importance sampling, K = {num_particles}, proposal: the guide of "
                                "local_pair() (the prior for latents it leaves out)"},
        "elbo": {"value": summary["iwae"][1], "se": summary["iwae_se"][1]},
        "iwae": {str(k): {"value": v, "se": summary["iwae_se"][k]} for k, v in summary["iwae"].items()},
        "ess": ess_summary(result.ess, num_particles),
        "khat": khat_summary(result.khat),
    }
    if model.capabilities.exact_log_prob:
        report["exact"] = _exact(model, x, summary)
    usage = _latent_usage(local_model, local_guide, x, max_plate_nesting)
    if usage:
        report["latent_usage"] = usage
    if model.capabilities.latent_usage:
        report.update(model_latent_usage(model, x))
    idata = _global_posterior(model, x)
    if idata is not None:
        report["posterior_summary"] = arviz_summary(idata).to_dict(orient="index")
    report["metrics"] = model.metrics(data)
    report["seconds"] = {"importance_sampling": result.seconds}
    report["figures"] = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report["figures"] = _figures(model, data, result, report, out_dir, idata)
    report["seconds"]["total"] = time.perf_counter() - start
    report = to_json(report)
    if out_dir is not None:
        write_atomic(out_dir / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


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


def _latent_usage(model, guide, x: torch.Tensor, max_plate_nesting: int) -> dict:
    if guide is None or x.shape[0] < 2:
        return {}
    return latent_usage(model, guide, x[:2000], max_plate_nesting=max_plate_nesting)


def _figures(model, data: DataSplit, result, report: dict, out_dir: Path, idata) -> dict[str, str]:
    paths = {
        "bounds vs number of particles k": _bound_figure(report, out_dir / "bound_vs_k.png"),
    }
    if result.khat is not None:
        paths["PSIS k-hat of the importance weights"] = _khat_figure(result.khat, out_dir / "khat.png")
    if idata is not None:
        caption = "guide posterior of the global latents (ArviZ)"
        paths[caption] = _forest_figure(idata, out_dir / "posterior.png")
    paths.update(model.figures(data, out_dir))
    return {caption: _relative(path, out_dir) for caption, path in paths.items()}


def _global_posterior(model, x: torch.Tensor, num_samples: int = 500):
    """ArviZ InferenceData of guide draws of the global latents, or None when there are none."""
    try:
        return from_guide(model.model, model.guide, x, num_samples, log_likelihood=False)
    except ValueError:
        return None


def _forest_figure(idata, path: Path) -> Path:
    from inference.arviz_io import arviz

    az = arviz()
    from matplotlib.figure import Figure

    size = sum(idata.posterior[v].isel(chain=0, draw=0).size for v in idata.posterior.data_vars)
    fig = Figure(figsize=(7, 1.5 + 0.3 * size))
    ax = fig.add_subplot()
    az.plot_forest(idata, combined=True, hdi_prob=0.94, ax=ax)
    ax.set_title("guide posterior of the global latents (94% HDI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _bound_figure(report: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

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


def _khat_figure(khat: torch.Tensor, path: Path) -> Path:
    from matplotlib.figure import Figure

    k = khat[torch.isfinite(khat)].numpy()
    bounded = int(torch.isneginf(khat).sum())
    missing = int(torch.isnan(khat).sum())
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    if k.size:
        ax.hist(k, bins=min(50, max(10, k.size // 10)), color="C0")
    ax.axvline(KHAT_GOOD, color="C2", ls="--", label=f"{KHAT_GOOD} (good below)")
    ax.axvline(KHAT_BAD, color="C3", ls="--", label=f"{KHAT_BAD} (unreliable above)")
    ax.set_xlabel("Pareto k̂ per data point")
    ax.set_ylabel("data points")
    notes = [f"{bounded} with bounded weights (k̂ = -inf)"] if bounded else []
    notes += [f"{missing} not estimated"] if missing else []
    ax.set_title("PSIS k̂ of the importance weights" + "".join(f"; {n}" for n in notes))
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


def to_json(value):
    """``value`` with tensors, numpy values and tuples made plain, non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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


__all__ = sorted(["UNITS", "evaluate", "to_json", "write_index"])
