"""VAE train step (784-400-50, batch 128): the zoo's trainer vs the same model in plain PyTorch.

Zoo: ``pyro_zoo.inference.train.fit_model(vae, x, steps=S, batch_size=128)`` on the MNIST training images
(grey levels; the zoo's VAE binarises each minibatch), seconds per step from the trainer's own
clock (its loop only: the one-off input check and parameter set-up are left out), on two paths:
the default, Pyro's TraceMeanField_ELBO on the model/guide program (target <= 1.15x), and the
opt-in closed form ``fast=True`` (``VAE.elbo_loss``: log p(x|z) at one z = mu + sigma * eps,
minus the KL in closed form, scaled by N / batch; tested equal to Pyro's; target <= 1.05x). Peer: the
same network written here with plain ``nn.Linear`` layers, the textbook PyTorch VAE loss (the
same estimator: binary cross-entropy at one reparametrised z plus the Gaussian KL formula) and
``torch.optim.Adam`` configured as the zoo's trainer configures it (the fused kernel), in the
loop a PyTorch user
writes: a permutation per epoch, index slices, ``torch.bernoulli``, one host read of the losses
per block. Blocks of S steps, A B A B (CPU here; GPU with ``--device cuda``).

Check of "the same model": with the zoo's parameters copied into the plain network and the
same random numbers, both losses and all gradients agree to float32 rounding.

    python -m benchmarks.vae_step [--smoke] [--device cpu|cuda] [--steps S] [--repeats R]
"""

from __future__ import annotations

import math

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import Clocked, Report, Row, image_root, interleaved, median, parser, run_main
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import get_spec

NAME = "vae_step"
BATCH = 128
MIN_SCALE = 1e-4
TARGET = 1.05
#: the default path, Pyro's TraceMeanField_ELBO with its tracing, against plain PyTorch
TARGET_PYRO = 1.15
#: relative agreement of loss and gradients that counts as "the same model" (float32 rounding)
SAME = 1e-5


class PlainVAE(nn.Module):
    """The zoo's 784-400-50 VAE in plain PyTorch: softplus MLPs, Bernoulli logits, Gaussian q."""

    def __init__(self, data_dim: int = 784, hidden: int = 400, z_dim: int = 50):
        super().__init__()
        self.encoder = nn.Linear(data_dim, hidden)
        self.loc_head = nn.Linear(hidden, z_dim)
        self.scale_head = nn.Linear(hidden, z_dim)
        self.decoder_hidden = nn.Linear(z_dim, hidden)
        self.decoder_out = nn.Linear(hidden, data_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder_out(F.softplus(self.decoder_hidden(z)))

    def loss(self, x: torch.Tensor, num_data: int) -> torch.Tensor:
        """(N / B) sum_n [-log p(x_n | z_n) + KL(q(z | x_n) || N(0, I))], one z_n per image."""
        h = F.softplus(self.encoder(x))
        loc = self.loc_head(h)
        scale = F.softplus(self.scale_head(h)) + MIN_SCALE
        z = loc + scale * torch.randn_like(loc)
        bce = F.binary_cross_entropy_with_logits(self.decode(z), x, reduction="sum")
        kl = 0.5 * (scale.square() + loc.square() - 1).sum() - scale.log().sum()
        return (num_data / x.shape[0]) * (bce + kl)


def copy_parameters(zoo: nn.Module, plain: PlainVAE) -> bool:
    """Copy the zoo VAE's parameters into ``plain`` in order; False if the layouts differ."""
    ours, theirs = list(zoo.parameters()), list(plain.parameters())
    if [p.shape for p in ours] != [p.shape for p in theirs]:
        return False
    with torch.no_grad():
        for source, target in zip(ours, theirs, strict=True):
            target.copy_(source)
    return True


def same_model(zoo, plain: PlainVAE, batch: torch.Tensor, num_data: int,
               seed: int) -> tuple[str, bool | None]:
    """Relative differences of loss and gradients at equal parameters and random numbers, and
    whether both are within float32 rounding (1e-5)."""
    if not copy_parameters(zoo, plain):
        return "parameter layouts differ: equivalence not checked", None
    pyro.set_rng_seed(seed)
    zoo_loss = zoo.elbo_loss(batch, num_data=num_data)
    zoo_grads = torch.autograd.grad(zoo_loss, list(zoo.parameters()))
    pyro.set_rng_seed(seed)
    plain_loss = plain.loss(batch, num_data)
    plain_grads = torch.autograd.grad(plain_loss, list(plain.parameters()))
    loss_gap = abs(zoo_loss.item() - plain_loss.item()) / abs(plain_loss.item())
    grad_gap = max(((a - b).norm() / b.norm().clamp(min=1e-30)).item()
                   for a, b in zip(zoo_grads, plain_grads, strict=True))
    text = f"loss equal to {loss_gap:.1e}, gradients to {grad_gap:.1e} (relative; target ≤ {SAME:g})"
    return text, max(loss_gap, grad_gap) <= SAME


def plain_block(model: PlainVAE, optimizer, x: torch.Tensor, steps: int, batch_size: int) -> list[float]:
    """``steps`` Adam steps of the plain VAE on fresh-permutation minibatches of ``x``."""
    order = torch.randperm(len(x), device=x.device)
    losses = []
    for step in range(steps):
        batch = torch.bernoulli(x[order[step * batch_size:(step + 1) * batch_size]])
        loss = model.loss(batch, len(x))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach() / len(x))
    return torch.stack(losses).tolist()


