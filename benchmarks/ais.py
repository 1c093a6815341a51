"""Cost of an AIS transition against one plain-torch gradient of the same model's log joint.

Model: the zoo's VAE, 784-400-50 (Bernoulli likelihood), at its initial weights (the cost of a
gradient does not depend on them), on binarised MNIST test images (in smoke mode without MNIST:
scikit-learn's digits blown up to 28x28, see ``benchmarks.common.image_root``).

zoo: ``pyro_zoo.inference.ais.ais(model, guide, x, num_chains=C, num_steps=T, num_leapfrog=1)`` -- one
leapfrog step per HMC transition, so a transition is one gradient evaluation of log f_beta (through
Pyro's traces of model and guide, torch autograd) plus the momentum draw and the Metropolis test;
seconds per (transition x chain x data point), the run's wall time divided by T (T - 1
transitions and the initial evaluation). Two rows: the default ``adaptation="pilot"`` (its pilot
of 4 chains, 1/4 of the 16, included in the time) and ``adaptation="none"`` (the transitions
alone, at a fixed step size). peer: plain torch, no Pyro,

    log p(x, z) = sum_k log N(z_k; 0, 1) + sum_d [x_d l_d - softplus(l_d)],  l = decoder(z),

and its gradient in z by ``torch.autograd.grad``, on the same (C, N, 50) batch of z; seconds per
(gradient x chain x data point). Target: zoo / peer <= 2 on a CPU. Interleaved A B A B after a
warm-up, median of ``--repeats`` rounds (``benchmarks.common``).

    python -m benchmarks.ais [--smoke] [--device cpu|cuda] [--threads N] [--points N] [--chains C]
"""

from __future__ import annotations

import pyro
import torch

from benchmarks.common import Report, Row, image_root, interleaved, median, parser, run_main
from pyro_zoo.inference.ais import ais
from pyro_zoo.models import get_spec
from pyro_zoo.models.nn import bernoulli_log_prob

NAME = "ais"
SIZES = {"full": {"points": 100, "chains": 16, "steps": 20}, "smoke": {"points": 10, "chains": 4, "steps": 4}}
TARGET = 2.0


def benchmark(args, device: torch.device) -> Report:
    sizes = dict(SIZES["smoke" if args.smoke else "full"])
    sizes.update({k: v for k, v in (("points", args.points), ("chains", args.chains)) if v})
    spec = get_spec("vae")
    with image_root(args) as (root, source):
        x = spec.load_data("test", data_dir=root, data="mnist").x[: sizes["points"]].to(device)
    pyro.set_rng_seed(args.seed)
    model = spec.make(data_dim=784).to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    chains, steps, n = sizes["chains"], sizes["steps"], x.shape[0]
    z = torch.randn(chains, n, model.z_dim, device=device)

    def peer():
        point = z.detach().requires_grad_(True)
        log_joint = torch.distributions.Normal(0.0, 1.0).log_prob(point).sum(-1) + bernoulli_log_prob(
            model.decoder(point), x)
        torch.autograd.grad(log_joint.sum(), point)

    rows = []
    for adaptation in ("pilot", "none"):
        def zoo(adaptation=adaptation):
            ais(model.model, model.guide, x, num_chains=chains, num_steps=steps, num_leapfrog=1,
                adaptation=adaptation)

        zoo_runs, peer_runs = interleaved(zoo, peer, device=device, repeats=args.repeats, warmup=1)
        zoo_times = [t / (steps * chains * n) for t in zoo_runs]
        peer_times = [t / (chains * n) for t in peer_runs]
        rows.append(Row(
            benchmark=f"AIS transition ({adaptation}), VAE 784-400-50, {chains} chains x {n} images",
            peer="plain torch ∇z log p(x, z)",
            unit="s per chain·data point (transition vs gradient)",
            zoo_s=median(zoo_times),
            peer_s=median(peer_times),
            target=f"≤ {TARGET:g}",
            max_ratio=TARGET,
            zoo_runs=zoo_times,
            peer_runs=peer_times,
        ))
    notes = [f"images: {source}; VAE at initial weights; {steps} AIS steps, 1 leapfrog step per transition",
             "zoo includes the guide's log q and its gradient (the proposal term of the geometric path) and "
             "the Metropolis test; 'pilot' also its pilot run (4 chains); peer is the bare model gradient"]
    return Report(NAME, "", rows, settings=sizes, notes=notes)


def main(argv: list[str] | None = None) -> Report:
    p = parser("AIS transition cost vs one plain-torch gradient of the log joint", repeats=5)
    p.add_argument("--points", type=int, default=None, help="test images (default 100, smoke 10)")
    p.add_argument("--chains", type=int, default=None, help="AIS chains per image (default 16, smoke 4)")
    return run_main(NAME, benchmark, p.parse_args(argv), argv)


if __name__ == "__main__":
    main()
