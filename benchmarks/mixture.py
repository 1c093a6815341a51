"""Gaussian mixture fit, N = 100,000, K = 10, D = 8, full covariances: zoo vs scikit-learn.

Data: K = 10 Gaussians in D = 8 dimensions, weights ~ Dirichlet(3), means ~ N(0, I_8),
covariances A A^T + 0.1 I with A_ij ~ N(0, 1/8) (heavily overlapping components: EM needs
about a dozen iterations), fixed seed; 100,000 training and 20,000 held-out points.

Zoo: ``MixtureModel(MixtureConfig(num_components=10, dim=8, covariance="full"))`` as the zoo fits
it by default: ``initialise`` (``init="em"``: scikit-learn's GaussianMixture, one k-means start
then EM, on 20,000 random rows), then
``pyro_zoo.inference.train.fit`` full batch on all 100,000 rows (its closed-form loss -sum_n log p(x_n),
equal to TraceEnum_ELBO's) with the spec's learning rate (0.01) and early stopping at ``tol`` =
1e-3 nats per point between consecutive steps (``log_every`` = 1; the full-batch loss is
deterministic), scikit-learn's own rule and unit. Peer: scikit-learn
``GaussianMixture(n_components=10, covariance_type="full", n_init=1, init_params="kmeans")``
(EM, tol 1e-3) on all rows. Both fits are timed end to end, initialisation included, A B A B
with the same seed per round. Targets: zoo time <= peer time, held-out mean log-likelihood
within 0.5% of scikit-learn's, read one-sided: zoo >= sklearn - 0.5% |sklearn| in every round
(a zoo fit that ends higher than EM's local optimum is not a miss).

Once per run, for reference, the zoo with ``init="kmeans"`` (SVI does the whole climb from
k-means clusters, at lr 0.05, the largest that the one-step stopping rule tolerates; see
RESULTS.md) is timed too.

    python -m benchmarks.mixture [--smoke] [--device cpu|cuda] [--lr LR] [--tol TOL]
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyro
import torch

from benchmarks.common import Report, Row, interleaved, median, parser, run_main, synchronize
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models.mixture import KMEANS_POINTS, SPEC, MixtureConfig, MixtureModel

NAME = "mixture"
K, D = 10, 8
SIZES = {"full": (100_000, 20_000), "smoke": (2_000, 1_000)}
DATA_SEED = 8
#: Adam learning rate (the spec's), early-stopping tolerance (nats per point) and window (steps).
LR, TOL, LOG_EVERY, MAX_STEPS = SPEC.train["lr"], 1e-3, 1, 2000
#: learning rate of the reference fit from k-means (see the module docstring)
KMEANS_LR = 0.05
ACCURACY = 0.005


def make_data(n_train: int, n_test: int, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Training (n_train, 8) and held-out (n_test, 8) draws of the mixture in the module docstring."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(K, 3.0))
    locs = rng.normal(size=(K, D))
    a = rng.normal(size=(K, D, D)) / np.sqrt(D)
    chol = np.linalg.cholesky(a @ a.transpose(0, 2, 1) + 0.1 * np.eye(D))

    def draw(n):
        z = rng.choice(K, size=n, p=weights)
        return locs[z] + np.einsum("nij,nj->ni", chol[z], rng.standard_normal((n, D)))

    return draw(n_train), draw(n_test)


def fit_zoo(x: torch.Tensor, seed: int, lr: float, tol: float, log_every: int, max_steps: int,
            init: str = "em"):
    """(model, fit result, seconds of ``initialise``): the zoo's default fit, timed in two parts."""
    pyro.set_rng_seed(seed)
    model = MixtureModel(MixtureConfig(num_components=K, dim=D, covariance="full", init=init)).to(x.device)
    start = time.perf_counter()
    model.initialise(x)
    synchronize(x.device)
    init_s = time.perf_counter() - start
    result = fit_model(model, x, fast=True, objective="TraceEnum_ELBO", steps=max_steps, batch_size=None,
                       lr=lr, tol=tol, log_every=log_every, progress=False)
    return model, result, init_s


def fit_sklearn(x: np.ndarray, seed: int):
    from sklearn.mixture import GaussianMixture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning is reported through n_iter_ instead
        return GaussianMixture(n_components=K, covariance_type="full", n_init=1, init_params="kmeans",
                               random_state=seed).fit(x)


def from_kmeans(x: torch.Tensor, x_test: torch.Tensor, seed: int, args, max_steps: int) -> dict:
    """One reference fit with ``init="kmeans"``: seconds, steps, held-out log-likelihood."""
    start = time.perf_counter()
    model, result, _ = fit_zoo(x, seed, KMEANS_LR, args.tol, args.log_every, max_steps, init="kmeans")
    with torch.no_grad():
        held_out = model.exact_log_prob(x_test).double().mean().item()
    return {"seconds": time.perf_counter() - start, "steps": result.step, "held_out": held_out}


