"""Data-parallel training and sharded evaluation on two gloo processes on this CPU.

Two ranks are started once (``torchrun``, rendezvous on 127.0.0.1 at a free
port, gloo bound to the loopback interface) and run every distributed scenario; each test
compares what they wrote with one process, in this one, at the same settings: training at batch
B/2 per rank equals training at batch B over the same rows; evaluation gives the very same
per-data-point estimates; a resumed run continues exactly; a NaN on one rank stops both with the
guard's message. ``torchrun`` itself launches the scenario where one rank raises.
"""

from __future__ import annotations

import logging.handlers
import os
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_zoo.inference import distributed
from pyro_zoo.inference.importance import estimate_log_likelihood
from pyro_zoo.inference.settings import SettingError
from pyro_zoo.inference.train import TrainingDiverged, fit
from tests.toy import NormalNormal

WORLD = 2
REPO = Path(__file__).resolve().parents[1]
#: rows, global batch, epochs of the training scenarios (batch B/2 = 6 rows per rank)
N, B, EPOCHS = 36, 12, 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_env(port: int) -> dict:
    """Rendezvous and gloo traffic on 127.0.0.1 only (gloo picks its interface by name)."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


class Regression(nn.Module):
    """y ~ N(net(x) + b, sigma) with a global b ~ N(0, 10) and a point-mass guide on b: the
    loss is deterministic, so two ranks and one process can agree to float precision. ``net``
    is a module parameter (averaged by DDP), ``sigma`` and ``b_loc`` live in Pyro's param store
    (averaged by all_reduce), and b's prior sits outside the data plate (counted once)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(3, 1)

    def model(self, x, y):
        b = pyro.sample("b", dist.Normal(0.0, 10.0))
        sigma = pyro.param("sigma", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(self.net(x).squeeze(-1) + b, sigma), obs=y)

    def guide(self, x, y):
        pyro.sample("b", dist.Delta(pyro.param("b_loc", torch.tensor(0.0))))


def regression_data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 3.0 + 0.3 * torch.randn(N, generator=generator)
    return x, y


def train_regression(data=None, skew=False, **options):
    """``skew``: rank 1's global RNG is moved on before an unseeded fit (rank 0's must win)."""
    pyro.set_rng_seed(0)
    program = Regression()
    if skew and distributed.world().rank == 1:
        torch.rand(7)
    result = fit(program.model, program.guide, data or regression_data(), epochs=EPOCHS, batch_size=B,
                 lr=0.05, seed=None if skew else 0, progress=False, log_every=2, **options)
    return result, {**{k: v.detach().clone() for k, v in program.state_dict().items()},
                    **{k: v.detach().clone() for k, v in result.param_state["params"].items()}}


