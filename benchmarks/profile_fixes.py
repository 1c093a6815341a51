"""What the proposed changes to the zoo's code would gain, measured without editing that code.

Each proposal is applied inside this process only (a function swapped in for the run and put
back after, or an option the zoo already has), and timed A B A B against the zoo as it is:

* ``student_joint``: ``models.student.joint_table`` as a broadcast product of the five CPDs
  instead of a five-operand ``torch.einsum`` (whose contraction-path search dominates a query).
* ``mixture_loss``: the full-batch mixture loss -sum_n log p(x_n) from
  ``MixtureModel.exact_log_prob`` instead of ``TraceEnum_ELBO.differentiable_loss`` (the same
  number: the guide is empty and the assignment is summed out exactly), per step and per fit.
* ``mixture_quadratic``: ``mixture_loss`` and, with it,
  ``GaussianComponents.component_log_probs`` from one matrix product of the quadratic features
  [vec(u u^T), u, 1] of u = x - c with [vec(Λ_k), -2 Λ_k m_k, m_k^T Λ_k m_k] (Λ_k the precision,
  m_k = mu_k - c), so no (N, K, D) residual tensor is built, forward or backward. Both mixture
  rows also time scikit-learn's fit in the same run, for reference.
* ``vae_validation``: ``fit`` with Pyro's validation off (distribution argument and support
  checks on every step), per VAE train step; ``vae_closed_form``: the VAE trained on its
  closed-form-KL ELBO (``VAE.neg_elbo``) in plain torch instead of Trace_ELBO, per step.
* ``is_chunk``: ``estimate_log_likelihood`` with small particle chunks (its default where that is
  below 2**24, else 2**20) against 2**24 (the default until commit 1001ca8): temporaries that
  stay in cache instead of fresh page-faulted allocations, per data point at the largest k.

    python -m benchmarks.profile_fixes [--smoke] [--only NAME ...]
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings

import pyro
import torch

import inference.train as train_module
import models.mixture as mixture_module
import models.student as student_module
from benchmarks import mixture as mixture_bench
from benchmarks.common import Clocked, Report, image_root, interleaved, median, parser, run_main, timed
from benchmarks.student import queries
from inference.importance import estimate_log_likelihood
from inference.train import fit
from models import get_spec

NAME = "profile_fixes"
CHANGES = ("student_joint", "mixture_loss", "mixture_quadratic", "vae_validation", "vae_closed_form",
           "is_chunk")


def broadcast_joint_table(cpds: dict[str, torch.Tensor]) -> torch.Tensor:
    """p(d, i, g, s, l) = p(d) p(i) p(g|i,d) p(s|i) p(l|g) by broadcasting, shape (2, 2, 3, 2, 2)."""
    c = {name: table.double() for name, table in cpds.items()}
    return (c["D"][:, None, None, None, None] * c["I"][:, None, None, None]
            * c["G"].transpose(0, 1)[:, :, :, None, None] * c["S"][:, None, :, None] * c["L"][:, None, :])


@contextlib.contextmanager
def swapped(module, name: str, value):
    """``module.name`` replaced by ``value`` for the duration."""
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


class ExactMixtureLoss:
    """Stands in for make_elbo(...): -(N / B) sum_n log p(x_n) from the model's exact_log_prob."""

    def differentiable_loss(self, model_fn, guide_fn, x, num_data=None):
        model = model_fn.__self__
        if not bool(model.initialised):
            model.initialise(x)
        return -(num_data or len(x)) / len(x) * model.exact_log_prob(x).sum()


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


def student_joint(args, device) -> dict:
    model = student_module.StudentNetwork().to(device)
    asked = queries(args.smoke)

    def run():
        return [model.query(t[0] if len(t) == 1 else t, e) for t, e in asked]

    def changed():
        with swapped(student_module, "joint_table", broadcast_joint_table):
            return run()

    same = max((a - b).abs().max().item() for a, b in zip(run(), changed(), strict=True))
    current, after = interleaved(run, changed, device=device, repeats=args.repeats, units=len(asked))
    return _result("joint table by broadcasting, not a 5-operand einsum", "models/student.py joint_table",
                   "s per query", current, after, f"answers differ by {same:.1e}")


