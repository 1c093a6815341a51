r"""Annealed importance sampling (AIS) of log p(x) per data point, and bidirectional Monte Carlo.

AIS (Neal 2001, "Annealed importance sampling", Statistics and Computing 11) moves particles
from a tractable proposal f_0(z) = q(z | x) (the guide, or the prior p(z)) to the unnormalised
posterior f_T(z) = p(x, z) through the geometric path

    f_t(z) = q(z | x)^(1 - beta_t) p(x, z)^(beta_t),     0 = beta_0 < beta_1 < ... < beta_T = 1,

with beta on a "sigmoid" schedule (Grosse, Ghahramani & Adams 2015, "Sandwiching the marginal
likelihood using bidirectional Monte Carlo": beta_t = (s(d(2t/T - 1)) - s(-d)) / (s(d) - s(-d)),
s the logistic function, d = 4) or a "linear" one (beta_t = t / T). T = ``num_steps`` is the number
of intermediate distributions. A chain starts at z_0 ~ f_0 and for t = 1..T

    log w += log f_t(z_{t-1}) - log f_{t-1}(z_{t-1})
           = (beta_t - beta_{t-1}) (log p(x, z_{t-1}) - log q(z_{t-1} | x)),
    z_t ~ K_t(z_{t-1}, .),   K_t an HMC kernel that leaves f_t invariant,

so that E[w] = p(x) (f_0 is normalised), and log w is a stochastic lower bound: E[log w] <= log p(x).
With C = ``num_chains`` independent chains per data point,

    log p̂(x) = logsumexp_c(log w_c) - log C,

whose standard error is the delta-method one of :mod:`pyro_zoo.inference.importance` (the chains' AIS
weights play the particles' role). Wu, Burda, Salakhutdinov & Grosse (2017), "On the quantitative
analysis of decoder-based generative models", use the same estimator (HMC transitions, step size
adapted to an acceptance rate of 0.65) to evaluate VAEs and GANs.

Bidirectional Monte Carlo (Grosse et al. 2015): on data simulated from the model, (x, z*) ~
p(x, z), z* is an exact posterior draw given x. Reverse AIS starts at z* and runs the path from
beta = 1 down to 0, accumulating log w_rev += log f_{t-1}(z_t) - log f_t(z_t); then E[w_rev] =
1 / p(x), so -log w_rev is a stochastic upper bound. ``bdmc`` returns both bounds and their gap,
which bounds the error of either estimate on such data.

HMC: ``num_leapfrog`` leapfrog steps with unit mass in the latents' unconstrained coordinates
(u = biject_to(support)^{-1}(z), the log |Jacobian| added to every f_t, as Pyro's HMC does). The
step size is one per data point and intermediate distribution, adapted on the fly towards an
acceptance probability of ``target_accept`` (0.65): after every transition, eps <- eps *
exp(``adapt_rate`` * (mean acceptance over the chains - target)). A kernel tuned on a chain's own
past is no longer a fixed f_t-invariant kernel, and the weights lose their unbiasedness: measured
on the trained DLGM (400 points, 16 chains, 200 steps, proposal = prior), "online" adaptation put
log p̂ 3-5 SE *above* the quadrature in five of five seeds. So by default
(``adaptation="pilot"``) the adaptation runs in a pilot of ``pilot_chains`` chains, and the
estimate comes from fresh chains that replay the pilot's step sizes per data point and step (a
fixed kernel sequence: 0.6-2.3 SE *below* in the same check, as a stochastic lower bound should
be); the pilot costs ``pilot_chains / num_chains`` of the run. ``adaptation="online"`` skips the
pilot (one pass, slightly biased); ``"none"`` uses ``step_size`` as given: a number, or a schedule
of shape (num_steps,) or (num_steps, N) such as ``AISResult.step_sizes``.

Vectorisation: all chains and data points move together. Model and guide run once per gradient
evaluation inside ``pyro.plate("particles", num_chains, dim=-(max_plate_nesting + 1))``, with
the latents fixed by ``poutine.condition``; their log densities are read from the traces and
reduced per data point (plates inside the data plate summed) as in ``pyro_zoo.inference.importance``;
gradients come from torch autograd. Tensors stay on ``x``'s device.

Requirements: every latent site sits in the model's "data" plate (per-data-point latents: use a
zoo model's ``local_pair()``) and has a continuous support (real-valued, or constrained with a
``biject_to`` transform); other sites raise ``ValueError``. Names: ``num_chains`` (chains per
data point, the AIS counterpart of ``num_particles``) and ``num_steps`` (intermediate
distributions T).

Shapes: ``x`` is (N, ...); per-data-point results are (N,); ``log_weights`` is (num_chains, N).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from pyro_zoo.inference.importance import weight_statistics
from pyro_zoo.inference.settings import positive_number, whole_number
from pyro_zoo.inference.sites import in_data_plate, is_latent

SCHEDULES = ("sigmoid", "linear")
PROPOSALS = ("guide", "prior")
ADAPTATIONS = ("pilot", "online", "none")
SIGMOID_SHARPNESS = 4.0


def beta_schedule(num_steps: int, schedule: str = "sigmoid", device=None) -> torch.Tensor:
    """Inverse temperatures beta_0 = 0 < ... < beta_T = 1, shape (num_steps + 1,), float64."""
    num_steps = whole_number("num_steps", num_steps)
    t = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64, device=device)
    if schedule == "linear":
        return t
    if schedule == "sigmoid":
        d = SIGMOID_SHARPNESS
        s = torch.sigmoid(d * (2 * t - 1))
        low, high = math.exp(-d) / (1 + math.exp(-d)), 1 / (1 + math.exp(-d))
        beta = (s - low) / (high - low)
        beta[0], beta[-1] = 0.0, 1.0
        return beta
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


@dataclass
class AISResult:
    """Per-data-point AIS estimates (tensors on the CPU) and run statistics.

    ``log_px``/``log_px_se`` (N,): log p̂(x) and its delta-method SE over the chains (for a
    reverse run: the upper bound -log mean_c w_rev and its SE); ``log_weights`` (num_chains, N);
    ``acceptance`` (N,): mean HMC acceptance probability over chains and transitions;
    ``acceptance_per_step`` and ``step_size_per_step`` (num_steps,): means over data points;
    ``step_sizes`` (num_steps, N): the step size of every data point at every step.
    """

    num_chains: int
    num_steps: int
    log_px: torch.Tensor
    log_px_se: torch.Tensor
    log_weights: torch.Tensor
    acceptance: torch.Tensor
    acceptance_per_step: torch.Tensor
    step_size_per_step: torch.Tensor
    step_sizes: torch.Tensor | None = None
    direction: str = "forward"
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Means over data points (nats per data point) with the SE of the mean."""
        n = self.log_px.numel()
        return {
            "num_chains": self.num_chains,
            "num_steps": self.num_steps,
            "num_data": n,
            "direction": self.direction,
            "log_px": self.log_px.double().mean().item(),
            "log_px_se": (self.log_px_se.double().square().sum().sqrt() / n).item(),
            "acceptance": self.acceptance.mean().item(),
            "acceptance_min": self.acceptance.min().item(),
            "step_size_final": self.step_size_per_step[-1].item(),
            "seconds": self.seconds,
            **self.settings,
        }


