"""What proposed changes to the zoo would gain, measured without editing the zoo's code.

Each proposal is applied inside this process only (a function swapped in for the run and put
back after, or an option the zoo already has), and timed A B A B against the zoo as it is:

* ``mixture_quadratic``: ``GaussianComponents.component_log_probs`` from one matrix product of
  the quadratic features [vec(u u^T), u, 1] of u = x - c with [vec(Λ_k), -2 Λ_k m_k,
  m_k^T Λ_k m_k] (Λ_k the precision, m_k = mu_k - c), so no (N, K, D) residual tensor is built,
  forward or backward; the benchmark's whole mixture fit, per fit.
* ``vae_compile``: ``fit_model(..., fast=True, compile=True)`` (``torch.compile`` of the closed-form
  loss, forward
  and backward) on the 784-400-50 VAE at batch 128, per train step.

Changes measured here earlier and since applied (the broadcast student joint table, the
closed-form training losses, validation on the first step only, smaller importance-sampling
chunks) are in the main table of RESULTS.md and in the git history of this file.

    python -m benchmarks.profile_fixes [--smoke] [--only NAME ...]
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch

import pyro_zoo.models.mixture as mixture_module
from benchmarks import mixture as mixture_bench
from benchmarks.common import Clocked, Report, image_root, interleaved, median, parser, run_main, timed
from pyro_zoo.inference.train import fit_model
from pyro_zoo.models import get_spec

NAME = "profile_fixes"
CHANGES = ("mixture_quadratic", "vae_compile")


@contextlib.contextmanager
def swapped(module, name: str, value):
    """``module.name`` replaced by ``value`` for the duration."""
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


def quadratic_log_probs(self, value: torch.Tensor) -> torch.Tensor:
    """log N(value; mu_k, Sigma_k) for every k, shape ``value.shape[:-1] + (K,)``:

    (u - m_k)^T Λ_k (u - m_k) = vec(u u^T) . vec(Λ_k) - 2 (Λ_k m_k) . u + m_k^T Λ_k m_k.
    """
    k, d = self.locs.shape
    m = self.locs - self.center
    if self.scales is not None:
        precision = self.scales.reciprocal().square().diag_embed()
        log_det = self.scales.log().sum(-1)
    else:
        eye = torch.eye(d, dtype=m.dtype, device=m.device)
        inverse = torch.linalg.solve_triangular(self.scale_tril, eye, upper=False)
        precision = inverse.mT @ inverse
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    u = value - self.center
    lam_m = (precision @ m.unsqueeze(-1)).squeeze(-1)
    weights = torch.cat([precision.reshape(k, d * d), -2 * lam_m, (m * lam_m).sum(-1, keepdim=True)], -1)
    outer = (u.unsqueeze(-1) * u.unsqueeze(-2)).flatten(-2)
    features = torch.cat([outer, u, torch.ones_like(u[..., :1])], -1)
    return -0.5 * (features @ weights.T) - log_det - 0.5 * d * math.log(2 * math.pi)


def _result(change: str, where: str, unit: str, current: list[float], changed: list[float], extra=""):
    before, after = median(current), median(changed)
    return {"change": change, "where": where, "unit": unit, "current_s": before, "changed_s": after,
            "gain": before / after, "extra": extra, "current_runs": current, "changed_runs": changed}


def mixture_quadratic(args, device) -> dict:
    """The benchmark's mixture fit as it is vs with quadratic-feature log-densities, fit loops
    timed by fit's clock; scikit-learn's whole fit is timed in the same rounds for reference."""
    n_train, n_test = mixture_bench.SIZES["smoke" if args.smoke else "full"]
    x_np, test_np = mixture_bench.make_data(n_train, n_test)
    x = torch.as_tensor(x_np, dtype=torch.float32, device=device)
    x_test = torch.as_tensor(test_np, dtype=torch.float32, device=device)
    steps = 5 if args.smoke else mixture_bench.MAX_STEPS
    found, sklearn = {}, []

    def fit_with(changed: bool):
        def run():
            with contextlib.ExitStack() as stack:
                if changed:
                    stack.enter_context(swapped(mixture_module.GaussianComponents, "component_log_probs",
                                                quadratic_log_probs))
                model, result, _ = mixture_bench.fit_zoo(x, args.seed, mixture_bench.LR, mixture_bench.TOL,
                                                         mixture_bench.LOG_EVERY, steps, init="kmeans")
                with torch.no_grad():
                    found[changed] = (result.step, model.exact_log_prob(x_test).mean().item(),
                                      result.seconds / result.step)
            if changed:
                sklearn.append(timed(lambda: mixture_bench.fit_sklearn(x_np, args.seed), device))
            return Clocked(result.seconds)
        return run

    rounds = max(1, args.repeats // 2)
    current, after = interleaved(fit_with(False), fit_with(True), device=device, repeats=rounds,
                                 warmup=1)
    (s0, ll0, per0), (s1, ll1, per1) = found[False], found[True]
    reference = median(sklearn[1:] or sklearn)
    extra = (f"from k-means, lr {mixture_bench.LR}: steps {s0} vs {s1}; {per0 * 1e3:.0f} vs "
             f"{per1 * 1e3:.0f} ms per step; held-out {ll0:.4f} vs {ll1:.4f}; sklearn's whole fit in "
             f"the same run {reference:.3g} s")
    return _result("component log-probs from quadratic features",
                   "models/mixture/model.py component_log_probs", "s per SVI loop", current, after, extra)


def _vae_data(args, device):
    with image_root(args) as (root, _):
        x = get_spec("vae").load_data("train", data_dir=root, data="mnist").x
    return x[:4096 if args.smoke else None].to(device)


def _clocked_rounds(first, second, repeats: int, units: int) -> tuple[list[float], list[float]]:
    """A B A B rounds of functions that return their own seconds (after one warm-up each)."""
    first(), second()
    a, b = [], []
    for _ in range(repeats):
        a.append(first() / units)
        b.append(second() / units)
    return a, b


def vae_compile(args, device) -> dict:
    x = _vae_data(args, device)
    spec = get_spec("vae")
    model = spec.make(data_dim=784).to(device)
    steps = 5 if args.smoke else 50

    def block(compile):
        def run():
            return fit_model(model, x, fast=True, steps=steps, batch_size=128, lr=spec.train["lr"],
                             log_every=steps, progress=False, compile=compile).seconds
        return run

    current, after = _clocked_rounds(block(False), block(True), args.repeats, steps)
    return _result("fit_model(fast=True, compile=True): torch.compile of the closed-form loss",
                   "inference/train.py fit option", f"s per step ({device.type})", current, after)


def benchmark(args, device: torch.device) -> Report:
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for change in args.only or CHANGES:
            results.append(globals()[change](args, device))
    lines = [f"{r['change']} ({r['where']}): {r['current_s']:.4g} -> {r['changed_s']:.4g} {r['unit']}, "
             f"{r['gain']:.2f}x {r['extra']}".rstrip() for r in results]
    return Report(NAME, "", [], settings={"changes": results}, notes=lines)


def format_changes(results: list[dict]) -> str:
    """A Markdown table of the measured proposals."""
    lines = ["| proposed change | where | unit | zoo now | with the change | gain |",
             "|---|---|---|---|---|---|"]
    for r in results:
        extra = f" ({r['extra']})" if r["extra"] else ""
        lines.append(f"| {r['change']}{extra} | {r['where']} | {r['unit']} | {r['current_s']:.4g} | "
                     f"{r['changed_s']:.4g} | {r['gain']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Report:
    p = parser("Measured gains of the proposed zoo changes (applied in-process only)", repeats=5)
    p.add_argument("--only", nargs="*", choices=CHANGES, default=None)
    args = p.parse_args(argv)
    report = run_main(NAME, benchmark, args, argv)
    print(format_changes(report.settings["changes"]))
    return report


if __name__ == "__main__":
    main()
