r"""The fixed cost per training step: a Pyro program against the same model in plain PyTorch.

Two programs, each at batch 1, 16 and 128, one thread:

* the zoo's VAE 784-400-50 (MNIST training images, binarised afresh per batch), trained by
  ``pyro_zoo.inference.train.fit_model`` on its Pyro program (TraceMeanField_ELBO, the default), on the
  same program compiled (``compile=True``: traced once per batch shape and replayed, see
  :mod:`pyro_zoo.inference.compiled`), and on its closed form (``fast=True``); peer: the same network and
  estimator in plain PyTorch with fused Adam (``benchmarks.vae_step.PlainVAE``, ``plain_block``);
* a user's program, a Bayesian linear regression written as a ``PyroModule`` (``PyroSample``
  priors on the weights of a ``PyroModule[nn.Linear]``) with an ``AutoNormal`` guide, trained by
  ``pyro_zoo.inference.train.fit`` on Trace_ELBO, eager and compiled; peer: the same model and the same
  mean-field Gaussian guide written with ``torch.distributions`` (same random numbers, so the
  same loss and gradients: checked below).

Time per step is the slope of a path's clock between a block of ``--steps`` steps and one of
``WARMUP`` steps: the one-off costs (parameter set-up, the first, validated step, tracing) are
the same in both and cancel, and are reported apart. Every path runs in each round, rounds
interleaved (plain, Pyro, compiled, fast, plain, ...); the figure is the median over rounds, and
the difference zoo - plain is given in microseconds. ``--clock cpu`` reads the process's CPU time
instead of the wall clock: with one thread it is the same on a quiet machine and much steadier
on a shared one. Targets (compiled Pyro program / plain PyTorch): <= 1.10 at batch 128 and <= 1.3
at batch 1; the other rows are information.

    python -m benchmarks.fixed_cost [--smoke] [--device cpu|cuda] [--clock wall|cpu] [--repeats R]
        [--warmup W]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from torch import nn
from torch.distributions import Normal

from benchmarks.common import Report, Row, image_root, median, parser, run_main, synchronize
from benchmarks.vae_step import PlainVAE, plain_block, same_model
from pyro_zoo.inference.train import fit, fit_model
from pyro_zoo.models import get_spec

NAME = "fixed_cost"
BATCHES = (1, 16, 128)
#: the compiled Pyro program's targets against plain PyTorch, by batch size
TARGETS = {1: 1.3, 128: 1.10}
#: steps of the short block whose clock is subtracted (one-off costs, the tracing included)
WARMUP = 10
#: steps of the long block by batch size (about one second of the plain loop each)
STEPS = {1: 400, 16: 300, 128: 100}
#: the regression: rows, features, noise sd, learning rate; rows a multiple of every batch size, so
#: that no epoch ends in a smaller batch: its signature would be traced once per run (a one-off
#: cost, as the first) inside the long block only, at batch 128 +0.58 ms per step with 2000 rows
REGRESSION = {"rows": 2048, "features": 10, "noise": 0.5, "lr": 0.01}
#: relative agreement of the regression's zoo and plain losses and gradients (float32 rounding)
SAME = 1e-5
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class Regression(PyroModule):
    """y_n ~ N(w . x_n + b, noise^2), w ~ N(0, I), b ~ N(0, 10^2): a PyroModule with PyroSample priors."""

    def __init__(self, features: int, noise: float):
        super().__init__()
        self.noise = noise
        self.linear = PyroModule[nn.Linear](features, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, features]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([1]).to_event(1))

    def forward(self, x, y):
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(mean, self.noise), obs=y)


class PlainRegression(nn.Module):
    """The regression and AutoNormal's guide in torch: q(w) = N(m_w, softplus(u_w)^2), q(b) alike."""

    def __init__(self, features: int, noise: float):
        super().__init__()
        self.noise = noise
        self.loc_w = nn.Parameter(torch.zeros(1, features))
        self.loc_b = nn.Parameter(torch.zeros(1))
        scale = math.log(math.expm1(0.1))  # AutoNormal's init_scale 0.1 through softplus
        self.raw_w = nn.Parameter(torch.full((1, features), scale))
        self.raw_b = nn.Parameter(torch.full((1,), scale))

    def loss(self, x, y, num_data: int) -> torch.Tensor:
        """-[log p(w, b) + (N / B) sum_n log p(y_n | x_n, w, b) - log q(w, b)] at one (w, b) ~ q."""
        q_w = Normal(self.loc_w, nn.functional.softplus(self.raw_w))
        q_b = Normal(self.loc_b, nn.functional.softplus(self.raw_b))
        w, b = q_w.rsample(), q_b.rsample()
        log_prior = Normal(0.0, 1.0).log_prob(w).sum() + Normal(0.0, 10.0).log_prob(b).sum()
        log_lik = Normal((x @ w.T).squeeze(-1) + b, self.noise).log_prob(y).sum() * (num_data / len(x))
        return -(log_prior + log_lik - q_w.log_prob(w).sum() - q_b.log_prob(b).sum())


