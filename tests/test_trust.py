"""Files that cannot run code, runs that are never lost or replaced unasked, resumes that are exact
anywhere, checkpoints checked field by field before anything uses them."""

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

from pyro_zoo import runs
from pyro_zoo.cli import main
from pyro_zoo.folders import LOCK, MARKER, RunFolderError, check_folder, run_folder
from pyro_zoo.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_zoo.inference.settings import SettingError
from pyro_zoo.models import UnknownModelError, get_spec


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


def test_resume_refuses_other_data_batch_size_and_hyperparameters(capsys, trained):
    before = (trained / "checkpoint.pt").read_bytes()
    assert "z_dim" in one_line_error(capsys, "train", "vae", "--smoke", "--out", str(trained), "--resume",
                                       "--steps", "40", "--set", "z_dim=3")
    assert "batch_size" in one_line_error(capsys, "train", "vae", "--smoke", "--out", str(trained),
                                          "--resume", "--steps", "40", "--batch-size", "7")
    assert "data" in one_line_error(capsys, "train", "vae", "--smoke", "--out", str(trained), "--resume",
                                    "--steps", "40", "--data", "mnist")
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
                             "--batch-size", "500", "--out", str(out), "--checkpoint-every", "1e-9",
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
    command = [sys.executable, "-m", "pyro_zoo", "train", "vae", "--smoke", "--steps", "600",
               "--batch-size", "64", "--out", str(out), "--checkpoint-every", "1e-9", "--no-progress", *extra]
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
                             "--num-particles", "100000000", "--limit", "1")
    assert "GiB" in message and "--num-particles" in message


def test_importance_chunks_follow_the_memory_budget():
    from pyro_zoo.inference.importance import CPU_CHUNK_ELEMENTS, WEIGHT_COPIES, memory_budget, plan_chunks

    cpu = torch.device("cpu")
    data_chunk, particle_chunk = plan_chunks(10_000, 784, 5000, cpu)
    assert data_chunk * particle_chunk * 784 <= CPU_CHUNK_ELEMENTS
    assert data_chunk * 5000 * 4 * WEIGHT_COPIES <= memory_budget(cpu)
    big_k = memory_budget(cpu) // (4 * WEIGHT_COPIES) // 2
    data_chunk, _ = plan_chunks(10_000, 2, big_k, cpu)
    assert data_chunk * big_k * 4 * WEIGHT_COPIES <= memory_budget(cpu)


WALL = """
import pyro
import pyro.distributions as dist
import torch

from pyro_zoo.models import DATA_PLATE, DataSplit
from pyro_zoo.models.program import program_spec


def model(x):
    w = pyro.param("w", torch.tensor(0.0))
    pyro.factor("wall", torch.log(3.0 - w))  # finite while w < 3; the data pull w towards 10
    with pyro.plate(DATA_PLATE, len(x)):
        pyro.sample("x", dist.Normal(w, 1.0), obs=x)


def guide(x):
    pass


def load_data(split, data_dir=None, data=None, smoke=False):
    return DataSplit(x=torch.full((40,), 10.0))


SPEC = program_spec("wall", model, guide=guide, load_data=load_data, train={"steps": 100, "lr": 0.08})
"""


def test_the_divergence_advice_is_a_resume_that_works(capsys, tmp_path):
    """A deterministic program whose loss is NaN once w >= 3: Adam at lr 0.08 (steps of about 0.08)
    crosses the wall near step 40, after the checkpoint at step 25 (w = 1.97); at the advised lower
    rate the kept checkpoint trains to the end, at the old rate it diverges again."""
    program, run = tmp_path / "wall.py", tmp_path / "run"
    program.write_text(WALL)
    train = ["train", str(program), "--out", str(run), "--no-progress"]
    message = one_line_error(capsys, *train, "--checkpoint-every", "1e-9")
    assert "the last good checkpoint (step 25)" in message
    assert all(flag in message for flag in ("--resume", "--lr", "--clip-norm")), message
    kept = (run / "checkpoint.pt").read_bytes()
    assert "step 40" in one_line_error(capsys, *train, "--resume")
    assert (run / "checkpoint.pt").read_bytes() == kept
    assert main([*train, "--resume", "--lr", "0.001"]) == 0
    assert len(json.loads((run / "history.json").read_text())["loss"]) == 100


