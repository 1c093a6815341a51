"""Data-parallel throughput: VAE training and importance-sampled evaluation on 1 and W processes.

Workload: the zoo's VAE (784-400-50, Bernoulli likelihood, TraceMeanField_ELBO through its Pyro
program) on random binary 784-pixel images (the cost of a step does not depend on the pixels);
``--smoke``: PPCA (64-4, Trace_ELBO) on Gaussian noise, which starts without the VAE's compiled
kernel.

* evaluation (of the untrained model, the same on every process count):
  ``pyro_zoo.inference.importance.estimate_log_likelihood`` with K particles on ``points`` images in
  chunks of ``chunk`` images, seeded, so the W-process estimates must equal the one-process ones
  to the last bit (checked: the accuracy column); wall seconds per data point, including the
  gather of the results on every rank;
* training: ``pyro_zoo.inference.train.fit_model`` at a global batch of B rows (B/W per rank), ``steps``
  steps after a warm-up fit; the figure is the trainer's loop clock (it includes the gradient
  all-reduce every step and the loss all-reduce at log points) per data point.

Each process count runs in its own ``torchrun`` launch (``python -m torch.distributed.run``,
rendezvous on 127.0.0.1), ``--threads`` torch threads per process, median over ``--repeats``
rounds inside the launch; ``--smoke`` measures the one-process figures in this process. "zoo" is
W processes, "peer" one process: zoo/peer below 1 is a speed-up, and the note gives the parallel
efficiency, speed-up / W. Two processes on a two-core machine shared with other work is a
correctness check, not a speed claim; ``--device cuda --procs 1,2,4,8`` gives one GPU per process.

    python -m benchmarks.distributed [--smoke] [--device cpu|cuda] [--procs 1,2] [--threads 1]
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch

from benchmarks.common import REPO, BenchmarkError, Report, Row, median, parser, run_main, synchronize
from pyro_zoo.inference import distributed
from pyro_zoo.inference.importance import estimate_log_likelihood
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import get_spec

NAME = "distributed"
SIZES = {
    "full": {"model": "vae", "hparams": {"data_dim": 784, "hidden": [400], "z_dim": 50},
             "objective": "TraceMeanField_ELBO", "batch": 256, "steps": 40, "points": 256, "k": 500,
             "chunk": 16},
    "smoke": {"model": "ppca", "hparams": {"data_dim": 64, "latent_dim": 4}, "objective": "Trace_ELBO",
              "batch": 32, "steps": 6, "points": 16, "k": 20, "chunk": 4},
}


def worker(args, device: torch.device) -> dict:
    """The measurements of this rank (one process of a launch, or the only one)."""
    sizes = SIZES["smoke" if args.smoke else "full"]
    here = distributed.world(device)
    device = distributed.local_device(device)
    generator = torch.Generator().manual_seed(args.seed)
    shape = (max(sizes["batch"] * 4, sizes["points"]), sizes["hparams"]["data_dim"])
    x = torch.randn(shape, generator=generator)
    x = (x > 0.5).float() if sizes["model"] == "vae" else x
    x = x.to(device)
    pyro.set_rng_seed(args.seed)
    model = get_spec(sizes["model"]).make(**sizes["hparams"]).to(device)
    model_fn, guide_fn = model.local_pair()
    points = x[:sizes["points"]]

    def evaluate():
        return estimate_log_likelihood(model_fn, guide_fn, points, sizes["k"], iwae_ks=(), psis=False,
                                       data_chunk=sizes["chunk"], seed=args.seed)

    evaluate()
    eval_times, result = [], None
    for _ in range(args.repeats):
        synchronize(device)
        start = time.perf_counter()
        result = evaluate()
        synchronize(device)
        eval_times.append((time.perf_counter() - start) / sizes["points"])

    def train(steps: int) -> float:
        result = fit_model(model, x, objective=sizes["objective"], steps=steps, batch_size=sizes["batch"],
                           lr=1e-3, progress=False, log_every=10)
        return result.seconds

    train(2)
    train_times = [train(sizes["steps"]) / (sizes["steps"] * sizes["batch"]) for _ in range(args.repeats)]
    return {"world": here.size, "train_s": median(train_times), "eval_s": median(eval_times),
            "train_runs": train_times, "eval_runs": eval_times, "log_px": result.log_px.tolist()}


def launch(args, procs: int) -> dict:
    """Rank 0's measurements from a ``torchrun`` launch of ``procs`` processes of this module."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rank0.json"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
                   str(procs), "--master_addr", "127.0.0.1", "--master_port", str(port), "-m",
                   f"benchmarks.{NAME}", "--worker", str(out), "--device", args.device, "--threads",
                   str(args.threads), "--repeats", str(args.repeats), "--seed", str(args.seed)]
        command += ["--smoke"] if args.smoke else []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        if Path("/sys/class/net/lo").exists():  # Linux: keep gloo's traffic on the loopback interface
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            raise BenchmarkError(f"the launch of {procs} processes failed (exit {done.returncode}): "
                                 f"{done.stderr.strip().splitlines()[-1:] or 'no message'}")
        return json.loads(out.read_text())


