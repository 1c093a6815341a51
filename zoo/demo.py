"""`zoo demo`: every registered model, small, on embedded data; one report folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

from inference.checkpoint import write_atomic
from models import REGISTRY
from zoo import runs
from zoo.folders import check_folder, run_folder

DEMO_PARTICLES = 1000
DEMO_POINTS = 200


def run_demo(out="report", *, device="cpu", seed=0, progress=True, overwrite=False) -> dict:
    """Train each model in smoke mode, evaluate it, write ``out/index.md`` and ``out/report.json``.

    An earlier demo in ``out`` (its report and its runs under ``out/<model>``) is replaced only
    with ``overwrite``, which removes its files first; a folder holding another kind of run (a
    training run, an evaluation) is refused. Every check is made before any training starts.
    """
    from inference.evaluate import write_index

    out = runs.out_folder(out, Path("report"))
    check_folder(out, "demo", overwrite=overwrite)
    for name in sorted(REGISTRY):
        check_folder(out / name, "train", overwrite=overwrite)
        check_folder(out / name / "eval", "eval", overwrite=overwrite)
    results, sections = {}, []
    start = time.perf_counter()
    with run_folder(out, "demo", overwrite=overwrite):
        for name in sorted(REGISTRY):
            run_dir = out / name
            if progress:
                print(f"== {name}", flush=True)
            metrics = runs.train(name, out=run_dir, smoke=True, device=device, seed=seed,
                                 overwrite=overwrite, progress=progress)
            report = runs.evaluate(run_dir / "checkpoint.pt", k=DEMO_PARTICLES, limit=DEMO_POINTS,
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
        write_index(out, "Model zoo demo", sections)
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