# ------------------------------------------------------------- a checkpoint never chooses code

HELPERS = 'from pathlib import Path\nPath(__file__).with_name("imported").write_text("ran")\n'


def file_naming_checkpoint(folder: Path, model: str) -> Path:
    """Beside a helpers.py that leaves a file when imported, a checkpoint that loads cleanly with
    ``weights_only=True`` and names ``model`` (and no ``model_file``)."""
    (folder / "helpers.py").write_text(HELPERS)
    state = {"model": model, "config": {}, "modules": {}, "params": {}, "optimizer_state": {}, "step": 0,
             "losses": [], "rng": {"torch": torch.get_rng_state()}}
    save_checkpoint(folder / "checkpoint.pt", state)
    return folder / "checkpoint.pt"


@pytest.mark.parametrize("how", ["eval", "query", "runs.load"])
@pytest.mark.parametrize("named", ["helpers.py", "its absolute path"])
def test_a_checkpoint_naming_a_file_imports_nothing(capsys, tmp_path, monkeypatch, how, named):
    monkeypatch.chdir(tmp_path)
    model = "helpers.py" if named == "helpers.py" else str(tmp_path / "helpers.py")
    path = file_naming_checkpoint(tmp_path, model)
    before = set(tmp_path.rglob("*"))
    if how == "runs.load":
        with pytest.raises(CheckpointError, match="helpers.py"):
            runs.load(path)
    else:
        argv = (["eval", "ppca", "--checkpoint", str(path), "--no-progress"] if how == "eval" else
                ["query", "student", "I | G=C", "--checkpoint", str(path)])
        assert "helpers.py" in one_line_error(capsys, *argv)
    assert not (tmp_path / "imported").exists()
    assert set(tmp_path.rglob("*")) == before


def test_the_crafted_file_does_run_when_a_user_names_it(tmp_path):
    """The control for the test above: importing helpers.py leaves its file."""
    file_naming_checkpoint(tmp_path, "helpers.py")
    with pytest.raises(UnknownModelError, match="defines no SPEC"):
        get_spec(str(tmp_path / "helpers.py"))
    assert (tmp_path / "imported").read_text() == "ran"


# ------------------------------------------------------------- every checkpoint field checked

def _first_tensor(tensors: dict) -> torch.Tensor:
    return next(iter(tensors.values()))


def _first_moment(state: dict) -> torch.Tensor:
    return _first_tensor(state["optimizer_state"]["state"])["exp_avg"]


