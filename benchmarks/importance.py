"""Importance-sampled log p(x) of a trained VAE: the zoo's vectorised estimator vs Pyro's Importance.

Model: the zoo's VAE (784-400-50, Bernoulli likelihood) trained by ``pyro_zoo.inference.train.fit`` on
MNIST for ``--epochs`` epochs (or loaded from ``--checkpoint``, a ``zoo train vae`` checkpoint).
For each k in {100, 1000, 5000} and each of a handful of binarised test images x,

    log p̂(x) = logsumexp_k(log p(x, z_k) - log q(z_k | x)) - log k,   z_k ~ q(z | x),

zoo: ``pyro_zoo.inference.importance.estimate_log_likelihood(model, guide, x, num_particles=k)`` (all
particles and images in vectorised passes; PSIS and IWAE_k off, as the peer computes neither);
peer: ``pyro.infer.Importance(model, guide, num_samples=k).run(x_i).get_log_normalizer()``, one
image at a time (it draws particles one by one), given ``torch.no_grad()`` and validation off
like the zoo. Seconds per data point, A B A B; targets: zoo >= 100x faster at k = 5000 and the
same estimate within its standard error (|zoo - peer| <= 3 sqrt(SE_zoo^2 + SE_peer^2) for every
image and k, both SEs the delta-method ones of ``pyro_zoo.inference.importance``).

    python -m benchmarks.importance [--smoke] [--device cpu|cuda] [--points N] [--checkpoint PATH]
"""

from __future__ import annotations

import math
import time

import pyro
import torch
from pyro.infer import Importance

from benchmarks.common import BenchmarkError, Report, Row, image_root, interleaved, median, parser, run_main
from pyro_zoo.inference.importance import estimate_log_likelihood, weight_statistics
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import get_spec

NAME = "importance"
KS = {"full": (100, 1000, 5000), "smoke": (10, 50)}
POINTS = {"full": 5, "smoke": 2}
SPEEDUP_TARGET = 100.0
AMORTISED_POINTS = 100
Z_LIMIT = 3.0


def trained_vae(args, device: torch.device):
    """(model, binarised test images (N, 784), description) for the benchmark."""
    spec = get_spec("vae")
    with image_root(args) as (root, source):
        test = spec.load_data("test", data_dir=root, data="mnist").x
        if args.checkpoint:
            from pyro_zoo.runs import load

            _, model, state = load(args.checkpoint, device)
            if state["model"] != "vae":
                raise BenchmarkError(
                    f"{args.checkpoint} holds a {state['model']!r} model; give a vae checkpoint")
            return model, test.to(device), f"checkpoint {args.checkpoint}; test images: {source}"
        train = spec.load_data("train", data_dir=root, data="mnist").x
    if args.smoke:
        train = train[:512]
    pyro.set_rng_seed(args.seed)
    model = spec.make(data_dim=784).to(device)
    settings = spec.train_settings(epochs=args.epochs if not args.smoke else 1)
    settings.pop("steps", None)
    start = time.perf_counter()
    result = fit_model(model, train.to(device), fast=True, progress=False, **settings)
    described = (f"zoo VAE 784-400-50 trained {settings['epochs']} epoch(s) on {len(train)} images "
                 f"({source}), {time.perf_counter() - start:.0f} s, final -ELBO {result.final_loss:.1f}")
    return model, test.to(device), described


def peer_estimate(model, guide, x: torch.Tensor, k: int) -> tuple[float, float]:
    """Pyro's Importance on one image ``x`` (1, D): (log normaliser, delta-method SE)."""
    with torch.no_grad(), pyro.validation_enabled(False):
        posterior = Importance(model, guide, num_samples=k).run(x)
        estimate = posterior.get_log_normalizer()
    log_w = torch.stack([torch.as_tensor(w) for w in posterior.log_weights]).reshape(k, 1)
    return float(estimate), float(weight_statistics(log_w, ())["log_px_se"][0])


