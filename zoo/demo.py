"""`zoo demo`: every registered model, small, on embedded data; one report folder.

Each model trains with its spec's smoke settings and is evaluated with K = ``DEMO_PARTICLES``
importance samples on its first ``DEMO_POINTS`` test points; ``overview.png`` puts the VAE's test
digits, their reconstructions, its samples and its estimator ladder side by side (the README's figure).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from pyro_zoo import runs
from pyro_zoo.folders import check_folder, run_folder
from pyro_zoo.inference.checkpoint import write_atomic
from pyro_zoo.inference.evaluate import plot_ladder, write_index
from pyro_zoo.models import REGISTRY

DEMO_PARTICLES = 1000
DEMO_POINTS = 200
#: the model of the overview figure (the README's): a VAE, whose reconstructions and samples it shows
OVERVIEW_MODEL = "vae"


def run_demo(out="report", *, device="cpu", seed=0, progress=True, overwrite=False) -> dict:
    """Train each model in smoke mode, evaluate it, write ``out/index.md`` and ``out/report.json``.

    An earlier demo in ``out`` (its report and its runs under ``out/<model>``) is replaced only
    with ``overwrite``, which removes its files first; a folder holding another kind of run (a
    training run, an evaluation) is refused. Every check is made before any training starts.
    Runs on one intra-op thread.
    """
    out = runs.out_folder(out, Path("report"))
    check_folder(out, "demo", overwrite=overwrite)
    for name in sorted(REGISTRY):
        check_folder(out / name, "train", overwrite=overwrite)
        check_folder(out / name / "eval", "eval", overwrite=overwrite)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: a second intra-op thread mostly waits at barriers
    try:
        with run_folder(out, "demo", overwrite=overwrite):
            seconds = _run_all(out, device, seed, progress, overwrite)
    finally:
        torch.set_num_threads(threads)
    if progress:
        print(f"demo report: {out / 'index.md'} ({seconds:.0f} s)")
    return {"report": str(out / "index.md"), "seconds": seconds}


def _run_all(out: Path, device, seed, progress, overwrite) -> float:
    results, sections = {}, []
    start = time.perf_counter()
    for name in sorted(REGISTRY):
        run_dir = out / name
        if progress:
            print(f"== {name}", flush=True)
        metrics = runs.train(name, out=run_dir, smoke=True, device=device, seed=seed,
                             overwrite=overwrite, progress=progress)
        report = runs.evaluate(run_dir / "checkpoint.pt", num_particles=DEMO_PARTICLES, limit=DEMO_POINTS,
                               device=device, out=run_dir / "eval", overwrite=overwrite, progress=False,
                               seed=seed)
        results[name] = {"train": metrics, "eval": report}
        figures = {caption: Path(path).resolve() for caption, path in metrics["figures"].items()}
        figures.update({caption: (run_dir / "eval" / path).resolve()
                        for caption, path in report["figures"].items()})
        figures["evaluation report (JSON)"] = (run_dir / "eval" / "report.json").resolve()
        sections.append((name, _headline(metrics, report), figures))
    results["seconds"] = time.perf_counter() - start
    write_atomic(out / "report.json", json.dumps(results, indent=2, default=str))
    if OVERVIEW_MODEL in results:
        figure = overview_figure(out / OVERVIEW_MODEL, results[OVERVIEW_MODEL]["eval"], out / "overview.png")
        sections.insert(0, ("overview", {}, {"the VAE at a glance": figure}))
    write_index(out, "Model zoo demo", sections)
    return results["seconds"]
    if progress:
        print(f"demo report: {out / 'index.md'} ({results['seconds']:.0f} s)")
    return {"report": str(out / "index.md"), "seconds": results["seconds"]}


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
