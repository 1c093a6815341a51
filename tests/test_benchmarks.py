"""Every benchmark's --smoke mode runs in-process and produces its numbers; the harness around
them (interleaving, targets, the MNIST stand-in, errors, RESULTS.md rendering) does what it says."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch

from benchmarks import BENCHMARKS, run_all
from benchmarks.common import Report, Row, interleaved, pgmpy_version


@pytest.mark.parametrize("name", BENCHMARKS)
def test_smoke_mode_produces_numbers(name, tmp_path):
    out = tmp_path / "result.json"
    report = importlib.import_module(f"benchmarks.{name}").main(["--smoke", "--json", str(out)])
    assert report.rows
    for row in report.rows:
        assert math.isfinite(row.zoo_s) and row.zoo_s > 0
        if name == "student" and pgmpy_version() is None:
            assert row.peer_s is None and row.met is None
            continue
        assert math.isfinite(row.peer_s) and row.peer_s > 0
        assert row.ratio == pytest.approx(row.zoo_s / row.peer_s)
        assert row.met in (True, False)
        if name == "distributed":  # two processes give the one-process estimates, bit for bit
            assert row.accuracy_met is not False
    saved = json.loads(out.read_text())
    assert saved["name"] == name and len(saved["rows"]) == len(report.rows)


def test_profile_fixes_smoke_measures_every_change():
    from benchmarks import profile_fixes

    changes = profile_fixes.main(["--smoke"]).settings["changes"]
    assert len(changes) == len(profile_fixes.CHANGES)
    for change in changes:
        assert math.isfinite(change["current_s"]) and math.isfinite(change["changed_s"])
        assert change["gain"] == pytest.approx(change["current_s"] / change["changed_s"])


def test_smoke_without_mnist_uses_the_digits_stand_in(tmp_path):
    from benchmarks import vae_epoch

    report = vae_epoch.main(["--smoke", "--data-dir", str(tmp_path / "empty")])
    assert any("digits" in note for note in report.notes)
    assert report.settings["images"] == 1024
    assert math.isfinite(report.rows[0].peer_s)


def test_full_mode_without_mnist_names_the_fix(tmp_path):
    from benchmarks import vae_step

    with pytest.raises(SystemExit, match="--data-dir"):
        vae_step.main(["--data-dir", str(tmp_path)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
@pytest.mark.parametrize("name", run_all.ALL)
def test_cuda_without_gpu_stops_with_a_clear_message(name):
    with pytest.raises(SystemExit, match="no CUDA GPU"):
        importlib.import_module(f"benchmarks.{name}").main(["--smoke", "--device", "cuda"])


def test_rounds_alternate_zoo_and_peer_after_warm_up():
    calls = []
    zoo_times, peer_times = interleaved(lambda: calls.append("z"), lambda: calls.append("p"),
                                        device=torch.device("cpu"), repeats=3, warmup=1, units=2)
    assert calls == ["z", "p"] * 4
    assert len(zoo_times) == len(peer_times) == 3


def test_targets_combine_speed_and_accuracy():
    fast = Row("b", "p", "s", zoo_s=1.0, peer_s=4.0, target="≤ 1/3", max_ratio=1 / 3)
    assert fast.ratio == 0.25 and fast.met
    wrong = Row("b", "p", "s", zoo_s=1.0, peer_s=4.0, target="≤ 1/3", max_ratio=1 / 3, accuracy_met=False)
    assert wrong.speed_met and not wrong.met
    slow = Row("b", "p", "s", zoo_s=1.06, peer_s=1.0, target="≤ 1.05", max_ratio=1.05)
    assert slow.met is False
    alone = Row("b", "p", "s", zoo_s=1.0, peer_s=None, target="≤ 1", max_ratio=1.0)
    assert alone.ratio is None and alone.met is None


def test_results_rewrite_keeps_the_analysis(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(f"old table\n{run_all.ANALYSIS_MARKER}\n\n## Analysis\n\nhand-written words\n")
    row = Row("mixture fit", "sklearn", "s per fit", zoo_s=2.0, peer_s=1.0, target="≤ 1", max_ratio=1.0)
    report = Report("mixture", "python -m benchmarks.mixture", [row], notes=["a note"])
    info = {"date": "today", "cpu": "CPU", "cores": 2, "load_before": [1], "load_after": [1],
            "python": "3", "torch": "t", "pyro": "p", "sklearn": "s", "pgmpy": None, "cuda": "none",
            "threads": 1, "wall": 1.0}
    result = {"k": 1, "epochs": 3, "train_s": 9.0, "neg_log_p": 90.0, "se": 0.5, "test_neg_elbo": 95.0,
              "active_units": 20, "eval_s": 2.0}
    paper = Report("iwae_paper", "python -m benchmarks.iwae_paper", [],
                   settings={"results": [result], "eval_k": 5000})
    text = run_all.render([report, paper], ["vae_step: error: no MNIST"], info,
                          "python -m benchmarks.run_all", run_all.kept_analysis(path))
    assert "| VAE (k=1) | 3 | 9 s | 90.00 ± 0.50 | 86.76 | 95.00 | 20 | 2 s |" in text
    assert "old table" not in text and "hand-written words" in text
    assert "| mixture fit | sklearn | s per fit | 2 s | 1 s | 2 |" in text
    assert "**not met**" in text and "no GPU" in text.replace("lack of a GPU", "no GPU")
    assert "vae_step: error: no MNIST" in text


def test_smoke_run_all_leaves_results_alone(tmp_path):
    output = tmp_path / "RESULTS.md"
    reports = run_all.main(["--smoke", "--only", "student", "--output", str(output)])
    assert [r.name for r in reports] == ["student"] and not output.exists()


def test_paper_reproduction_smoke_trains_and_evaluates_both_objectives():
    from benchmarks import iwae_paper

    results = iwae_paper.main(["--smoke"]).settings["results"]
    assert [r["k"] for r in results] == [1, iwae_paper.SMOKE["iwae_k"]]
    for r in results:
        assert r["epochs"] >= 1 and r["steps"] > 0
        assert math.isfinite(r["neg_log_p"]) and r["se"] > 0
        # log p(x) >= ELBO in expectation: the k=50 estimate sits below the one-sample -ELBO
        assert r["neg_log_p"] < r["test_neg_elbo"]


def test_burda_schedule_stretches_the_paper_stages():
    from benchmarks.iwae_paper import PAPER_EPOCHS, burda_decay

    decay = burda_decay(1)  # one step per epoch: stages of 1, 3, 9, ... 2187 epochs
    assert decay(0) == 1.0
    assert decay(1) == decay(3) == pytest.approx(10 ** (-1 / 7))
    assert decay(4) == pytest.approx(10 ** (-2 / 7))
    assert decay(PAPER_EPOCHS - 1) == decay(10 * PAPER_EPOCHS) == pytest.approx(0.1)
    assert burda_decay(10)(39) == pytest.approx(10 ** (-1 / 7))  # epoch 3.9: stage 1
