"""Files that cannot run code, runs that are never lost, resumes that are exact anywhere."""

from __future__ import annotations

import fcntl
import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from inference.checkpoint import load_checkpoint
from zoo.cli import main
from zoo.runs import LOCK


def one_line_error(capsys, *argv) -> str:
    code = main(list(argv))
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("zoo: error:"), err
    return lines[0]


class Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_checkpoints(folder: Path) -> list[Path]:
    marker = folder / "pwned"
    plain = folder / "plain.pt"
    plain.write_bytes(pickle.dumps({"model": "mixture", "payload": Payload(marker)}, protocol=2))
    zipped = folder / "zipped.pt"
    torch.save({"model": "mixture", "payload": Payload(marker)}, zipped)
    return [plain, zipped]


@pytest.mark.parametrize("command", ["eval", "query", "resume"])
def test_a_crafted_checkpoint_runs_no_code(capsys, tmp_path, command):
    for path in crafted_checkpoints(tmp_path):
        if command == "eval":
            argv = ["eval", "mixture", "--checkpoint", str(path)]
        elif command == "query":
            argv = ["query", "student", "I | G=C", "--checkpoint", str(path)]
        else:
            run = tmp_path / f"run_{path.stem}"
            run.mkdir()
            (run / "checkpoint.pt").write_bytes(path.read_bytes())
            argv = ["train", "mixture", "--smoke", "--out", str(run), "--resume"]
        message = one_line_error(capsys, *argv)
        assert "nothing in it was run" in message
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_missing_a_key_is_a_sentence(capsys, tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"model": "mixture", "step": 3}, path)
    assert "lacks" in one_line_error(capsys, "eval", "mixture", "--checkpoint", str(path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", "--smoke", "--steps", "30", "--out", str(out), "--no-progress"]) == 0
    return out


def test_resume_refuses_other_settings_and_hyperparameters(capsys, trained):
    before = (trained / "checkpoint.pt").read_bytes()
    assert "lr" in one_line_error(capsys, "train", "vae", "--smoke", "--out", str(trained), "--resume",
                                  "--steps", "40", "--lr", "0.5")
    assert "z_dim" in one_line_error(capsys, "train", "vae", "--smoke", "--out", str(trained), "--resume",
                                       "--steps", "40", "--set", "z_dim=3")
    assert "batch_size" in one_line_error(capsys, "train", "vae", "--smoke", "--out", str(trained),
                                          "--resume", "--steps", "40", "--batch-size", "7")
    assert (trained / "checkpoint.pt").read_bytes() == before


def test_a_checkpoint_of_other_hyperparameters_is_a_sentence(capsys, trained, tmp_path):
    state = load_checkpoint(trained / "checkpoint.pt")
    state["config"] = {**state["config"], "z_dim": 7}
    torch.save(state, tmp_path / "other.pt")
    assert "does not fit" in one_line_error(capsys, "eval", "vae", "--checkpoint", str(tmp_path / "other.pt"))


def test_a_locked_run_folder_is_refused(capsys, trained):
    before = (trained / "checkpoint.pt").read_bytes()
    with open(trained / LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        message = one_line_error(capsys, "train", "vae", "--smoke", "--out", str(trained), "--resume",
                                 "--steps", "40")
    assert "another zoo run" in message
    assert (trained / "checkpoint.pt").read_bytes() == before


def test_demo_refuses_to_overwrite_a_run(capsys, trained):
    folder = trained.parent
    before = (trained / "checkpoint.pt").read_bytes()
    assert "--overwrite" in one_line_error(capsys, "demo", "--out", str(folder), "--no-progress")
    assert (trained / "checkpoint.pt").read_bytes() == before


def test_a_diverged_run_keeps_a_finite_usable_checkpoint(capsys, tmp_path):
    out = tmp_path / "student"
    message = one_line_error(capsys, "train", "student", "--smoke", "--steps", "400", "--lr", "3",
                             "--batch-size", "500", "--out", str(out), "--checkpoint-every", "0",
                             "--no-progress")
    assert "--lr" in message
    state = load_checkpoint(out / "checkpoint.pt")
    assert f"step {state['step']})" in message
    for tensor in state["modules"]["model"].values():
        assert torch.isfinite(tensor).all()
    assert all(math.isfinite(v) for v in state["losses"])
    assert main(["query", "student", "I | G=C", "--checkpoint", str(out / "checkpoint.pt"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(math.isfinite(p) for p in answer.values())


def _train(out: Path, *extra) -> subprocess.Popen:
    command = [sys.executable, "-m", "zoo", "train", "vae", "--smoke", "--steps", "600", "--batch-size", "64",
               "--out", str(out), "--checkpoint-every", "0", "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def test_kill_9_then_resume_reproduces_the_uninterrupted_losses(tmp_path):
    """A run killed at a random moment (SIGKILL: no clean-up) and resumed gives exactly the losses
    of a run never interrupted; the batch size leaves epochs of 23 steps, so the kill lands
    mid-epoch almost surely."""
    straight = tmp_path / "straight"
    assert _train(straight).communicate(timeout=300) and (straight / "history.json").exists()
    expected = json.loads((straight / "history.json").read_text())["loss"]

    killed = tmp_path / "killed"
    process = _train(killed)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.5))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (killed / "history.json").exists(), "the run finished before it was killed; lengthen it"
    stopped_at = load_checkpoint(killed / "checkpoint.pt")["step"]
    resumed = _train(killed, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    assert json.loads((killed / "history.json").read_text())["loss"] == expected
    assert 0 < stopped_at < 600
    assert not list(killed.glob(".*.tmp"))


def test_importance_sampling_refuses_what_will_not_fit(capsys, trained):
    message = one_line_error(capsys, "eval", "vae", "--checkpoint", str(trained / "checkpoint.pt"),
                             "--k", "100000000", "--limit", "1")
    assert "GiB" in message and "--k" in message


def test_importance_chunks_follow_the_memory_budget():
    from inference.importance import CPU_CHUNK_ELEMENTS, WEIGHT_COPIES, memory_budget, plan_chunks

    cpu = torch.device("cpu")
    data_chunk, particle_chunk = plan_chunks(10_000, 784, 5000, cpu)
    assert data_chunk * particle_chunk * 784 <= CPU_CHUNK_ELEMENTS
    assert data_chunk * 5000 * 4 * WEIGHT_COPIES <= memory_budget(cpu)
    big_k = memory_budget(cpu) // (4 * WEIGHT_COPIES) // 2
    data_chunk, _ = plan_chunks(10_000, 2, big_k, cpu)
    assert data_chunk * big_k * 4 * WEIGHT_COPIES <= memory_budget(cpu)