def regression_data(device, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, REGRESSION["features"], generator=generator)
    w = torch.linspace(-1, 1, REGRESSION["features"])
    y = x @ w + 0.3 + REGRESSION["noise"] * torch.randn(rows, generator=generator)
    return x.to(device), y.to(device)


def plain_regression_block(plain: PlainRegression, optimizer, x, y, steps: int, batch_size: int):
    order = torch.randperm(len(x), device=x.device)
    losses = []
    for step in range(steps):
        rows = order[(step * batch_size) % len(x):][:batch_size]
        loss = plain.loss(x[rows], y[rows], len(x))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach() / len(x))
    return torch.stack(losses).tolist()


def regression_same(x, y, seed: int) -> tuple[str, bool]:
    """Loss and gradients of the Pyro program and of the plain one at AutoNormal's initial values
    and the same random numbers (the guide draws w, then b, as the plain loss does)."""
    pyro.clear_param_store()
    model = Regression(REGRESSION["features"], REGRESSION["noise"])
    guide = AutoNormal(model)
    guide(x, y)  # its parameters, from a prototype run of the model (which draws random numbers)
    pyro.set_rng_seed(seed)
    zoo_loss = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x, y)
    store = pyro.get_param_store()
    names = ["AutoNormal.locs.linear.weight", "AutoNormal.locs.linear.bias",
             "AutoNormal.scales.linear.weight", "AutoNormal.scales.linear.bias"]
    leaves = [store[n].unconstrained() for n in names]
    zoo_grads = torch.autograd.grad(zoo_loss, leaves)
    plain = PlainRegression(REGRESSION["features"], REGRESSION["noise"]).to(x.device)
    with torch.no_grad():
        for target, source in zip(plain.parameters(), leaves, strict=True):
            target.copy_(source)
    pyro.set_rng_seed(seed)
    plain_loss = plain.loss(x, y, len(x))
    plain_grads = torch.autograd.grad(plain_loss, list(plain.parameters()))
    loss_gap = abs(zoo_loss.item() - plain_loss.item()) / abs(plain_loss.item())
    grad_gap = max(((a - b).norm() / b.norm().clamp(min=1e-30)).item()
                   for a, b in zip(zoo_grads, plain_grads, strict=True))
    pyro.clear_param_store()
    return (f"loss equal to {loss_gap:.1e}, gradients to {grad_gap:.1e} (relative; target ≤ {SAME:g})",
            max(loss_gap, grad_gap) <= SAME)


def slope(run: Callable[[int], object], steps: int, warmup: int, clock: Callable[[], float], device) -> float:
    """Seconds per step of ``run(n)`` (n steps): the clock of ``steps`` steps minus that of
    ``warmup`` steps, over the difference (``warmup`` 0: the one-off costs included)."""
    times = []
    for n in (warmup, steps):
        synchronize(device)
        start = clock()
        if n:
            run(n)
        synchronize(device)
        times.append(clock() - start)
    return (times[1] - times[0]) / (steps - warmup)


def rounds(paths: dict[str, Callable[[int], object]], steps: int, warmup: int, repeats: int, clock,
           device) -> dict:
    """Per-step seconds of every path over ``repeats`` interleaved rounds (after one warm-up round)."""
    for run in paths.values():
        run(max(warmup, 1))
    found = {name: [] for name in paths}
    for _ in range(repeats):
        for name, run in paths.items():
            found[name].append(slope(run, steps, warmup, clock, device))
    return found


def vae_paths(x, device, batch: int, seed: int) -> tuple[dict, str, bool]:
    spec = get_spec("vae")
    lr, objective = spec.train["lr"], spec.objective_for(spec.config())
    pyro.set_rng_seed(seed)
    zoo_model = spec.make(data_dim=784).to(device)
    plain = PlainVAE().to(device)
    equivalence, equivalent = same_model(zoo_model, plain, torch.bernoulli(x[:batch]), len(x), seed)
    optimizer = torch.optim.Adam(plain.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))

    def zoo(**path):
        return lambda n: fit_model(zoo_model, x, steps=n, batch_size=batch, lr=lr, log_every=n,
                                   progress=False, objective=objective, **path)

    paths = {"plain": lambda n: plain_block(plain, optimizer, x, n, batch), "pyro": zoo(),
             "compiled": zoo(compile=True), "fast": zoo(fast=True)}
    return paths, equivalence, equivalent