def load_train(args) -> tuple[torch.Tensor, str]:
    with image_root(args) as (root, source):
        x = get_spec("vae").load_data("train", data_dir=root, data="mnist").x
    return x, source


def benchmark(args, device: torch.device) -> Report:
    x, source = load_train(args)
    x = x.to(device)
    steps = min(args.steps, len(x) // BATCH)
    spec = get_spec("vae")
    lr = spec.train["lr"]
    pyro.set_rng_seed(args.seed)
    zoo_model = spec.make(data_dim=784).to(device)
    plain = PlainVAE().to(device)
    equivalence, equivalent = same_model(zoo_model, plain, torch.bernoulli(x[:BATCH]), len(x), args.seed)
    # the zoo's trainer uses Adam's fused kernel on CPU and CUDA: the plain loop gets the same
    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))

    objective = spec.objective_for(zoo_model.config)

    def zoo(fast: bool):
        def block():
            result = fit_model(zoo_model, x, steps=steps, batch_size=BATCH, lr=lr, log_every=steps,
                               progress=False, objective=objective, fast=fast)
            return Clocked(result.seconds)
        return block

    def peer():
        return plain_block(plain, plain_optimizer, x, steps, BATCH)

    notes = [f"data: {source}, {len(x)} images; lr {lr}; Adam fused=True on both "
             "(as pyro_zoo.inference.train)"]
    rows = []
    for fast, path, target in ((False, f"Pyro program ({objective['name']}, the default)", TARGET_PYRO),
                               (True, "closed-form loss (fast=True)", TARGET)):
        zoo_times, peer_times = interleaved(zoo(fast), peer, device=device, repeats=args.repeats, warmup=1,
                                            units=steps)
        rows.append(Row(
            benchmark=f"VAE train step 784-400-50, batch {BATCH} ({device.type}): {path}",
            peer="plain PyTorch (same model, Adam)",
            unit="s per step",
            zoo_s=median(zoo_times),
            peer_s=median(peer_times),
            target=f"≤ {target}",
            max_ratio=target,
            accuracy=equivalence,
            accuracy_met=equivalent,
            note=f"blocks of {steps} steps; zoo time from fit's own clock (loop only)",
            zoo_runs=zoo_times,
            peer_runs=peer_times,
        ))
        notes.append(f"{path}: {_spread(zoo_times, peer_times)}")
    return Report(NAME, "", rows, settings={"steps_per_block": steps, "batch_size": BATCH}, notes=notes)


def _spread(zoo_times: list[float], peer_times: list[float]) -> str:
    ratios = sorted(a / b for a, b in zip(zoo_times, peer_times, strict=True))
    quartile = max(0, math.ceil(len(ratios) / 4) - 1)
    return (f"per-round zoo/peer ratios: min {ratios[0]:.3f}, lower quartile {ratios[quartile]:.3f}, "
            f"upper quartile {ratios[-1 - quartile]:.3f}, max {ratios[-1]:.3f} ({len(ratios)} rounds)")


def main(argv: list[str] | None = None) -> Report:
    p = parser("VAE train step: zoo (Pyro program, and closed form) vs plain PyTorch", repeats=15)
    p.add_argument("--steps", type=int, default=50, help="steps per timed block")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats, args.steps = min(args.repeats, 3), min(args.steps, 5)
    return run_main(NAME, benchmark, args, argv)


if __name__ == "__main__":
    main()