class _Path:
    """log f_0 and log p(x, z) (plus the log |Jacobian| of the unconstraining map) at given latents.

    ``evaluate(u)`` returns (a, b, grad a, grad b), a = log f_0(z) + log|J|, b = log p(x, z) + log|J|,
    each (C, N), so that log f_beta = (1 - beta) a + beta b in unconstrained coordinates u.
    """

    def __init__(self, model, guide, x, num_chains, proposal, max_plate_nesting):
        if proposal not in PROPOSALS:
            raise ValueError(f"unknown proposal {proposal!r}; choose one of {', '.join(PROPOSALS)}")
        self.model, self.x, self.num_chains = model, x, num_chains
        self.guide = guide if proposal == "guide" else None
        self.nesting = max_plate_nesting
        self.guide_fn = None
        self.num_points = x.shape[0]

    #: whether latents outside the data plate may move (the whole-data path of :func:`ais_evidence`)
    global_latents_allowed = False

    def _plate(self):
        return pyro.plate("particles", self.num_chains, dim=-(self.nesting + 1))

    def initial(self) -> dict[str, torch.Tensor]:
        """Latents drawn from f_0 (the guide, the prior for latents it leaves out), constrained."""
        with torch.no_grad(), self._plate():
            if self.guide is None:
                guide_trace = None
                model_trace = poutine.trace(self.model).get_trace(self.x)
            else:
                guide_trace = poutine.trace(self.guide).get_trace(self.x)
                model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(self.x)
        self._read_sites(model_trace, guide_trace)
        # q(z | x) of a guide with one latent site cannot depend on another sample: keep its
        # distribution and score new z with it instead of rerunning the guide (its network) per step
        self.guide_fn = None
        if guide_trace is not None and len(self.guide_names) == 1:
            sites = [site for site in guide_trace.nodes.values()
                     if site["type"] == "sample" and not site_is_subsample(site)]
            if len(sites) == 1 and sites[0]["mask"] is None:
                self.guide_fn = (sites[0]["fn"], sites[0]["scale"])
        return {name: model_trace.nodes[name]["value"] for name in self.names}

    def _read_sites(self, model_trace, guide_trace) -> None:
        self.names, self.transforms, self.event_dims = [], {}, {}
        for name, site in model_trace.nodes.items():
            if not is_latent(site):
                continue
            if not (in_data_plate(site) or self.global_latents_allowed):
                raise ValueError(
                    f"latent site {name!r} is outside the 'data' plate; AIS needs per-data-point latents "
                    "only: give the model a local_pair() with global latents fixed"
                )
            support = site["fn"].support
            if support.is_discrete:
                raise ValueError(
                    f"latent site {name!r} is discrete; AIS moves continuous latents by HMC: sum it "
                    "out (enumeration) or use importance sampling"
                )
            self.names.append(name)
            self.transforms[name] = biject_to(support)
            self.event_dims[name] = self.transforms[name].domain.event_dim
        if not self.names:
            raise ValueError("the model has no latent sites; log p(x) needs no sampling")
        sampled = set() if guide_trace is None else {
            name for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)
        }
        auxiliary = [name for name in sampled if guide_trace.nodes[name]["infer"].get("is_auxiliary")]
        if auxiliary:
            raise ValueError(f"the guide draws through the auxiliary site {auxiliary[0]!r} (an AutoGuide), "
                             "so f_0 cannot be scored at the model's latents; use proposal='prior'")
        self.guide_names = [name for name in self.names if name in sampled]

    def unconstrain(self, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self.transforms[name].inv(z[name]).detach() for name in self.names}

    def reduce(self, value: torch.Tensor, event_dim: int = 0) -> torch.Tensor:
        """Sum ``value`` (C, ..., N, *event) to (C, N): event dims and plates inside the data plate."""
        if event_dim:
            value = value.sum(tuple(range(-event_dim, 0)))
        value = value.reshape((1,) * (self.nesting + 1 - value.dim()) + value.shape)
        inner = tuple(range(1, self.nesting))
        value = value.sum(inner) if inner else value
        return value.expand(self.num_chains, self.num_points)

    def evaluate(self, u: dict[str, torch.Tensor]):
        u = {name: value.detach().requires_grad_(True) for name, value in u.items()}
        z, log_jacobian = {}, 0.0
        for name in self.names:
            transform = self.transforms[name]
            z[name] = transform(u[name])
            # log |dz/du|, batch-shaped (the transform sums over its domain's event dims)
            log_jacobian = log_jacobian + self.reduce(transform.log_abs_det_jacobian(u[name], z[name]))
        with torch.enable_grad(), self._plate():
            model_trace = poutine.trace(poutine.condition(self.model, data=z)).get_trace(self.x)
            model_trace.compute_log_prob()
            log_joint, log_prior_rest = 0.0, 0.0
            for name, site in model_trace.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                term = self.reduce(site["log_prob"])
                log_joint = log_joint + term
                if name in self.names and name not in self.guide_names:
                    log_prior_rest = log_prior_rest + term
            log_proposal = log_prior_rest
            if self.guide_fn is not None:
                fn, scale = self.guide_fn
                log_proposal = log_proposal + self.reduce(scale * fn.log_prob(z[self.guide_names[0]]))
            elif self.guide_names:
                guide_data = {name: z[name] for name in self.guide_names}
                guide_trace = poutine.trace(poutine.condition(self.guide, data=guide_data)).get_trace(self.x)
                guide_trace.compute_log_prob()
                for name in self.guide_names:
                    log_proposal = log_proposal + self.reduce(guide_trace.nodes[name]["log_prob"])
        a = log_proposal + log_jacobian
        b = log_joint + log_jacobian
        inputs = [u[name] for name in self.names]
        grad_a = torch.autograd.grad(a.sum(), inputs, retain_graph=True, allow_unused=True)
        grad_b = torch.autograd.grad(b.sum(), inputs, allow_unused=True)
        return a.detach(), b.detach(), self._filled(grad_a, u), self._filled(grad_b, u)

    def _filled(self, grads, u) -> dict[str, torch.Tensor]:
        return {n: torch.zeros_like(u[n]) if g is None else g for n, g in zip(self.names, grads, strict=True)}

    def per_site(self, value: torch.Tensor, name: str) -> torch.Tensor:
        """A (C, N) or (N,) tensor viewed to broadcast against site ``name``'s unconstrained value."""
        shape = (self.num_chains,) if value.dim() == 2 else (1,)
        shape = shape + (1,) * (self.nesting - 1) + (self.num_points,) + (1,) * self.event_dims[name]
        return value.reshape(shape)