def train_toy(checkpoint, steps, resume=False):
    """The stochastic toy model (noise on every rank's own stream), checkpointed."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    model = NormalNormal()
    x = torch.randn(N, generator=torch.Generator().manual_seed(2)) * 2
    return fit(model.model, model.guide, x, steps=steps, batch_size=B, lr=0.05, seed=0, progress=False,
               log_every=2, checkpoint=checkpoint, resume=resume).losses


def estimate(seed=3):
    model = NormalNormal()
    x = torch.randn(50, generator=torch.Generator().manual_seed(4)) * 2
    return estimate_log_likelihood(model.model, model.guide, x, 64, data_chunk=8, seed=seed, iwae_ks=(1, 8))


def rank_main(out: Path):
    """Every library scenario on this rank (started by torchrun); what it saw goes to
    out/rank{rank}.pt. Then the command line: train, resume, eval."""
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as strict as the test process (pyproject: filterwarnings)
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
        library_scenarios(out, rank)
    command_line_scenario(out)


def library_scenarios(out: Path, rank: int):
    import pyro_zoo.inference.train

    found, writes, save = {}, [], pyro_zoo.inference.train.save_checkpoint
    pyro_zoo.inference.train.save_checkpoint = lambda path, state: (writes.append(Path(path).name),
                                                                     save(path, state))
    result, params = train_regression()
    found["regression"] = (result.losses, params)
    found["regression_skewed"] = train_regression(skew=True)[0].losses
    compile_log = logging.handlers.BufferingHandler(100)
    logging.getLogger("pyro_zoo.inference").addHandler(compile_log)
    found["regression_compiled"] = train_regression(compile=True)
    found["compile_log"] = [record.getMessage() for record in compile_log.buffer]  # a fallback would log
    found["toy_full"] = train_toy(out / "full.pt", steps=9)
    train_toy(out / "resumed.pt", steps=4)
    found["toy_resumed"] = train_toy(out / "resumed.pt", steps=9, resume=True)
    found["writes"] = sorted(set(writes))
    r = estimate()
    found["estimate"] = (r.log_px, r.log_px_se, r.ess, r.iwae, r.khat)
    program, calls = Regression(), []

    def poisoned(x, y):  # a NaN loss on rank 1 alone at step 3 (calls 1, 2: parameters, DDP's probe)
        calls.append(1)
        program.model(x, y)
        if rank == 1 and len(calls) == 5:
            pyro.factor("poison", torch.tensor(float("nan")))

    try:
        fit(poisoned, program.guide, regression_data(), steps=20, batch_size=B, progress=False, log_every=2,
            checkpoint=out / "diverged.pt")
    except TrainingDiverged as err:
        found["diverged"] = str(err)
    torch.save(found, out / f"rank{rank}.pt")


def command_line_scenario(out: Path):
    """train, resume and eval through the CLI's entry point, on this rank."""
    from pyro_zoo.cli import main

    run, common = out / "run", ["--no-progress", "--json"]
    for argv in (["train", "ppca", "--smoke", "--steps", "20", "--out", str(run)],
                 ["train", "ppca", "--smoke", "--steps", "30", "--out", str(run), "--resume"],
                 ["eval", "ppca", "--checkpoint", str(run / "checkpoint.pt"), "--num-particles", "50",
                  "--limit", "60"]):
        code = main(argv + common)
        if code:
            raise SystemExit(code)


SCENARIOS = """
    import sys
    from pathlib import Path
    from tests.test_distributed import rank_main

    rank_main(Path(sys.argv[1]))
"""


