"""The CLI contract: JSON on the last line, one-sentence errors on stderr, exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from pyro_zoo.cli import main
from pyro_zoo.models import REGISTRY


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


def test_list_names_every_registered_model(capsys):
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    assert sorted(row["name"] for row in last_json(out)) == sorted(REGISTRY)


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "pyro_zoo", "list"], capture_output=True, text=True,
                          check=True)
    assert all(name in done.stdout for name in REGISTRY)


def test_a_reader_that_stops_early_gets_no_traceback():
    """`zoo list | head -1`: the pipe's reader is gone before zoo writes; zoo stops quietly
    (status 1, as Python's documentation advises) instead of printing a BrokenPipeError."""
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed_pipe:
        done = subprocess.run([sys.executable, "-m", "pyro_zoo", "list"], stdout=closed_pipe,
                              stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "mixture"
    assert main(["train", "mixture", "--smoke", "--out", str(out), "--no-progress"]) == 0
    return out


def test_train_writes_checkpoint_history_and_figures(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["units"] == "nats per data point"
    assert (trained / "checkpoint.pt").is_file() and (trained / "loss.png").is_file()
    assert len(json.loads((trained / "history.json").read_text())["loss"]) == metrics["steps"]


def test_train_json_and_resume(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", "mixture", "--smoke", "--steps", "10", "--out", str(out),
                          "--json", "--no-progress")
    assert code == 0 and last_json(stdout)["steps"] == 10
    code, stdout, _ = run(capsys, "train", "mixture", "--smoke", "--steps", "15", "--out", str(out),
                          "--resume", "--json", "--no-progress")
    assert code == 0 and last_json(stdout)["steps"] == 15


def test_eval_reports_nats_per_data_point(capsys, trained):
    code, out, _ = run(capsys, "eval", "mixture", "--checkpoint", str(trained / "checkpoint.pt"),
                       "--num-particles", "50", "--limit", "20", "--json", "--no-progress")
    report = last_json(out)
    assert code == 0 and report["model"] == "mixture"
    assert "nats" in report["units"]


def test_query_student(capsys):
    code, out, _ = run(capsys, "query", "student", "I | G=C,S=1", "--json")
    assert code == 0
    assert abs(last_json(out)["I=1"] - 0.578313) < 1e-6


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error:")
    return lines[0]


def test_unknown_model(capsys):
    assert "zoo list" in one_line_error(capsys, "train", "nosuchmodel", "--smoke")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_absent(capsys, tmp_path):
    assert "--device cpu" in one_line_error(capsys, "train", "mixture", "--smoke", "--device", "cuda",
                                            "--out", str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_corrupt_checkpoint(capsys, tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"garbage")
    assert "corrupt" in one_line_error(capsys, "eval", "mixture", "--checkpoint", str(bad))
    assert bad.read_bytes() == b"garbage"


def test_nan_in_user_csv(capsys, tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("1.0\n2.0\nnan\n3.0\n")
    one_line_error(capsys, "train", "mixture", "--smoke", "--data", str(csv), "--out", str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_existing_run_is_not_overwritten(capsys, trained):
    before = (trained / "checkpoint.pt").read_bytes()
    assert "--resume" in one_line_error(capsys, "train", "mixture", "--smoke", "--out", str(trained))
    assert (trained / "checkpoint.pt").read_bytes() == before


def test_missing_mnist_offline(capsys, tmp_path, monkeypatch):
    def offline(self):
        raise RuntimeError("no network")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", offline)
    one_line_error(capsys, "train", "vae", "--data", "mnist", "--data-dir", str(tmp_path / "empty"),
                   "--out", str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_eval_methods_add_rungs_to_the_ladder(capsys, tmp_path):
    out = tmp_path / "dlgm"
    assert main(["train", "dlgm", "--smoke", "--steps", "20", "--out", str(out), "--no-progress"]) == 0
    code, stdout, _ = run(capsys, "eval", "dlgm", "--checkpoint", str(out / "checkpoint.pt"),
                          "--num-particles", "50", "--limit", "20", "--method", "is", "ais", "bdmc", "--json",
                          "--no-progress")
    report = last_json(stdout)
    names = [rung["name"] for rung in report["ladder"]]
    assert code == 0 and "AIS" in names and "BDMC upper (reverse AIS)" in names
    assert (out / "eval" / "ladder.png").is_file()


def test_eval_unknown_method(capsys, trained):
    message = one_line_error(capsys, "eval", "mixture", "--checkpoint", str(trained / "checkpoint.pt"),
                             "--method", "is", "mcmc")
    assert "unknown method 'mcmc'" in message and "ais" in message
