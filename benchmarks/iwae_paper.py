"""Paper reproduction: Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*,
table 1, the 1-stochastic-layer model on MNIST, within a time budget.

Model (the paper's section 5): 784 - 200 - 200 - 50 with tanh hidden layers, Bernoulli pixels,
a diagonal Gaussian q(z | x): ``pyro_zoo.models.vae.VAE(784, (200, 200), 50, "tanh", train_samples=k)``,
trained as a VAE (k = 1, the ELBO) and as an IWAE (k = 50, the bound L_50), on dynamically
binarised MNIST (``VAE.preprocess`` draws fresh binary images every minibatch) by
``pyro_zoo.inference.train.fit``, the zoo's own trainer, with Adam at the paper's learning-rate schedule
(1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7), followed for as many epochs as the budget allows.
Evaluation: log p(x) by importance sampling with k = 5000 (``pyro_zoo.inference.importance``) on the
full test set (binarised once, seed 0), mean and standard error over images, plus the test
ELBO and the active units (Cov_x(E_q[z_i]) > 0.01) the paper also reports.

The paper trains 3,280 epochs at batch 20 and reports -log p(x) = 86.76 (VAE) and 84.78 (IWAE,
k = 50) nats. Here the budget (``--minutes`` per model, default 4) sets the epochs: one epoch is
timed, the rest of the budget planned from it. Differences from the paper, all options:
``--batch-size`` (default 100, not 20: a GPU step at batch 20 is launch-bound, so larger batches
buy epochs), Adam's epsilon (torch's 1e-8, not 1e-4), and the epochs.

    python -m benchmarks.iwae_paper --device cuda                  # the reproduction (GPU)
    python -m benchmarks.iwae_paper --smoke                        # seconds, CPU, digits stand-in
    python -m benchmarks.iwae_paper --minutes 2 --test-images 1000 # a small CPU run
"""

from __future__ import annotations

import argparse
import bisect
import math
import tempfile
import time
from pathlib import Path

import pyro
import torch

from benchmarks.common import Report, image_root, parser, run_main, synchronize
from pyro_zoo.inference.importance import estimate_log_likelihood
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import DataSplit, get_spec
from pyro_zoo.models.vae import VAE, VAEConfig

NAME = "iwae_paper"
#: Burda et al. (2016) table 1, 1 stochastic layer: -log p(x) in nats, k = 5000 evaluation.
PAPER = {1: 86.76, 50: 84.78}
PAPER_EPOCHS = sum(3**i for i in range(8))  # 3280
SMOKE = {"minutes": 0.05, "eval_k": 50, "test_images": 200, "train_images": 2048, "iwae_k": 5}


def burda_decay(steps_per_epoch: int):
    """lr multiplier at a step: the paper's 10^(-i/7) during its 3^i epochs of stage i (i = 0..7),
    so a run of E epochs follows the paper's first E epochs (stage i ends at epoch 3^0 + ... + 3^i)."""
    ends = [steps_per_epoch * sum(3**j for j in range(i + 1)) for i in range(8)]

    def decay(step: int) -> float:
        return 10 ** (-min(bisect.bisect_right(ends, step), 7) / 7)

    return decay


def build(k: int, device: torch.device) -> VAE:
    config = VAEConfig(data_dim=784, hidden=(200, 200), z_dim=50, activation="tanh", train_samples=k)
    return VAE(config).to(device)


def train(model: VAE, x: torch.Tensor, args, seconds: float) -> dict:
    """One timed epoch, then as many more as ``seconds`` allows, on the paper's schedule."""
    settings = {"batch_size": args.batch_size, "lr": args.lr, "progress": args.progress,
                "compile": args.compile}
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "run.pt"
        first = fit_model(model, x, fast=True, epochs=1, checkpoint=checkpoint, **settings)
        synchronize(x.device)
        epochs = max(1, min(args.max_epochs, int(seconds / max(first.seconds, 1e-9))))
        steps_per_epoch = math.ceil(len(x) / args.batch_size)
        rest = fit_model(model, x, fast=True, epochs=epochs, checkpoint=checkpoint, resume=True,
                   lr_decay=burda_decay(steps_per_epoch), **settings)
        synchronize(x.device)
    return {"epochs": epochs, "steps": rest.step, "train_s": first.seconds + rest.seconds,
            "first_epoch_s": first.seconds, "final_train_loss": rest.final_loss}