DAMAGE = {  # name: (how, a fragment of the refusal, whether zoo eval refuses it too (settings: resume only))
    "NaN weight": (lambda s: _first_tensor(s["modules"]["model"]).fill_(math.nan),
                   "NaN or infinite values in 'modules'", True),
    "NaN in Adam's moments": (lambda s: _first_moment(s).fill_(math.nan),
                              "NaN or infinite values in 'optimizer_state'", True),
    "a list for modules": (lambda s: s.update(modules=[s["modules"]["model"]]), "'modules' is not", True),
    "a list for a module's state": (lambda s: s["modules"].update(model=list(s["modules"]["model"].values())),
                                    "'modules' is not", True),
    "a list for config": (lambda s: s.update(config=list(s["config"].items())), "'config' is not", True),
    "a list for settings": (lambda s: s.update(settings=[]), "'settings' is not", True),
    "float RNG state": (lambda s: s["rng"].update(torch=s["rng"]["torch"].float()), "'rng' is not", True),
    "short RNG state": (lambda s: s["rng"].update(torch=s["rng"]["torch"][:100]), "'rng' is not", True),
    "no RNG state": (lambda s: s.update(rng={}), "'rng' is not", True),
    "saved lr -1": (lambda s: s.update(lr=-1.0), "'lr' is not", True),
    "optimizer lr -1": (lambda s: s["optimizer_state"]["param_groups"][0].update(lr=-1.0),
                        "'optimizer_state' is not", True),
    "settings lr -1": (lambda s: s["settings"].update(lr=-1.0), "--lr must be", False),
    "settings steps 10**12": (lambda s: s["settings"].update(steps=10**12), "--steps must be", False),
    "step -5": (lambda s: s.update(step=-5), "'step' is not", True),
    "step 10**12": (lambda s: s.update(step=10**12), "'step' is not", True),
    "step beyond its losses": (lambda s: s.update(step=s["step"] + 1), "losses", True),
    "order not a permutation": (lambda s: s.update(order=torch.zeros(10, dtype=torch.long)), "'order' is not",
                                True),
    "batch size 0": (lambda s: s.update(batch_size=0), "'batch_size' is not", True),
    "12 layers of 10000 units": (lambda s: [s[key].update(hidden=(10_000,) * 12) for key in
                                            ("config", "explicit_hparams")], "over the 100,000,000", True),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_before_anything_runs(capsys, trained, tmp_path, damage):
    change, fragment, eval_refuses = DAMAGE[damage]
    state = load_checkpoint(trained / "checkpoint.pt")
    change(state)
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.pt", state)
    before = {path: path.read_bytes() for path in run.iterdir()}
    assert fragment in one_line_error(capsys, "train", "vae", "--smoke", "--out", str(run), "--resume",
                                      "--steps", "40", "--no-progress")
    if eval_refuses:
        assert fragment in one_line_error(capsys, "eval", "vae", "--checkpoint", str(run / "checkpoint.pt"),
                                          "--num-particles", "5", "--limit", "5", "--no-progress")
    assert {path: path.read_bytes() for path in run.iterdir()} == before


# ------------------------------------------------------------- nothing replaced unasked

def _contents(folder: Path) -> dict:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file() and path.name != LOCK}


def test_fit_refuses_to_replace_another_runs_checkpoint(tmp_path):
    from pyro_zoo.inference.train import fit_model
    from tests.toy import NormalNormal

    path, x = tmp_path / "run.pt", torch.randn(40)
    fit_model(NormalNormal(), x, steps=30, lr=0.05, progress=False, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="overwrite=True"):
        fit_model(NormalNormal(), x, steps=3, progress=False, checkpoint=path)
    with pytest.raises(SettingError, match="pass only one"):
        fit_model(NormalNormal(), x, steps=3, progress=False, checkpoint=path, resume=True, overwrite=True)
    assert path.read_bytes() == before
    fit_model(NormalNormal(), x, steps=3, progress=False, checkpoint=path, overwrite=True)
    assert load_checkpoint(path)["step"] == 3


def test_eval_refuses_a_training_runs_folder(capsys, trained):
    before = _contents(trained)
    assert "holds a training run" in one_line_error(
        capsys, "eval", "vae", "--checkpoint", str(trained / "checkpoint.pt"), "--out", str(trained),
        "--num-particles", "5", "--limit", "5", "--no-progress", "--overwrite")
    assert _contents(trained) == before


def test_a_report_is_replaced_only_with_overwrite_and_never_by_another_kind(capsys, trained, tmp_path):
    out = tmp_path / "report"
    evaluate = ["eval", "vae", "--checkpoint", str(trained / "checkpoint.pt"), "--out", str(out),
                "--limit", "5", "--no-progress"]
    assert main([*evaluate, "--num-particles", "5"]) == 0
    before = _contents(out)
    assert "--overwrite" in one_line_error(capsys, *evaluate, "--num-particles", "7")
    for argv in (["demo", "--out", str(out), "--no-progress"], ["demo", "--out", str(out), "--overwrite"],
                 ["train", "vae", "--smoke", "--out", str(out), "--overwrite", "--no-progress"]):
        assert "holds an evaluation report" in one_line_error(capsys, *argv)
    assert _contents(out) == before
    assert main([*evaluate, "--num-particles", "7", "--overwrite"]) == 0
    assert json.loads((out / "report.json").read_text())["num_particles"] == 7