class _WholeDataPath(_Path):
    """The whole data set as one point (for models with global latents): every latent moves, and
    every log density is summed over all plates to shape (C, 1)."""

    global_latents_allowed = True

    def __init__(self, *args):
        super().__init__(*args)
        self.num_points = 1

    def reduce(self, value: torch.Tensor, event_dim: int = 0) -> torch.Tensor:
        value = value.reshape((1,) * (self.nesting + 1 - value.dim()) + value.shape)
        return value.sum(tuple(range(1, value.dim()))).unsqueeze(-1).expand(self.num_chains, 1)


def _leapfrog_transition(path: _Path, state: dict, beta: float, step_size: torch.Tensor, num_leapfrog: int):
    """One HMC transition targeting f_beta for every chain and data point.

    Returns (new state, acceptance probability (C, N)).
    """
    u, a, b, grad_a, grad_b = state["u"], state["a"], state["b"], state["grad_a"], state["grad_b"]
    names = path.names
    momentum = {n: torch.randn_like(u[n]) for n in names}
    eps = {n: path.per_site(step_size, n) for n in names}

    def kinetic(p):
        return sum(path.reduce(0.5 * p[n].square(), path.event_dims[n]) for n in names)

    def grad(ga, gb):
        return {n: (1 - beta) * ga[n] + beta * gb[n] for n in names}

    h_old = -((1 - beta) * a + beta * b) + kinetic(momentum)
    g = grad(grad_a, grad_b)
    p = {n: momentum[n] + 0.5 * eps[n] * g[n] for n in names}
    new_u = dict(u)
    for step in range(num_leapfrog):
        new_u = {n: new_u[n] + eps[n] * p[n] for n in names}
        new_a, new_b, new_ga, new_gb = path.evaluate(new_u)
        g = grad(new_ga, new_gb)
        half = 0.5 if step == num_leapfrog - 1 else 1.0
        p = {n: p[n] + half * eps[n] * g[n] for n in names}
    h_new = -((1 - beta) * new_a + beta * new_b) + kinetic(p)
    accept_prob = torch.exp(torch.clamp(h_old - h_new, max=0.0)).nan_to_num(0.0)
    accept = torch.rand_like(accept_prob) < accept_prob
    keep = {
        "u": ({n: torch.where(path.per_site(accept, n), new_u[n], u[n]) for n in names}),
        "a": torch.where(accept, new_a, a),
        "b": torch.where(accept, new_b, b),
        "grad_a": {n: torch.where(path.per_site(accept, n), new_ga[n], grad_a[n]) for n in names},
        "grad_b": {n: torch.where(path.per_site(accept, n), new_gb[n], grad_b[n]) for n in names},
    }
    return keep, accept_prob