def benchmark(args, device: torch.device) -> Report:
    n_train, n_test = SIZES["smoke" if args.smoke else "full"]
    x, x_test = make_data(n_train, n_test)
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    xt_test = torch.as_tensor(x_test, dtype=torch.float32, device=device)
    max_steps = 30 if args.smoke else args.max_steps
    runs = {"zoo": [], "peer": []}
    seeds = iter(range(args.seed, args.seed + 10_000))

    def zoo():
        seed = next(seeds)
        model, result, init_s = fit_zoo(xt, seed, args.lr, args.tol, args.log_every, max_steps)
        with torch.no_grad():
            held_out = model.exact_log_prob(xt_test).double().mean().item()
        runs["zoo"].append({"seed": seed, "steps": result.step, "held_out": held_out,
                            "loop_s": result.seconds, "init_s": init_s})

    def peer():
        gm = fit_sklearn(x, runs["zoo"][-1]["seed"])
        runs["peer"].append({"iterations": int(gm.n_iter_), "converged": bool(gm.converged_),
                             "held_out": float(gm.score(x_test))})

    zoo_times, peer_times = interleaved(zoo, peer, device=device, repeats=args.repeats,
                                        warmup=0 if args.smoke else 1)
    zoo_runs, peer_runs = runs["zoo"][-args.repeats:], runs["peer"][-args.repeats:]
    # relative shortfall of the zoo below scikit-learn (negative: the zoo fits better)
    gaps = [(p["held_out"] - z["held_out"]) / abs(p["held_out"])
            for z, p in zip(zoo_runs, peer_runs, strict=True)]
    zoo_ll = float(np.median([r["held_out"] for r in zoo_runs]))
    peer_ll = float(np.median([r["held_out"] for r in peer_runs]))
    row = Row(
        benchmark=f"mixture fit N={n_train:,} K={K} D={D} full",
        peer="sklearn GaussianMixture",
        unit="s per fit",
        zoo_s=median(zoo_times),
        peer_s=median(peer_times),
        target="≤ 1",
        max_ratio=1.0,
        accuracy=f"held-out log-lik zoo {zoo_ll:.4f} vs sklearn {peer_ll:.4f} nats/point; "
                 f"worst shortfall {max(gaps):+.3%} (target ≤ {ACCURACY:.1%})",
        accuracy_met=max(gaps) <= ACCURACY,
        note=f"zoo lr={args.lr}, tol={args.tol}, log_every={args.log_every}",
        zoo_runs=zoo_times,
        peer_runs=peer_times,
    )
    reference = from_kmeans(xt, xt_test, args.seed, args, max_steps)
    steps = [r["steps"] for r in zoo_runs]
    notes = [
        f"zoo per fit: EM initialisation on <= {KMEANS_POINTS:,} rows "
        f"{[round(r['init_s'], 3) for r in zoo_runs]} s, then Adam steps {steps} taking "
        f"{[round(r['loop_s'], 3) for r in zoo_runs]} s; sklearn EM iterations on all rows: "
        f"{[r['iterations'] for r in peer_runs]} (converged: {all(r['converged'] for r in peer_runs)})",
        f"held-out mean log-lik per round: zoo {[round(r['held_out'], 4) for r in zoo_runs]}, "
        f"sklearn {[round(r['held_out'], 4) for r in peer_runs]}",
        f"reference, once: SVI alone from k-means (init='kmeans', lr {KMEANS_LR}): "
        f"{reference['seconds']:.2f} s, {reference['steps']} steps, held-out {reference['held_out']:.4f}",
    ]
    if device.type == "cuda":
        notes.append("scikit-learn runs on the CPU; the zoo on the GPU")
    settings = {"n_train": n_train, "n_test": n_test, "lr": args.lr, "tol": args.tol,
                "log_every": args.log_every, "max_steps": max_steps, "zoo_steps": steps,
                "kmeans_reference": reference}
    return Report(NAME, "", [row], settings=settings, notes=notes)


def main(argv: list[str] | None = None) -> Report:
    p = parser("Gaussian mixture fit: zoo (EM initialisation + SVI) vs scikit-learn (EM)", repeats=5)
    p.add_argument("--lr", type=float, default=LR)
    p.add_argument("--tol", type=float, default=TOL)
    p.add_argument("--log-every", type=int, default=LOG_EVERY)
    p.add_argument("--max-steps", type=int, default=MAX_STEPS)
    args = p.parse_args(argv)
    return run_main(NAME, benchmark, args, argv)


if __name__ == "__main__":
    main()
