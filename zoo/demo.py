"""`zoo demo`: every registered model, small, on embedded data; one report folder.

Each model trains with its spec's smoke settings and is evaluated with K = ``DEMO_PARTICLES``
importance samples on its first ``DEMO_POINTS`` test points; ``overview.png`` puts the VAE's test
digits, their reconstructions, its samples and its estimator ladder side by side (the README's figure).
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from pyro_zoo import runs
from pyro_zoo.folders import check_folder, run_folder
from pyro_zoo.inference.checkpoint import write_atomic
from pyro_zoo.inference.evaluate import plot_ladder, write_index
from pyro_zoo.models import REGISTRY, get_spec

DEMO_PARTICLES = 1000
DEMO_POINTS = 200
#: the model of the overview figure (the README's): a VAE, whose reconstructions and samples it shows
OVERVIEW_MODEL = "vae"


def run_demo(out="report", *, device="cpu", seed=0, progress=True, overwrite=False, models=None,
             workers=None) -> dict:
    """Train each model in smoke mode, evaluate it, write ``out/index.md`` and ``out/report.json``.

    ``models``: the names to run (default every registered model). They run in ``workers``
    processes at once (default one per CPU core, at most one per model), each on one intra-op
    thread: small tensors, where a second thread mostly waits at barriers while a second model
    keeps the core busy; ``workers=1`` runs them one after the other in this process. The results
    do not depend on ``workers``: every model draws from its own stream seeded by ``seed``.
    An earlier demo in ``out`` (its report and its runs under ``out/<model>``) is replaced only
    with ``overwrite``, which removes its files first; a folder holding another kind of run (a
    training run, an evaluation) is refused. Every check is made before any training starts.
    """
    names = sorted(REGISTRY) if models is None else [get_spec(name).name for name in models]
    workers = min(len(names), workers or _cores())
    out = runs.out_folder(out, Path("report"))
    check_folder(out, "demo", overwrite=overwrite)
    for name in names:
        check_folder(out / name, "train", overwrite=overwrite)
        check_folder(out / name / "eval", "eval", overwrite=overwrite)
    with run_folder(out, "demo", overwrite=overwrite):
        start = time.perf_counter()
        job = functools.partial(_one_model, out=out, device=device, seed=seed, overwrite=overwrite)
        if workers == 1:
            results = {name: job(name, progress=progress) for name in names}
        else:
            results = _in_processes(job, names, workers, progress)
        seconds = time.perf_counter() - start
        _write_report(out, results, seconds)
    if progress:
        print(f"demo report: {out / 'index.md'} ({seconds:.0f} s, {workers} process(es))")
    return {"report": str(out / "index.md"), "seconds": seconds}


def _cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _in_processes(job, names: list[str], workers: int, progress: bool) -> dict:
    """``{name: job(name)}`` from ``workers`` fresh processes (spawned: no forked torch state)."""
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(job, name): name for name in names}
        done = {}
        for future in tqdm(as_completed(futures), total=len(names), unit="model", desc="demo",
                           disable=not progress):
            done[futures[future]] = future.result()  # a model's error stops the demo here
    return {name: done[name] for name in names}


def _one_model(name: str, *, out: Path, device, seed: int, overwrite: bool, progress: bool = False) -> dict:
    """Train and evaluate model ``name`` of the demo under ``out / name`` on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = out / name
        if progress:
            print(f"== {name}", flush=True)
        metrics = runs.train(name, out=run_dir, smoke=True, device=device, seed=seed,
                             overwrite=overwrite, progress=progress)
        report = runs.evaluate(run_dir / "checkpoint.pt", num_particles=DEMO_PARTICLES, limit=DEMO_POINTS,
                               device=device, out=run_dir / "eval", overwrite=overwrite, progress=False,
                               seed=seed)
    finally:
        torch.set_num_threads(threads)
    return {"train": metrics, "eval": report}


def _write_report(out: Path, results: dict, seconds: float) -> None:
    """``out/report.json``, the overview figure and ``out/index.md`` from each model's results."""
    sections = []
    for name, result in results.items():
        run_dir, metrics, report = out / name, result["train"], result["eval"]
        figures = {caption: Path(path).resolve() for caption, path in metrics["figures"].items()}
        figures.update({caption: (run_dir / "eval" / path).resolve()
                        for caption, path in report["figures"].items()})
        figures["evaluation report (JSON)"] = (run_dir / "eval" / "report.json").resolve()
        sections.append((name, _headline(metrics, report), figures))
    write_atomic(out / "report.json", json.dumps({**results, "seconds": seconds}, indent=2, default=str))
    if OVERVIEW_MODEL in results:
        figure = overview_figure(out / OVERVIEW_MODEL, results[OVERVIEW_MODEL]["eval"], out / "overview.png")
        sections.insert(0, ("overview", {}, {"the VAE at a glance": figure}))
    write_index(out, "Model zoo demo", sections)


def _headline(metrics: dict, report: dict) -> dict:
    headline = {
        "data": report["source"],
        "train steps": metrics["steps"],
        "train seconds": metrics["train_seconds"],
        "objective": metrics["objective"],
        "train loss (objective)": metrics["train_loss"],
        "test −ELBO": metrics["test_neg_elbo"],
    }
    if "posterior_comparison" in report:  # global latents: no per-data-point log p(x)
        headline["test log p(x)"] = report["log_px"]["estimator"]
        headline["posterior means ± sds"] = "see eval/posterior_table.md"
        return headline
    headline.update({
        f"test IS log p(x), K = {report['num_particles']}": report["log_px"]["value"],
        "test IS log p(x) SE": report["log_px"]["se"],
        "test ELBO (IWAE_1)": report["elbo"]["value"],
        "PSIS k-hat": {k: report["khat"][k] for k in ("threshold", "over threshold", "max", "median",
                                                      "warning") if k in report["khat"]},
    })
    if "exact" in report:
        headline["test exact log p(x)"] = report["exact"]["log_px"]
        headline["IS − exact (in SE)"] = report["exact"]["gap_in_se"]
    return headline


@torch.no_grad()
def overview_figure(run_dir: Path, report: dict, path: Path, columns: int = 5, rows: int = 4) -> Path:
    """The VAE of ``run_dir`` at a glance: ``rows`` x ``columns`` test digits, their reconstructions
    (pixel probabilities decoded from E_q[z | x]), as many samples (decoded z ~ N(0, I)) and the
    estimator ladder of its ``report``, side by side."""
    spec, model, state = runs.load(run_dir / "checkpoint.pt")
    x = spec.load_data("test", smoke=state.get("smoke", False)).x[: rows * columns]
    side = math.isqrt(x.shape[1])
    panels = {"test digits (binarised)": x, "their reconstructions": model.reconstruct(x),
              "samples: sigmoid(f(z)), z ~ N(0, I)": model.decode(torch.randn(len(x), model.z_dim))}
    figure = Figure(figsize=(12, 2.8))
    axes = figure.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.5]})
    for ax, (title, images) in zip(axes, panels.items(), strict=False):
        padded = F.pad(images.reshape(rows, columns, side, side), (0, 1, 0, 1))  # a blank line between digits
        tiles = padded.permute(0, 2, 1, 3).reshape(rows * (side + 1), columns * (side + 1))
        ax.imshow(tiles.numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    plot_ladder(axes[-1], report["ladder"], title=f"ELBO ≤ IWAE_k ≤ IS on {report['num_data']} test digits")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    return path
