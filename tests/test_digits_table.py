"""The digits table (benchmarks/digits_table.py): its smoke run produces every family's rungs, and its
summaries (standard errors, the theory's order, paired margins) are what they say on made-up rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import digits_table
from benchmarks.digits_table import best, checks, ranking, rung


def made_up(label: str, **rungs: tuple[list[float], list[float]]) -> dict:
    """A row whose rungs have the given per-image values and estimator SEs."""
    return {"label": label, "trained": {"epochs": 1, "seconds": 0.0},
            "rungs": {name.replace("__", ", "): rung(torch.tensor(v), torch.tensor(se), 0.0)
                      for name, (v, se) in rungs.items()}}


def test_rung_standard_errors():
    values, se = [-1.0, -2.0, -4.0], [0.3, 0.4, 0.0]
    r = rung(torch.tensor(values), torch.tensor(se), 1.5)
    assert r["value"] == pytest.approx(np.mean(values))
    assert r["se"] == pytest.approx(0.5 / 3)  # sqrt(0.09 + 0.16) / 3
    assert r["se_images"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(3))


def test_checks_catch_a_broken_order_and_a_low_ais():
    good = made_up("good", ELBO=([-3.0, -3.0], [0.1, 0.1]), IS__K=([-2.0, -2.0], [0.1, 0.1]),
                   AIS__16=([-2.05, -2.05], [0.1, 0.1]))
    bad = made_up("bad", ELBO=([-1.0, -1.0], [0.1, 0.1]), IS__K=([-2.0, -2.0], [0.01, 0.01]),
                  AIS__16=([-2.5, -2.5], [0.01, 0.01]))
    verdicts = {(c["model"], c["check"]): c["passed"] for c in checks([good, bad])}
    assert verdicts == {("good", "ELBO <= IWAE_k <= IS"): True, ("good", "AIS >= IS - 3 SE"): True,
                        ("bad", "ELBO <= IWAE_k <= IS"): False, ("bad", "AIS >= IS - 3 SE"): False}


def test_ranking_uses_each_models_best_rung_and_paired_differences():
    arm = made_up("arm", exact=([-1.0, -3.0, -2.0], [0.0, 0.0, 0.0]))
    vae = made_up("vae", ELBO=([-9.0, -9.0, -9.0], [0.1] * 3), IS__K=([-2.0, -3.5, -2.1], [0.1] * 3),
                  AIS__16=([-2.2, -3.6, -2.0], [0.1] * 3))
    assert best(vae)[0] == "IS, K"
    first, second = ranking([vae, arm])
    diff = np.array([-1.0, -3.0, -2.0]) - np.array([-2.0, -3.5, -2.1])
    assert (first["model"], first["next"], second["model"]) == ("arm", "vae", "vae")
    assert first["margin"] == pytest.approx(diff.mean())
    assert first["margin_se"] == pytest.approx(diff.std(ddof=1) / math.sqrt(3))


def test_smoke_run_scores_every_family(tmp_path):
    out, picture = tmp_path / "table.json", tmp_path / "ladder.png"
    report = digits_table.main(["--smoke", "--part", "digits", "--json", str(out), "--figure", str(picture)])
    (title,) = [key for key in report.settings if key.startswith("8x8 digits")]
    rows = {row["label"]: row for row in report.settings[title]["rows"]}
    assert list(rows) == [entry.label for entry in digits_table.DIGITS]
    assert list(rows["ARM (MADE)"]["rungs"]) == ["exact"]
    assert [digits_table.kind(name) for name in rows["flow (RealNVP)"]["rungs"]] == ["ELBO", "IS"]
    assert [digits_table.kind(name) for name in rows["HVAE"]["rungs"]] == ["ELBO", "IS", "AIS"]
    orders = [c for c in report.settings[title]["checks"] if c["check"] == "ELBO <= IWAE_k <= IS"]
    assert len(orders) == 5 and all(c["passed"] for c in orders)
    assert json.loads(out.read_text())["name"] == "digits_table"
    assert picture.stat().st_size > 0 and "| ARM (MADE) | exact |" in report.settings["markdown"]
    redrawn = tmp_path / "redrawn.png"
    assert digits_table.main(["--figure-from", str(out), "--figure", str(redrawn)]) is None
    assert redrawn.stat().st_size > 0