def regression_paths(x, y, device, batch: int, seed: int) -> dict:
    plain = PlainRegression(REGRESSION["features"], REGRESSION["noise"]).to(device)
    optimizer = torch.optim.Adam(plain.parameters(), lr=REGRESSION["lr"],
                                 fused=device.type in ("cpu", "cuda"))
    pyro.set_rng_seed(seed)
    model = Regression(REGRESSION["features"], REGRESSION["noise"]).to(device)
    guide = AutoNormal(model)

    def zoo(compile: bool):
        return lambda n: fit(model, guide, (x, y), steps=n, batch_size=batch, lr=REGRESSION["lr"],
                             log_every=n, progress=False, compile=compile)

    return {"plain": lambda n: plain_regression_block(plain, optimizer, x, y, n, batch),
            "pyro": zoo(False), "compiled": zoo(True)}


LABELS = {"pyro": "Pyro program (eager)", "compiled": "Pyro program, compile=True",
          "fast": "closed form (fast=True)"}


def rows_of(program: str, batch: int, found: dict, accuracy: str, met: bool | None, unit: str) -> list[Row]:
    rows = []
    for name, times in found.items():
        if name == "plain":
            continue
        target = TARGETS.get(batch) if name == "compiled" else None
        rows.append(Row(
            benchmark=f"{program}, batch {batch}: {LABELS[name]}",
            peer="plain PyTorch (same model, fused Adam)",
            unit=unit,
            zoo_s=median(times),
            peer_s=median(found["plain"]),
            target=f"≤ {target}" if target else "(info)",
            max_ratio=target or math.inf,
            accuracy=accuracy,
            accuracy_met=met,
            note=f"zoo - plain: {(median(times) - median(found['plain'])) * 1e6:+.0f} µs per step",
            zoo_runs=times,
            peer_runs=found["plain"],
        ))
    return rows


def benchmark(args, device: torch.device) -> Report:
    clock = CLOCKS[args.clock]
    unit = "s per step" + (" (CPU time)" if args.clock == "cpu" else "")
    with image_root(args) as (root, source):
        images = get_spec("vae").load_data("train", data_dir=root, data="mnist").x.to(device)
    x, y = regression_data(device, REGRESSION["rows"])
    same_regression, regression_met = regression_same(x, y, args.seed)
    rows, notes = [], [f"VAE data: {source}, {len(images)} images; regression: {REGRESSION}"]
    for batch in args.batches:
        steps = max(args.warmup + 2, args.steps or STEPS.get(batch, 100))
        paths, same_vae, vae_met = vae_paths(images, device, batch, args.seed)
        found = rounds(paths, steps, args.warmup, args.repeats, clock, device)
        rows += rows_of("VAE 784-400-50", batch, found, same_vae, vae_met, unit)
        found = rounds(regression_paths(x, y, device, batch, args.seed), steps, args.warmup, args.repeats,
                       clock, device)
        rows += rows_of(f"AutoNormal on a PyroModule regression ({REGRESSION['features']} features)", batch,
                        found, same_regression, regression_met, unit)
        notes.append(f"batch {batch}: blocks of {steps} minus {args.warmup} steps")
    for row in rows:
        notes.append(f"{row.benchmark}: {row.note}")
    settings = {"batches": list(args.batches), "clock": args.clock, "warmup": args.warmup}
    return Report(NAME, "", rows, settings=settings, notes=notes)


def main(argv: list[str] | None = None) -> Report:
    p = parser("Fixed cost per step: the Pyro program (eager, compiled, closed form) vs plain PyTorch",
               repeats=7)
    p.add_argument("--steps", type=int, default=None, help="steps of the long block (default by batch)")
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="wall clock, or this process's CPU time (steadier on a shared machine)")
    p.add_argument("--warmup", type=int, default=WARMUP, help="steps of the short block subtracted")
    args = p.parse_args(argv)
    if args.smoke:  # numbers only: a few steps, one-off costs included
        args.steps, args.warmup = min(args.steps or 4, 4), 0
    return run_main(NAME, benchmark, args, argv)


if __name__ == "__main__":
    main()
