"""Training with checkpoints vs without: what the zoo's crash safety costs per step.

Zoo: ``fit_model(vae, x, checkpoint=path)`` with the default cadence (a checkpoint every 60 s,
one at the end, and at every log point a copy of the state in memory, so that a divergence can
still write the last finite one). Peer: the same call without a checkpoint. The VAE 784-400-50
at batch 128 on MNIST (the digits stand-in in smoke mode), the default Pyro objective, blocks of
S steps, A B A B; each block ends with one checkpoint write, as a run does. Target: at most 2 %
slower. A second row writes a checkpoint at every log point (``checkpoint_seconds=0``), the
cadence of the crash tests, for scale (no target).

    python -m benchmarks.checkpointing [--smoke] [--device cpu|cuda] [--steps S] [--repeats R]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyro

from benchmarks.common import Clocked, Report, Row, image_root, interleaved, median, parser, run_main
from pyro_zoo.inference.train import CHECKPOINT_SECONDS, fit_model
from pyro_zoo.models import get_spec

NAME = "checkpointing"
BATCH = 128
TARGET = 1.02


def benchmark(args, device) -> Report:
    with image_root(args) as (root, source):
        x = get_spec("vae").load_data("train", data_dir=root, data="mnist").x.to(device)
    spec = get_spec("vae")
    pyro.set_rng_seed(args.seed)
    model = spec.make(data_dim=x.shape[1]).to(device)
    objective = spec.objective_for(model.config)
    steps = min(args.steps, 50 * (len(x) // BATCH))
    folder = Path(tempfile.mkdtemp(prefix="zoo-bench-"))

    def block(checkpoint_seconds: float | None):
        def run():
            result = fit_model(model, x, steps=steps, batch_size=BATCH, lr=spec.train["lr"], progress=False,
                               objective=objective, log_every=100,
                               checkpoint=None if checkpoint_seconds is None else folder / "c.pt",
                               overwrite=checkpoint_seconds is not None,
                               checkpoint_seconds=checkpoint_seconds or 0.0)
            return Clocked(result.seconds)
        return run

    rows = []
    for seconds, target, label in ((CHECKPOINT_SECONDS, TARGET, "default cadence (60 s, and at the end)"),
                                   (0.0, None, "a checkpoint at every log point (100 steps)")):
        zoo_times, peer_times = interleaved(block(seconds), block(None), device=device, repeats=args.repeats,
                                            warmup=1, units=steps)
        rows.append(Row(
            benchmark=f"VAE train step with checkpoints, {label} ({device.type})",
            peer="the same training without checkpoints",
            unit="s per step",
            zoo_s=median(zoo_times),
            peer_s=median(peer_times),
            target=f"≤ {target}" if target else "(for scale)",
            max_ratio=target or float("inf"),
            note=f"blocks of {steps} steps, batch {BATCH}",
            zoo_runs=zoo_times,
            peer_runs=peer_times,
        ))
    return Report(NAME, "", rows, settings={"steps_per_block": steps, "batch_size": BATCH},
                  notes=[f"data: {source}, {len(x)} images; objective {objective['name']}"])


def main(argv: list[str] | None = None) -> Report:
    p = parser("VAE training with and without checkpoints", repeats=7)
    p.add_argument("--steps", type=int, default=500, help="steps per timed block")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats, args.steps = min(args.repeats, 2), min(args.steps, 20)
    return run_main(NAME, benchmark, args, argv)


if __name__ == "__main__":
    main()