def torchrun(script: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``torchrun`` with two processes on this machine, rendezvous on 127.0.0.1 at a free port."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("torchrun")), "--nnodes", "1", "--nproc_per_node",
               str(WORLD), "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), *args]
    env = {**os.environ, **loopback_env(port), "PYTHONPATH": str(REPO)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """(folder, torchrun's result) after one launch of two ranks running :func:`rank_main`."""
    out = tmp_path_factory.mktemp("ranks")
    script = out / "scenarios.py"
    script.write_text(textwrap.dedent(SCENARIOS))
    done = torchrun(script, str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


@pytest.fixture(scope="module")
def ranks(launched):
    """What each of the two ranks found (see :func:`rank_main`)."""
    return [torch.load(launched[0] / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rank_blocks_cover_the_batch_once_and_their_mean_loss_is_the_batch_loss(world):
    replicas = [distributed.Replicas(distributed.World(rank, world)) for rank in range(world)]
    rows, losses = torch.randperm(100)[:10], torch.randn(100)
    blocks = [r.shard(rows) for r in replicas]
    assert torch.equal(torch.cat(blocks), rows)
    per_rank = [r.scale(100, len(rows)) * losses[b].sum() for r, b in zip(replicas, blocks, strict=True)]
    mean = sum(per_rank) / world
    torch.testing.assert_close(mean, 100 / len(rows) * losses[rows].sum())


def test_a_batch_too_small_for_the_ranks_is_refused_with_the_fix():
    replicas = distributed.Replicas(distributed.World(0, 4))
    replicas.check(num_data=100, batch_size=32)  # last batch of the epoch: 4 rows, one per rank
    with pytest.raises(SettingError, match="`batch_size`"):
        replicas.check(num_data=99, batch_size=32)  # last batch: 3 rows for 4 ranks


def test_two_ranks_at_half_batch_train_like_one_process_at_the_full_batch(ranks):
    result, params = train_regression()
    losses = result.losses
    assert len(losses) == EPOCHS * N // B
    for found in ranks:
        got_losses, got_params = found["regression"]
        assert got_losses == pytest.approx(losses, rel=1e-5, abs=1e-6)
        assert set(got_params) == set(params)
        for name, value in params.items():
            torch.testing.assert_close(got_params[name], value, rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0] / 2  # it learned something, so the comparison is not vacuous


def test_two_ranks_train_the_compiled_objective_like_one_uncompiled_process(ranks):
    """compile=True under torchrun: DDP and the all_reduce average the replayed graph's gradients."""
    result, params = train_regression()
    for found in ranks:
        assert found["compile_log"] == []
        got, got_params = found["regression_compiled"]
        assert got.losses == pytest.approx(result.losses, rel=1e-5, abs=1e-6)
        for name, value in params.items():
            torch.testing.assert_close(got_params[name], value, rtol=1e-5, atol=1e-6)


def test_ranks_follow_rank_zeros_permutation_even_when_their_random_streams_differ(ranks):
    alone = train_regression(skew=True)[0].losses
    assert alone != train_regression()[0].losses  # another permutation than the seeded run's
    for found in ranks:
        assert found["regression_skewed"] == pytest.approx(alone, rel=1e-5, abs=1e-6)


def test_sharded_evaluation_gives_exactly_the_one_process_estimates(ranks):
    one = estimate()
    for found in ranks:
        log_px, se, ess, iwae, khat = found["estimate"]
        assert torch.equal(log_px, one.log_px) and torch.equal(se, one.log_px_se)
        assert torch.equal(ess, one.ess)
        assert all(torch.equal(iwae[k], one.iwae[k]) for k in one.iwae)
        assert torch.equal(khat.isnan(), one.khat.isnan())
        assert torch.equal(khat[~khat.isnan()], one.khat[~one.khat.isnan()])
    assert not torch.equal(estimate(seed=4).log_px, one.log_px)  # the seed matters


def test_a_resumed_two_rank_run_continues_exactly_and_rank_zero_alone_writes(ranks):
    for found in ranks:
        assert found["toy_resumed"] == found["toy_full"]  # bit for bit: noise streams restored
    assert ranks[0]["writes"] == ["full.pt", "resumed.pt"] and ranks[1]["writes"] == []
    assert ranks[0]["toy_full"] == ranks[1]["toy_full"]  # losses are averaged over ranks


def test_a_nan_on_one_rank_stops_every_rank_with_the_guards_message(ranks):
    for found in ranks:
        assert found["diverged"].startswith("the loss became nan at step 3; lower the learning rate (`lr`)")
    assert "the last good checkpoint (step 2) is kept" in ranks[0]["diverged"]  # rank 0 writes it


RAISING = """
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro_zoo.inference import distributed
    from pyro_zoo.inference.train import fit

    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    calls = []

    def guide(x):
        calls.append(1)
        if len(calls) == 4 and distributed.world().rank == 1:
            raise RuntimeError("rank 1 gives up at step 3")

    fit(model, guide, torch.randn(48), steps=1000, batch_size=12, progress=False, log_every=1)
    print("finished")
"""


def test_a_rank_that_raises_stops_the_other_without_a_hang(tmp_path):
    script = tmp_path / "raising.py"
    script.write_text(textwrap.dedent(RAISING))
    start = time.perf_counter()
    done = torchrun(script)
    seconds = time.perf_counter() - start
    assert done.returncode != 0
    assert "rank 1 gives up at step 3" in done.stderr
    assert "finished" not in done.stdout
    assert seconds < 100



def test_zoo_train_resume_and_eval_under_torchrun(launched, tmp_path):
    import json

    from pyro_zoo.runs import evaluate

    out, done = launched[0] / "run", launched[1]
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [p.get("steps") for p in printed[:2]] == [20, 30]  # rank 0 alone prints
    assert len(printed) == 3
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 30
    alone = evaluate(out / "checkpoint.pt", num_particles=50, limit=60, out=tmp_path / "alone",
                     progress=False)
    assert printed[2]["log_px"] == alone["log_px"]  # value and SE, to the last bit