def mixture_loss(args, device, quadratic: bool = False) -> dict:
    """The zoo as it is vs the exact loss (and, with ``quadratic``, the quadratic-feature
    log-densities too), fit loops timed by fit's clock; scikit-learn's whole fit is timed in the
    same rounds (zoo, changed, sklearn, zoo, ...)."""
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
                    loss = ExactMixtureLoss()
                    stack.enter_context(swapped(train_module, "make_elbo", lambda *a, **k: loss))
                if changed and quadratic:
                    stack.enter_context(swapped(mixture_module.GaussianComponents, "component_log_probs",
                                                quadratic_log_probs))
                model, result = mixture_bench.fit_zoo(x, args.seed, mixture_bench.LR, mixture_bench.TOL,
                                                      mixture_bench.LOG_EVERY, steps)
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
    sklearn = sklearn[1:]
    (s0, ll0, per0), (s1, ll1, per1) = found[False], found[True]
    extra = (f"steps {s0} vs {s1}; {per0 * 1e3:.0f} vs {per1 * 1e3:.0f} ms per step; held-out "
             f"{ll0:.4f} vs {ll1:.4f}; sklearn in the same run {median(sklearn):.3g} s per fit")
    if quadratic:
        return _result("both: the exact loss and component log-probs from quadratic features",
                       "inference/train.py + models/mixture.py (loss hook, component_log_probs)",
                       "s per fit", current, after, extra)
    return _result("full-batch loss from exact_log_prob, not TraceEnum_ELBO",
                   "inference/train.py + models/mixture.py (a loss hook)", "s per fit", current, after, extra)


def mixture_quadratic(args, device) -> dict:
    return mixture_loss(args, device, quadratic=True)


def _vae_data(args, device):
    with image_root(args) as (root, _):
        x = get_spec("vae").load_data("train", data_dir=root, data="mnist").x
    return x[:4096 if args.smoke else None].to(device)


def vae_validation(args, device) -> dict:
    x = _vae_data(args, device)
    spec = get_spec("vae")
    model = spec.make(data_dim=784).to(device)
    steps = 5 if args.smoke else 50

    def block(validate):
        def run():
            with pyro.validation_enabled(validate):
                return fit(model, x, steps=steps, batch_size=128, lr=spec.train["lr"], log_every=steps,
                           progress=False).seconds
        return run

    current, after = _clocked_rounds(block(True), block(False), args.repeats, steps)
    return _result("fit with Pyro validation off", "inference/train.py fit", "s per step", current, after)


def vae_closed_form(args, device) -> dict:
    x = _vae_data(args, device)
    spec = get_spec("vae")
    model = spec.make(data_dim=784).to(device)
    steps = 5 if args.smoke else 50
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.train["lr"], fused=True)

    def current():
        with pyro.validation_enabled(False):
            return fit(model, x, steps=steps, batch_size=128, lr=spec.train["lr"], log_every=steps,
                       progress=False).seconds

    def changed():
        import time

        start = time.perf_counter()
        order = torch.randperm(len(x), device=x.device)
        losses = []
        for step in range(steps):
            batch = model.preprocess(x[order[step * 128:(step + 1) * 128]])
            loss = model.neg_elbo(batch).sum() * (len(x) / len(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        torch.stack(losses).tolist()
        return time.perf_counter() - start

    before, after = _clocked_rounds(current, changed, args.repeats, steps)
    return _result("closed-form-KL ELBO (VAE.neg_elbo) as the training loss, validation off both",
                   "models/base.py + inference/train.py (a loss hook) + models/vae.py", "s per step",
                   before, after)


def _clocked_rounds(first, second, repeats: int, units: int) -> tuple[list[float], list[float]]:
    """A B A B rounds of functions that return their own seconds (after one warm-up each)."""
    first(), second()
    a, b = [], []
    for _ in range(repeats):
        a.append(first() / units)
        b.append(second() / units)
    return a, b


def is_chunk(args, device) -> dict:
    spec = get_spec("vae")
    pyro.set_rng_seed(args.seed)
    model = spec.make(data_dim=784).to(device)
    points = torch.bernoulli(torch.rand(5, 784, device=device))
    k = 50 if args.smoke else 5000

    def run(chunk):
        return lambda: estimate_log_likelihood(model.model, model.guide, points, num_particles=k, iwae_ks=(),
                                               psis=False, chunk_elements=chunk)

    default = inspect.signature(estimate_log_likelihood).parameters["chunk_elements"].default
    smaller = default if default < 2**24 else 2**20
    current, after = interleaved(run(2**24), run(smaller), device=device, repeats=args.repeats,
                                 units=len(points))
    adopted = " (the default now)" if smaller == default else ""
    return _result(f"chunk_elements 2**{smaller.bit_length() - 1}{adopted}, not 2**24 (k={k}, 5 images)",
                   "inference/importance.py estimate_log_likelihood default", "s per data point",
                   current, after)


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