def test_overwrite_removes_the_old_runs_files_and_nothing_else(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "ppca", "--smoke", "--steps", "5", "--out", str(run), "--no-progress"]) == 0
    assert main(["eval", "ppca", "--checkpoint", str(run / "checkpoint.pt"), "--num-particles", "5",
                 "--limit", "5", "--no-progress"]) == 0
    old = {path.name for path in run.iterdir()}
    assert {"ppca_samples.png", "eval"} <= old
    (run / "notes.txt").write_text("mine")
    assert main(["train", "vae", "--smoke", "--steps", "5", "--out", str(run), "--overwrite",
                 "--no-progress"]) == 0
    names = {path.name for path in run.iterdir()}
    assert not [name for name in names if name.startswith("ppca") or name == "eval"], names
    assert (run / "notes.txt").read_text() == "mine"
    assert json.loads((run / "metrics.json").read_text())["model"] == "vae"
    marker = json.loads((run / MARKER).read_text())
    assert marker["kind"] == "train" and "notes.txt" in marker["before"]
    assert set(marker["files"]) == names - {"notes.txt", MARKER, LOCK}


def test_a_marker_cannot_send_overwrite_outside_its_folder(capsys, tmp_path):
    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    run.mkdir()
    victim.write_text("keep")
    (run / MARKER).write_text(json.dumps({"kind": "train", "model": "vae", "before": [],
                                          "files": ["../victim.txt"]}))
    assert "damaged" in one_line_error(capsys, "train", "vae", "--smoke", "--out", str(run), "--overwrite",
                                       "--no-progress")
    assert victim.read_text() == "keep"


# ------------------------------------------------------------- what a resume may change

def test_resume_may_change_the_learning_rate_clipping_and_the_fast_path(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "vae", "--smoke", "--steps", "20", "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "vae", "--smoke", "--steps", "30", "--out", str(run), "--resume", "--lr", "0.5",
                 "--clip-norm", "2", "--fast", "--no-progress"]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("zoo:")]
    assert len(said) == 1, said
    assert all(flag in said[0] for flag in ("--lr = 0.5", "--clip-norm = 2.0", "--fast = True")), said
    state = load_checkpoint(run / "checkpoint.pt")
    assert (state["lr"], state["clip_norm"], state["fast"], state["settings"]["lr"]) == (0.5, 2.0, True, 0.5)
    assert state["optimizer_state"]["param_groups"][0]["lr"] == 0.5
    assert state["step"] == 30
    assert "closed form" in json.loads((run / "metrics.json").read_text())["objective"]


def test_overwriting_a_demo_removes_its_report_and_nested_runs_only(tmp_path):
    """The folder rules behind `zoo demo --overwrite`, without training: a demo folder holding two
    model runs (one with its eval/ folder), the demo's report, and a file of the user's."""
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with run_folder(out, "demo"):
        for name in ("a", "b"):
            with run_folder(out / name, "train", name):
                (out / name / "checkpoint.pt").write_text(name)
        with run_folder(out / "a" / "eval", "eval", "a"):
            (out / "a" / "eval" / "report.json").write_text("{}")
        (out / "report.json").write_text("{}")
    with pytest.raises(RunFolderError, match="already holds a demo report"):
        check_folder(out, "demo")
    with pytest.raises(RunFolderError, match="holds a demo report of the zoo, not an evaluation report"):
        check_folder(out, "eval", overwrite=True)
    with run_folder(out, "demo", overwrite=True):
        assert {path.name for path in out.iterdir()} == {"notes.txt", MARKER, LOCK}


def test_a_run_that_fails_before_writing_leaves_the_folder_as_it_was(tmp_path):
    made, kept = tmp_path / "new" / "run", tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    for folder in (made, kept):
        with pytest.raises(ValueError), run_folder(folder, "train", "vae"):
            raise ValueError("bad data")
    assert not (tmp_path / "new").exists()
    assert {path.name for path in kept.iterdir()} == {"notes.txt", LOCK}


def test_overwriting_a_killed_run_removes_what_it_wrote_beyond_the_files_before_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt), run_folder(run, "train", "vae"):
        (run / "checkpoint.pt").write_text("half a run")
        raise KeyboardInterrupt  # the marker keeps files = None, as after SIGKILL
    assert json.loads((run / MARKER).read_text())["files"] is None
    with pytest.raises(RunFolderError, match="checkpoint.pt"):
        check_folder(run, "train")
    with run_folder(run, "train", "ppca", overwrite=True):
        assert {path.name for path in run.iterdir()} == {"notes.txt", MARKER, LOCK}