def check_applies(model, guide, x: torch.Tensor, proposal: str = "guide", max_plate_nesting: int = 1) -> None:
    """Raise ``ValueError`` saying why when AIS cannot run on ``model`` (a discrete latent, a latent
    outside the data plate, an unsupported support), by drawing one chain for the first data point."""
    _Path(model, guide, x[:1], 1, proposal, max_plate_nesting).initial()


def ais(
    model,
    guide,
    x: torch.Tensor,
    num_chains: int = 16,
    num_steps: int = 100,
    *,
    proposal: str = "guide",
    schedule: str = "sigmoid",
    num_leapfrog: int = 5,
    step_size: float | torch.Tensor = 0.1,
    adaptation: str = "pilot",
    pilot_chains: int = 4,
    target_accept: float = 0.65,
    adapt_rate: float = 2.0,
    max_plate_nesting: int = 1,
    data_chunk: int | None = None,
    chunk_elements: int = 2**22,
    reverse_from: dict[str, torch.Tensor] | None = None,
    validate: bool = False,
) -> AISResult:
    """AIS estimate of log p(x) per data point; see the module docstring.

    ``model``/``guide``: Pyro programs taking ``x`` (N, ...) with per-data-point latents in a
    "data" plate at dim -1 (``guide`` may be None with ``proposal="prior"``). ``num_chains``
    chains per data point, ``num_steps`` intermediate distributions, ``num_leapfrog`` leapfrog
    steps per HMC transition. ``step_size``: the initial step size, or a schedule (num_steps,) or
    (num_steps, N) used as is with ``adaptation="none"``; ``adaptation`` "pilot", "online" or
    "none" (module docstring). ``data_chunk`` data points per vectorised pass
    (default: as many as keep a (num_chains, points, data dimension) tensor under
    ``chunk_elements`` floats). ``reverse_from``: exact posterior draws {site: value of shape (N, ...)}; runs
    reverse AIS from them and returns the upper bound (see :func:`bdmc`).
    """
    start = time.perf_counter()
    num_chains, num_steps, num_leapfrog, pilot_chains = (whole_number(name, value) for name, value in (
        ("num_chains", num_chains), ("num_steps", num_steps), ("num_leapfrog", num_leapfrog),
        ("pilot_chains", pilot_chains)))
    adapt_rate = positive_number("adapt_rate", adapt_rate)
    _check_proposal(guide, proposal, adaptation)
    chunk = _data_chunk(x, num_chains, data_chunk, chunk_elements)
    parts = []
    common = (num_steps, proposal, schedule, num_leapfrog)
    tuning = (target_accept, adapt_rate, max_plate_nesting)
    with pyro.validation_enabled(validate):
        for lo in range(0, x.shape[0], chunk):
            rows = slice(lo, lo + chunk)
            start_from = None if reverse_from is None else {k: v[rows] for k, v in reverse_from.items()}
            given = step_size[:, rows] if torch.is_tensor(step_size) and step_size.dim() == 2 else step_size
            if adaptation == "pilot":
                pilot_size = min(pilot_chains, num_chains)
                given = _run(model, guide, x[rows], pilot_size, *common, given, True, *tuning, start_from)[3]
            online = adaptation == "online"
            parts.append(_run(model, guide, x[rows], num_chains, *common, given, online, *tuning, start_from))
    settings = {"proposal": proposal, "schedule": schedule, "num_leapfrog": num_leapfrog,
                "adaptation": adaptation}
    return _result(parts, num_chains, num_steps, reverse_from is None, settings, start)


