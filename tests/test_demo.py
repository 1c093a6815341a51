"""`zoo demo` in several processes gives the report it gives in one."""

from __future__ import annotations

import json

from pyro_zoo.demo import run_demo

#: two quick models of the demo
MODELS = ("mixture", "student")


def test_demo_in_two_processes_equals_the_demo_in_one(tmp_path):
    """Each model draws from its own stream seeded by the demo's seed, so the process a model runs
    in changes nothing: the same training losses and the same importance-sampling estimates."""
    reports = {}
    for workers in (1, 2):
        out = tmp_path / f"workers-{workers}"
        run_demo(out, models=MODELS, workers=workers, progress=False)
        reports[workers] = json.loads((out / "report.json").read_text())
        assert all(f"## {name}" in (out / "index.md").read_text() for name in MODELS)
    for name in MODELS:
        one, two = reports[1][name], reports[2][name]
        assert one["train"]["train_loss"] == two["train"]["train_loss"], name
        assert one["eval"]["log_px"] == two["eval"]["log_px"], name
