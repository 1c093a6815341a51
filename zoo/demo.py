"""`zoo demo`: every registered model, small, on embedded data; one report folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

from models import REGISTRY
from zoo import runs

DEMO_PARTICLES = 100
DEMO_POINTS = 200


def run_demo(out="report", *, device="cpu", seed=0, progress=True) -> dict:
    """Train each model in smoke mode, evaluate it, write ``out/index.md`` and ``out/report.json``."""
    from inference.evaluate import write_index

    out = Path(out)
    results, sections = {}, []
    start = time.perf_counter()
    for name in sorted(REGISTRY):
        run_dir = out / name
        if progress:
            print(f"== {name}", flush=True)
        metrics = runs.train(name, out=run_dir, smoke=True, device=device, seed=seed,
                             overwrite=True, progress=progress)
        report = runs.evaluate(run_dir / "checkpoint.pt", k=DEMO_PARTICLES, limit=DEMO_POINTS,
                               device=device, out=run_dir / "eval", progress=False, seed=seed)
        results[name] = {"train": metrics, "eval": report}
        figures = {**metrics.get("figures", {}), **report.get("figures", {})}
        sections.append((name, _headline(metrics, report), figures))
    results["seconds"] = time.perf_counter() - start
    (out / "report.json").write_text(json.dumps(results, indent=2, default=str))
    write_index(out, "Model zoo demo", sections)
    if progress:
        print(f"demo report: {out / 'index.md'} ({results['seconds']:.0f} s)")
    return {"report": str(out / "index.md"), "seconds": results["seconds"]}


def _headline(metrics: dict, report: dict) -> dict:
    keys = ("log_px", "log_px_se", "elbo", "exact_log_px", "khat")
    return {
        "train −ELBO": metrics["train_neg_elbo"],
        "test −ELBO": metrics["test_neg_elbo"],
        "train seconds": metrics["train_seconds"],
        **{k: report[k] for k in keys if k in report},
        "units": runs.UNITS,
    }