def benchmark(args, device: torch.device) -> Report:
    procs = sorted({int(p) for p in args.procs.split(",")})
    if device.type == "cuda" and max(procs) > torch.cuda.device_count():
        raise BenchmarkError(f"--procs asks for {max(procs)} processes but torch sees "
                             f"{torch.cuda.device_count()} GPU(s); one process per GPU")
    if 1 not in procs:
        procs = [1, *procs]
    found = {}
    for count in procs:
        found[count] = worker(args, device) if count == 1 and args.smoke else launch(args, count)
    sizes = SIZES["smoke" if args.smoke else "full"]
    one = found[1]
    rows, notes = [], []
    for count in procs[1:]:
        many = found[count]
        same = many["log_px"] == one["log_px"]
        name = sizes["model"].upper()
        for what, unit, key in ((f"{name} training", "s per data point (train step)", "train_s"),
                                ("IS evaluation", f"s per data point (K = {sizes['k']})", "eval_s")):
            speedup = one[key] / many[key]
            rows.append(Row(
                benchmark=f"{what}, {count} processes", peer="1 process", unit=unit,
                zoo_s=many[key], peer_s=one[key], target="(info)", max_ratio=math.inf,
                accuracy=("per-data-point estimates identical to 1 process" if same else
                          "per-data-point estimates DIFFER from 1 process") if key == "eval_s" else "",
                accuracy_met=same if key == "eval_s" else None,
                zoo_runs=many[key.replace("_s", "_runs")], peer_runs=one[key.replace("_s", "_runs")],
            ))
            notes.append(f"{what} on {count} processes: speed-up {speedup:.2f}x, parallel efficiency "
                         f"{speedup / count:.0%}")
    notes.append(f"training: {sizes['model']} {sizes['hparams']}, {sizes['objective']}, global batch "
                 f"{sizes['batch']}, {sizes['steps']} steps; evaluation: {sizes['points']} data points, "
                 f"K = {sizes['k']}, chunks of {sizes['chunk']} images; {args.threads} thread(s) per process")
    if device.type == "cpu":
        notes.append(f"CPU: {os.cpu_count()} logical cores seen, shared with other work; with as many "
                     "processes as cores this is a correctness check of the data-parallel path, not a "
                     "speed claim")
    return Report(NAME, "", rows, settings={"procs": procs, **sizes}, notes=notes)


def main(argv: list[str] | None = None) -> Report | None:
    p = parser("Data-parallel throughput of training and IS evaluation on 1..N processes", repeats=3)
    p.add_argument("--procs", default="1,2", help="process counts, comma-separated (default 1,2)")
    p.add_argument("--worker", default=None, help=argparse_hidden())
    args = p.parse_args(argv)
    if args.worker:  # one rank of a launch made by launch()
        torch.set_num_threads(args.threads)
        if args.smoke:
            args.repeats = 1
        found = worker(args, torch.device(args.device))
        if distributed.world().main:
            Path(args.worker).write_text(json.dumps(found))
        return None
    return run_main(NAME, benchmark, args, argv)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