def _check_proposal(guide, proposal: str, adaptation: str) -> None:
    if proposal == "guide" and guide is None:
        raise ValueError("proposal='guide' needs a guide; pass one or use proposal='prior'")
    if adaptation not in ADAPTATIONS:
        raise ValueError(f"unknown adaptation {adaptation!r}; choose one of {', '.join(ADAPTATIONS)}")


def _data_chunk(x: torch.Tensor, num_chains: int, data_chunk: int | None, chunk_elements: int) -> int:
    """Data points per vectorised pass: ``data_chunk``, or as many as keep a (chains, points, data
    dimension) tensor under ``chunk_elements`` floats."""
    if data_chunk is not None:
        return whole_number("data_chunk", data_chunk)
    width = max(1, x[0].numel())
    return max(1, min(x.shape[0], whole_number("chunk_elements", chunk_elements) // (num_chains * width)))


def _result(parts: list, num_chains: int, num_steps: int, forward: bool, settings: dict, start: float
            ) -> AISResult:
    """The :class:`AISResult` of the chunks' runs ``parts`` (log weights, acceptance per step,
    acceptance per point, step sizes)."""
    log_w = torch.cat([p[0] for p in parts], 1)
    stats = weight_statistics(log_w, ())
    step_sizes = torch.cat([p[3] for p in parts], 1).cpu()
    n = [p[0].shape[1] for p in parts]
    return AISResult(
        num_chains=num_chains,
        num_steps=num_steps,
        log_px=stats["log_px"] if forward else -stats["log_px"],
        log_px_se=stats["log_px_se"],
        log_weights=log_w,
        acceptance=torch.cat([p[2] for p in parts]),
        acceptance_per_step=sum(p[1] * k for p, k in zip(parts, n, strict=True)) / sum(n),
        step_size_per_step=step_sizes.mean(1),
        step_sizes=step_sizes,
        direction="forward" if forward else "reverse",
        seconds=time.perf_counter() - start,
        settings=settings,
    )


def _run(model, guide, x, num_chains, num_steps, proposal, schedule, num_leapfrog, step_size, adapt,
         target_accept, adapt_rate, max_plate_nesting, reverse_from, path_class=_Path):
    """One AIS pass over ``x``: (log weights (C, N), acceptance per step (T,), acceptance (N,),
    step sizes (T, N)), on the CPU but the step sizes (on x's device); N = 1 for the whole-data path."""
    path = path_class(model, guide, x, num_chains, proposal, max_plate_nesting)
    z0 = path.initial()
    if reverse_from is not None:
        z0 = {name: _expand_chains(reverse_from[name], z0[name]) for name in path.names}
    u = path.unconstrain(z0)
    a, b, grad_a, grad_b = path.evaluate(u)
    state = {"u": u, "a": a, "b": b, "grad_a": grad_a, "grad_b": grad_b}
    betas = beta_schedule(num_steps, schedule).tolist()
    if reverse_from is not None:
        betas = betas[::-1]
    table = None
    if torch.is_tensor(step_size) and step_size.dim() > 0:
        table = step_size.to(x).reshape(num_steps, -1).expand(num_steps, path.num_points)
    eps = table[0].clone() if table is not None else x.new_full((path.num_points,), float(step_size))
    log_w = torch.zeros_like(a)
    accept_sum = torch.zeros_like(eps)
    per_step_accept, used = [], []
    for t in range(1, num_steps + 1):
        # log f_t(z_{t-1}) - log f_{t-1}(z_{t-1}) = (beta_t - beta_{t-1}) (b - a)
        log_w = log_w + (betas[t] - betas[t - 1]) * (state["b"] - state["a"])
        if table is not None and not adapt:
            eps = table[t - 1]
        used.append(eps)
        # the last target (beta = 1 forward, 0 in reverse) needs no move for the weight
        if t == num_steps:
            per_step_accept.append(float("nan"))
            break
        state, accept_prob = _leapfrog_transition(path, state, betas[t], eps, num_leapfrog)
        mean_accept = accept_prob.mean(0)
        accept_sum = accept_sum + mean_accept
        per_step_accept.append(mean_accept.mean().item())
        if adapt:
            eps = (eps * torch.exp(adapt_rate * (mean_accept - target_accept))).clamp(1e-5, 10.0)
    moves = max(1, num_steps - 1)
    return log_w.detach().cpu(), torch.tensor(per_step_accept), (accept_sum / moves).cpu(), torch.stack(used)


def _expand_chains(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A draw (N, ...) per data point, repeated for every chain: shape of ``like`` (C, ..., N, ...)."""
    value = value.to(like)
    value = value.reshape((1,) * (like.dim() - value.dim()) + value.shape)
    return value.expand(like.shape).clone()


def ais_evidence(model, guide, x: torch.Tensor, num_chains: int = 16, num_steps: int = 100, *,
                 proposal: str = "guide", schedule: str = "sigmoid", num_leapfrog: int = 5,
                 step_size: float = 0.1, pilot_chains: int = 4, target_accept: float = 0.65,
                 adapt_rate: float = 2.0, max_plate_nesting: int = 1, validate: bool = False) -> AISResult:
    """AIS of log p(D), the whole data set ``x`` as one point, for models with global latents: every
    latent moves from f_0 (the guide, or the prior) to p(D, z), with the pilot-then-replay step sizes
    of :func:`ais` (module docstring). The guide must draw the model's latents at its own sites
    (e.g. AutoNormal), since f_0 scores them there. Returns an :class:`AISResult` with N = 1."""
    start = time.perf_counter()
    common = (num_steps, proposal, schedule, num_leapfrog)
    tuning = (target_accept, adapt_rate, max_plate_nesting, None, _WholeDataPath)
    with pyro.validation_enabled(validate):
        steps = _run(model, guide, x, min(pilot_chains, num_chains), *common, step_size, True, *tuning)[3]
        log_w, per_step, acceptance, used = _run(model, guide, x, num_chains, *common, steps, False, *tuning)
    stats = weight_statistics(log_w, ())
    return AISResult(num_chains=num_chains, num_steps=num_steps, log_px=stats["log_px"],
                     log_px_se=stats["log_px_se"], log_weights=log_w, acceptance=acceptance,
                     acceptance_per_step=per_step, step_size_per_step=used.cpu().mean(1),
                     step_sizes=used.cpu(),
                     seconds=time.perf_counter() - start,
                     settings={"proposal": proposal, "schedule": schedule, "num_leapfrog": num_leapfrog,
                               "adaptation": "pilot"})


# ---------------------------------------------------------------------------- BDMC

def simulate(model, x_template: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One ancestral draw (x, z) ~ p(x, z) for every row of ``x_template`` (which sets N and shapes).

    Runs ``poutine.uncondition(model)``: the data are the values of the sites the model observes
    (one site: its value, shape of ``x_template``; several sites of shape (N,): stacked along the
    last dim, in program order); the latents are every other sample site. Returns (x, {site: z}).
    """
    with torch.no_grad():
        trace = poutine.trace(poutine.uncondition(model)).get_trace(x_template)
    latents = {
        name: site["value"] for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site) and not site["infer"].get("was_observed")
    }
    return simulated_data(trace, x_template), latents


def simulated_data(trace, x_template: torch.Tensor) -> torch.Tensor:
    """The data of a trace of ``poutine.uncondition(model)``, shaped and typed like ``x_template``."""
    observed = [
        site["value"] for site in trace.nodes.values()
        if site["type"] == "sample" and not site_is_subsample(site) and site["infer"].get("was_observed")
    ]
    if len(observed) == 1:
        x = observed[0]
    elif observed and all(v.shape == x_template.shape[:1] for v in observed):
        x = torch.stack(observed, -1)
    else:
        raise ValueError("cannot assemble simulated data from the observed sites; the model should "
                         "observe one site of the data's shape or one (N,) site per column")
    return x.to(x_template.dtype).reshape(x_template.shape)


@dataclass
class BDMCResult:
    """Stochastic lower (forward AIS) and upper (reverse AIS) bounds on log p(x) of simulated data."""

    x: torch.Tensor
    forward: AISResult
    reverse: AISResult

    @property
    def gap(self) -> torch.Tensor:
        """Upper minus lower bound per data point, (N,)."""
        return self.reverse.log_px - self.forward.log_px

    def summary(self) -> dict:
        lower, upper = self.forward.summary(), self.reverse.summary()
        return {
            "num_data": lower["num_data"],
            "num_chains": lower["num_chains"],
            "num_steps": lower["num_steps"],
            "lower": lower["log_px"],
            "lower_se": lower["log_px_se"],
            "upper": upper["log_px"],
            "upper_se": upper["log_px_se"],
            "gap": self.gap.double().mean().item(),
            "gap_max": self.gap.max().item(),
            "acceptance_forward": lower["acceptance"],
            "acceptance_reverse": upper["acceptance"],
            "seconds": lower["seconds"] + upper["seconds"],
        }


def bdmc(model, guide, x_template: torch.Tensor, num_chains: int = 16, num_steps: int = 100,
         **ais_kwargs) -> BDMCResult:
    """Bidirectional Monte Carlo on data simulated from ``model`` (see the module docstring).

    Draws (x, z*) ~ p(x, z) with :func:`simulate` (N = rows of ``x_template``), then forward AIS
    (lower bound) from the proposal and reverse AIS (upper bound) from z*, both with the same
    ``num_chains``, ``num_steps`` and ``ais_kwargs``.
    """
    x, z = simulate(model, x_template)
    forward = ais(model, guide, x, num_chains, num_steps, **ais_kwargs)
    reverse = ais(model, guide, x, num_chains, num_steps, reverse_from=z, **ais_kwargs)
    return BDMCResult(x=x, forward=forward, reverse=reverse)


__all__ = [
    "ADAPTATIONS", "AISResult", "BDMCResult", "PROPOSALS", "SCHEDULES", "ais", "ais_evidence", "bdmc",
    "beta_schedule", "check_applies", "simulate", "simulated_data",
]
