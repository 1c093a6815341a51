r"""``zoo eval``'s importance sampling against a plain-torch loop over the same decoder.

zoo: ``zoo eval vae --checkpoint C --num-particles 5000 --limit N`` run as a user runs it, in a fresh process
(``--threads`` torch threads), and the report's importance-sampling seconds per image: the
estimator of :mod:`pyro_zoo.inference.importance` (guide proposal, PSIS k̂, IWAE_k, per-chunk seeded
streams), with whatever one-off cost of a fresh process falls inside its clock. Peer: the loop a
PyTorch user writes over the same decoder, in this process,

    for each image x:  z ~ N(0, I) in chunks of 1,000 particles,
                       log p(x | z) = -BCE_with_logits(decoder(z), x) summed over pixels,
                       logsumexp over the K particles,

a cost peer (prior samples, so not the same estimate), timed on ``--peer-images`` test images.
Rounds alternate zoo and peer; the figure is the median over rounds of seconds per image; target
zoo / peer <= 1.0. The checkpoint is ``--checkpoint`` or a VAE 784-400-50 trained here for
``--epochs`` epochs on MNIST by ``zoo train vae --fast`` (smoke: the smoke VAE on the digits).

    python -m benchmarks.importance_eval [--smoke] [--threads T] [--num-particles K] [--limit N]
        [--checkpoint PATH]
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import (
    REPO,
    BenchmarkError,
    Clocked,
    Report,
    Row,
    image_root,
    interleaved,
    median,
    parser,
    run_main,
)
from pyro_zoo.models import get_spec
from pyro_zoo.runs import load, train

NAME = "importance_eval"
TARGET = 1.0
#: particles per decoder call of the peer loop
PEER_CHUNK = 1000


@torch.no_grad()
def plain_loop(decoder, z_dim: int, images: torch.Tensor, k: int) -> torch.Tensor:
    """log (1/K) sum_k p(x | z_k), z_k ~ N(0, I), per image: the peer's loop, shape (N,)."""
    estimates = []
    for image in images:
        parts = []
        for done in range(0, k, PEER_CHUNK):
            logits = decoder(torch.randn(min(PEER_CHUNK, k - done), z_dim, device=images.device))
            parts.append(-F.binary_cross_entropy_with_logits(logits, image.expand_as(logits),
                                                             reduction="none").sum(-1))
        estimates.append(torch.logsumexp(torch.cat(parts), 0) - math.log(k))
    return torch.stack(estimates)


def zoo_eval(checkpoint: Path, out: Path, args) -> dict:
    """The report of ``zoo eval`` (on the checkpoint's data) in a fresh process with ``args.threads``
    torch threads."""
    command = [sys.executable, "-m", "pyro_zoo", "eval", "vae", "--checkpoint", str(checkpoint),
               "--num-particles", str(args.num_particles), "--limit", str(args.limit), "--out", str(out),
               "--device", args.device,
               "--seed", str(args.seed), "--json", "--no-progress"]
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode:
        raise BenchmarkError(f"zoo eval failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def checkpoint_for(args, root: Path, folder: Path) -> tuple[Path, str]:
    if args.checkpoint:
        return Path(args.checkpoint), f"checkpoint {args.checkpoint}"
    run = folder / "run"
    metrics = train("vae", out=run, smoke=args.smoke, data_dir=None if args.smoke else root,
                    epochs=args.epochs, fast=True, progress=False, seed=args.seed)
    return run / "checkpoint.pt", (f"VAE trained {args.epochs} epoch(s) with --fast here, test loss "
                                   f"{metrics['test_loss']:.2f} {metrics['units']}")


def benchmark(args, device: torch.device) -> Report:
    with image_root(args) as (root, _), tempfile.TemporaryDirectory() as folder:
        checkpoint, described = checkpoint_for(args, root, Path(folder))
        _, model, state = load(checkpoint, device)
        if state["model"] != "vae":
            raise BenchmarkError(f"{checkpoint} holds a {state['model']!r} model; give a vae checkpoint")
        smoke = state.get("smoke", False)
        test = get_spec("vae").load_data("test", data_dir=None if smoke else root, smoke=smoke)
        images = test.x[:args.peer_images].to(device)
        reports = []

        def zoo():
            reports.append(zoo_eval(checkpoint, Path(folder) / f"eval{len(reports)}", args))
            return Clocked(reports[-1]["seconds"]["importance_sampling"] / args.limit)

        def peer():
            plain_loop(model.decoder, model.z_dim, images, args.num_particles)

        zoo_times, peer_times = interleaved(zoo, peer, device=device, repeats=args.repeats, warmup=0,
                                            units=1)
    peer_times = [t / len(images) for t in peer_times]
    row = Row(
        benchmark=f"zoo eval vae: importance sampling, K={args.num_particles}, {args.limit} images "
                  "(fresh process)",
        peer="plain-torch loop over the decoder (prior draws, chunks of 1,000)",
        unit="s per image",
        zoo_s=median(zoo_times),
        peer_s=median(peer_times),
        target=f"≤ {TARGET:g}",
        max_ratio=TARGET,
        note=f"peer timed on {len(images)} images",
        zoo_runs=zoo_times,
        peer_runs=peer_times,
    )
    walls = [round(r["wall_seconds"], 2) for r in reports]
    notes = [described, f"test images: {test.source}; zoo eval wall seconds per run (whole report): {walls}",
             f"zoo eval in a fresh process with {args.threads} torch thread(s); peer in this process alike"]
    settings = {"num_particles": args.num_particles, "limit": args.limit, "peer_images": len(images)}
    return Report(NAME, "", [row], settings=settings, notes=notes)


def main(argv: list[str] | None = None) -> Report:
    p = parser("zoo eval's importance sampling vs a plain-torch loop over the same decoder", repeats=3)
    p.add_argument("--num-particles", type=int, default=5000, help="particles per image")
    p.add_argument("--limit", type=int, default=200, help="test images zoo eval scores")
    p.add_argument("--peer-images", type=int, default=30, help="test images the plain loop scores")
    p.add_argument("--epochs", type=float, default=3, help="training epochs of the VAE (no --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="a `zoo train vae` checkpoint instead of training")
    args = p.parse_args(argv)
    if args.smoke:
        args.num_particles, args.limit = min(args.num_particles, 200), min(args.limit, 10)
        args.peer_images, args.epochs = 5, 1
    return run_main(NAME, benchmark, args, argv)


if __name__ == "__main__":
    main()