@torch.no_grad()
def evaluate(model: VAE, x_test: torch.Tensor, k: int, chunk_elements: int) -> dict:
    """Importance-sampled log p(x) with ``k`` particles, test ELBO and active units."""
    start = time.perf_counter()
    result = estimate_log_likelihood(model.model, model.guide, x_test, num_particles=k, iwae_ks=(),
                                     psis=False, chunk_elements=chunk_elements)
    synchronize(x_test.device)
    log_p = result.log_px.double()
    metrics = model.metrics(DataSplit(x_test))
    return {"neg_log_p": -log_p.mean().item(), "se": (log_p.std() / math.sqrt(len(log_p))).item(),
            "eval_s": time.perf_counter() - start,
            "test_neg_elbo": metrics["neg_elbo_analytic_kl"]["value"],
            "active_units": metrics["active_units"]["value"]}


def benchmark(args, device: torch.device) -> Report:
    if args.smoke:
        args.minutes, args.eval_k = min(args.minutes, SMOKE["minutes"]), min(args.eval_k, SMOKE["eval_k"])
        args.test_images = min(args.test_images or SMOKE["test_images"], SMOKE["test_images"])
        args.iwae_k = min(args.iwae_k, SMOKE["iwae_k"])
    spec = get_spec("vae")
    with image_root(args) as (root, source):
        x = spec.load_data("train", data_dir=root, data="mnist").x
        x_test = spec.load_data("test", data_dir=root, data="mnist").x
    if args.smoke:
        x = x[:SMOKE["train_images"]]
    x, x_test = x.to(device), x_test[:args.test_images or None].to(device)
    chunk = 2**21 if device.type == "cpu" else 2**27
    results = []
    for k in (1, args.iwae_k):
        pyro.set_rng_seed(args.seed)
        model = build(k, device)
        trained = train(model, x, args, args.minutes * 60)
        results.append({"k": k, **trained, **evaluate(model, x_test, args.eval_k, chunk)})
    notes = [f"data: {source}; {len(x)} training images (dynamically binarised), {len(x_test)} test images"]
    settings = {"minutes_per_model": args.minutes, "batch_size": args.batch_size, "lr": args.lr,
                "eval_k": args.eval_k, "compile": args.compile, "results": results}
    return Report(NAME, "", [], settings=settings, notes=notes)


def table(results: list[dict], eval_k: int) -> str:
    """The results as a Markdown table, next to the paper's numbers."""
    lines = [f"| objective | epochs (paper 3280) | train time | -log p(x), k={eval_k} | paper | "
             "test -ELBO | active units | eval time |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        name = "VAE (k=1)" if r["k"] == 1 else f"IWAE (k={r['k']})"
        paper = f"{PAPER[r['k']]:.2f}" if r["k"] in PAPER else "-"
        lines.append(f"| {name} | {r['epochs']} | {r['train_s']:.0f} s | {r['neg_log_p']:.2f} ± "
                     f"{r['se']:.2f} | {paper} | {r['test_neg_elbo']:.2f} | {r['active_units']} | "
                     f"{r['eval_s']:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Report:
    p = parser("Burda et al. (2016) VAE / IWAE on MNIST within a time budget", repeats=1)
    p.add_argument("--minutes", type=float, default=4.0, help="training time per model (default 4)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--iwae-k", type=int, default=50, help="samples of the IWAE objective (paper: 50)")
    p.add_argument("--eval-k", type=int, default=5000, help="importance samples for log p(x) (paper: 5000)")
    p.add_argument("--test-images", type=int, default=None, help="first N test images (default all)")
    p.add_argument("--max-epochs", type=int, default=PAPER_EPOCHS)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the loss (default: on a GPU only)")
    p.add_argument("--progress", action="store_true", help="progress bars")
    args = p.parse_args(argv)
    if args.compile is None:
        args.compile = args.device == "cuda"
    report = run_main(NAME, benchmark, args, argv)
    print(table(report.settings["results"], args.eval_k))
    return report


if __name__ == "__main__":
    main()