def benchmark(args, device: torch.device) -> Report:
    mode = "smoke" if args.smoke else "full"
    model, test, described = trained_vae(args, device)
    model_fn, guide_fn = model.local_pair()
    points = test[: args.points or POINTS[mode]]
    n = len(points)
    notes = [described, f"peer and zoo on the same {n} test images; peer given no_grad and validation off"]
    rows = []
    for k in KS[mode]:
        found = {}

        def zoo(k=k, found=found):
            result = estimate_log_likelihood(model_fn, guide_fn, points, num_particles=k, iwae_ks=(),
                                             psis=False)
            found["zoo"] = (result.log_px.tolist(), result.log_px_se.tolist())

        def peer(k=k, found=found):
            pairs = [peer_estimate(model_fn, guide_fn, points[i:i + 1], k) for i in range(n)]
            found["peer"] = ([p[0] for p in pairs], [p[1] for p in pairs])

        zoo_times, peer_times = interleaved(zoo, peer, device=device, repeats=args.repeats,
                                            warmup=1 if k < 5000 else 0, units=n)
        (zoo_est, zoo_se), (peer_est, peer_se) = found["zoo"], found["peer"]
        scores = [abs(a - b) / math.sqrt(s * s + t * t) if s or t else (0.0 if a == b else math.inf)
                  for a, b, s, t in zip(zoo_est, peer_est, zoo_se, peer_se, strict=True)]
        mean_gap = sum(a - b for a, b in zip(zoo_est, peer_est, strict=True)) / n
        is_target = k == max(KS[mode])
        rows.append(Row(
            benchmark=f"IS log p(x), k={k}",
            peer="pyro.infer.Importance",
            unit="s per data point",
            zoo_s=median(zoo_times),
            peer_s=median(peer_times),
            target=f"≤ {1 / SPEEDUP_TARGET:g}" if is_target else "(info)",
            max_ratio=1 / SPEEDUP_TARGET if is_target else math.inf,
            accuracy=f"mean zoo-peer {mean_gap:+.3f} nats, max |diff|/SE {max(scores):.2f} "
                     f"(target ≤ {Z_LIMIT:g}); log p̂ zoo {sum(zoo_est) / n:.2f} ± {_mean_se(zoo_se):.2f}, "
                     f"peer {sum(peer_est) / n:.2f} ± {_mean_se(peer_se):.2f}",
            accuracy_met=max(scores) <= Z_LIMIT,
            zoo_runs=zoo_times,
            peer_runs=peer_times,
        ))
    notes.append(_amortised(model_fn, guide_fn, test, KS[mode], device, args.smoke))
    return Report(NAME, "", rows, settings={"points": n, "ks": list(KS[mode])}, notes=notes)


def _mean_se(ses: list[float]) -> float:
    return math.sqrt(sum(s * s for s in ses)) / len(ses)


def _amortised(model_fn, guide_fn, test: torch.Tensor, ks, device, smoke: bool) -> str:
    """Zoo seconds per data point over a larger batch of test images (one timing per k)."""
    from benchmarks.common import timed

    x = test[: 20 if smoke else AMORTISED_POINTS]
    parts = []
    for k in ks:
        seconds = timed(lambda k=k: estimate_log_likelihood(model_fn, guide_fn, x, num_particles=k,
                                                            iwae_ks=(), psis=False), device)
        parts.append(f"k={k}: {seconds / len(x) * 1e3:.2f} ms")
    return f"zoo amortised over {len(x)} test images, per data point: " + ", ".join(parts)


def main(argv: list[str] | None = None) -> Report:
    p = parser("Importance-sampled log p(x): zoo (vectorised) vs pyro.infer.Importance", repeats=3)
    p.add_argument("--points", type=int, default=None, help="test images for both (default 5, smoke 2)")
    p.add_argument("--epochs", type=float, default=2, help="training epochs of the VAE (full mode)")
    p.add_argument("--checkpoint", default=None, help="a `zoo train vae` checkpoint instead of training")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats = min(args.repeats, 2)
    return run_main(NAME, benchmark, args, argv)


if __name__ == "__main__":
    main()
