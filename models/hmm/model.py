r"""Hidden Markov model with K discrete states, its states summed by enumeration (Rabiner, 1989).

Generative story, for each sequence n = 1..N of T steps (global latents drawn once)::

    pi ~ Dirichlet(alpha 1_K)                          initial state probabilities     "initial"
    A_k ~ Dirichlet(alpha 1_K),  k = 1..K              transition rows, A (K, K)       "transition"
    emissions, Gaussian:    mu_1 ~ N(0, 2^2),  mu_k = mu_{k-1} + g_k,  g_k ~ LogNormal(0, 1)
                                                       ordered means ("loc_base", "loc_gaps")
                            s_k ~ LogNormal(0, 1)      state sds ("scales")
               categorical: B_k ~ Dirichlet(alpha 1_V)  symbol probabilities, B (K, V)  "emission"
    z_n1 ~ Categorical(pi),   z_nt | z_n,t-1 ~ Categorical(A_{z_n,t-1})      states "z_t"
    x_nt | z_nt ~ N(mu_{z_nt}, s_{z_nt}^2)   or   Categorical(B_{z_nt})         data "x_t"

The means are ordered (mu_1 < ... < mu_K) so that the states have labels: an exchangeable
prior makes the posterior symmetric under relabelling, and no unimodal guide (nor SBC rank) could
describe it. Categorical emissions keep the exchangeable Dirichlet prior: their guide picks one
labelling, which SBC would rightly flag, so SBC is meant for the Gaussian variant.

The global latents theta = (pi, A, emission parameters) are random (global latent sites, outside
the "data" plate); their guide is an AutoGuide (``guide`` = "delta": MAP, "normal": mean-field,
"mvn": full-covariance Gaussian, in unconstrained coordinates). The states are local (inside the
data plate) and discrete: the model marks them ``infer={"enumerate": "parallel"}`` inside
``pyro.markov`` (each z_t depends on z_t-1 only, so Pyro recycles two enumeration dims) and
``TraceEnum_ELBO`` sums them exactly. The ELBO is then

    E_q(theta)[log p(theta) + sum_n log p(x_n | theta) - log q(theta)],

with log p(x_n | theta) = log sum_z p(x_n, z | theta) the forward algorithm's value.

Exact per-sequence quantities at a point theta (the guide's median, :meth:`HMM.point_estimate`):

    forward:   a_1(k) = pi_k p(x_1 | k),  a_t(k) = sum_j a_t-1(j) A_jk p(x_t | k),
               log p(x | theta) = log sum_k a_T(k)
    backward:  b_T(k) = 1,  b_t(j) = sum_k A_jk p(x_t+1 | k) b_t+1(k)
    marginals: p(z_t = k | x, theta) = a_t(k) b_t(k) / p(x | theta)
    Viterbi:   argmax_z p(z | x, theta), by max-product with back-pointers

all in log space (:func:`forward`, :func:`backward`, :func:`posterior_marginals`, :func:`viterbi`),
O(N T K^2). ``local_pair()`` is the model of the states given that theta, so importance sampling
and the exact value score the same p(x_n | theta).

Shapes: ``x`` (N, T) float (Gaussian) or long in 0..V-1 (categorical); "initial" (K,),
"transition" (K, K), "loc_base" (), "loc_gaps" (K-1,), "scales" (K,), "emission" (K, V);
``exact_log_prob(x)`` (N,), ``posterior_marginals`` (N, T, K), ``viterbi`` (N, T).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal
from pyro.ops.indexing import Vindex

from pyro_zoo.models.base import Capabilities, DataError, DataSplit, ZooModel, check_fits_memory
from pyro_zoo.models.hmm.config import HMMConfig

AUTOGUIDES = {"delta": AutoDelta, "normal": AutoNormal, "mvn": AutoMultivariateNormal}
GLOBALS = {"gaussian": ("initial", "transition", "loc_base", "loc_gaps", "scales"),
           "categorical": ("initial", "transition", "emission")}
#: prior sd of the lowest state mean (data in standard units)
LOC_PRIOR_SCALE = 2.0
#: bytes one time step of the program holds beyond its tensors (trace sites, packed copies,
#: autograd graph): measured 80-90 kB as the peak-RSS growth of one TraceEnum_ELBO loss and backward on
#: one sequence of 500 and of 2000 steps
STEP_BYTES = 90_000
#: float copies of the (N, K, K) factor per step (log-prob, packed, contraction, gradient)
STEP_COPIES = 8


class HMM(ZooModel):
    """Bayesian HMM with enumerated states; see the module docstring."""

    capabilities = Capabilities(exact_log_prob=True, exact_posterior=True, sequences=True)

    def __init__(self, config: HMMConfig | None = None):
        super().__init__()
        config = HMMConfig() if config is None else config
        self.config = config
        self.num_states, self.emission = config.num_states, config.emission
        self.event_shape = (config.length,)
        self.data_dtype = torch.float32 if self.emission == "gaussian" else torch.long
        self.register_buffer("anchor", torch.zeros(()))  # gives the module a device before the guide exists
        exposed = poutine.block(self.model, expose=list(GLOBALS[self.emission]))
        self.autoguide = AUTOGUIDES[config.guide](exposed)
        # run the guide once so that it creates its parameters now (they depend on K and V only);
        # forward, not __call__, which would also put them in Pyro's global param store, where a
        # model built later would share them
        with torch.no_grad():
            self.autoguide.forward(self.anchor.new_zeros(1, 1, dtype=self.data_dtype))

    # p(theta): the global latents, outside the data plate
    def global_latents(self) -> dict[str, torch.Tensor]:
        k, alpha = self.num_states, self.config.concentration
        ones = self.anchor.new_ones(k)
        rows = dist.Dirichlet(alpha * ones.expand(k, k)).to_event(1)
        params = {"initial": pyro.sample("initial", dist.Dirichlet(alpha * ones)),
                  "transition": pyro.sample("transition", rows)}
        if self.emission == "categorical":
            symbols = self.anchor.new_ones(k, self.config.num_symbols)
            params["emission"] = pyro.sample("emission", dist.Dirichlet(alpha * symbols).to_event(1))
            return params
        params["loc_base"] = pyro.sample("loc_base", dist.Normal(self.anchor, LOC_PRIOR_SCALE))
        gaps = dist.LogNormal(self.anchor.new_zeros(k - 1), 1.0).to_event(1)
        params["loc_gaps"] = pyro.sample("loc_gaps", gaps)
        params["scales"] = pyro.sample("scales", dist.LogNormal(self.anchor.new_zeros(k), 1.0).to_event(1))
        return params

    def model(self, x: torch.Tensor, num_data: int | None = None):
        self.sequences(x, self.global_latents(), num_data)

    # q(theta): the AutoGuide; the states are enumerated in the model, absent here
    def guide(self, x: torch.Tensor, num_data: int | None = None):
        return self.autoguide(x, num_data)

    # p(x, z | theta) = prod_n pi_{z_n1} p(x_n1 | z_n1) prod_t A_{z_n,t-1 z_nt} p(x_nt | z_nt)
    def sequences(self, x: torch.Tensor, params: dict, num_data: int | None = None):
        with self.data_plate(x, num_data):
            z = None
            for t in pyro.markov(range(x.shape[1])):
                probs = params["initial"] if z is None else Vindex(params["transition"])[..., z, :]
                z = pyro.sample(f"z_{t}", dist.Categorical(probs), infer={"enumerate": "parallel"})
                pyro.sample(f"x_{t}", self.emission_dist(params, z), obs=x[:, t])

    def emission_dist(self, params: dict, z: torch.Tensor) -> dist.Distribution:
        """p(x_t | z_t) for a tensor of states ``z`` (batch shape broadcast from ``z``)."""
        if self.emission == "categorical":
            return dist.Categorical(Vindex(params["emission"])[..., z, :])
        locs, scales = state_locs(params), params["scales"]
        return dist.Normal(Vindex(locs)[..., z], Vindex(scales)[..., z])

    def local_pair(self):
        """The states given theta = the guide's median: ``(model, None)``; with no guide the
        estimators sum the enumerated states exactly (see ``pyro_zoo.inference.importance``)."""
        params = self.point_estimate()

        def local_model(x: torch.Tensor, num_data: int | None = None):
            self.sequences(x, params, num_data)

        return local_model, None

    @torch.no_grad()
    def point_estimate(self) -> dict[str, torch.Tensor]:
        """The guide's median of each global latent, constrained: {site: tensor}."""
        return {name: value.detach() for name, value in self.autoguide.median().items()}

    def log_factors(self, x: torch.Tensor, params: dict | None = None):
        """(log pi (K,), log A (K, K), log p(x_nt | z_nt = k) (N, T, K)) at ``params`` (default:
        :meth:`point_estimate`)."""
        params = self.point_estimate() if params is None else params
        states = torch.arange(self.num_states, device=x.device)
        log_e = self.emission_dist(params, states).log_prob(x.unsqueeze(-1))
        return params["initial"].log(), params["transition"].log(), log_e

    @torch.no_grad()
    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_n | theta) per sequence by the forward algorithm, (N,), at the point estimate."""
        return forward(*self.log_factors(x))[:, -1].logsumexp(-1)

    @torch.no_grad()
    def exact_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """p(z_nt = k | x_n, theta) by forward-backward, (N, T, K)."""
        return posterior_marginals(*self.log_factors(x))

    @torch.no_grad()
    def most_likely_states(self, x: torch.Tensor) -> torch.Tensor:
        """The Viterbi path argmax_z p(z | x_n, theta) per sequence, (N, T) long."""
        return viterbi(*self.log_factors(x))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` sequences x ~ p(x | theta) at the point estimate, shape (n, length)."""
        params = self.point_estimate()
        z = dist.Categorical(params["initial"]).sample((n,))
        steps = []
        for t in range(self.config.length):
            if t:
                z = dist.Categorical(params["transition"][z]).sample()
            steps.append(self.emission_dist(params, z).sample())
        return torch.stack(steps, 1).to(self.data_dtype)

    def check_data(self, x) -> None:
        super().check_data(x)
        if self.emission == "categorical" and (x.min() < 0 or x.max() >= self.config.num_symbols):
            raise DataError(f"categorical emissions take symbols 0..{self.config.num_symbols - 1}, got "
                            f"values from {int(x.min())} to {int(x.max())}; set num_symbols or recode")
        check_sequence_memory(x.shape[0], x.shape[1], self.num_states)

    @torch.no_grad()
    def metrics(self, data: DataSplit) -> dict:
        """The point estimate of theta and, with true states in ``data.info``, the Viterbi accuracy."""
        params = self.point_estimate()
        out = {"transition_median": {"value": params["transition"].tolist(), "unit": "probability"}}
        if self.emission == "gaussian":
            out["state_locs_median"] = {"value": state_locs(params).tolist(), "unit": "data units"}
        states = data.info.get("states")
        if states is not None:
            accuracy = (self.most_likely_states(data.x) == states.to(data.x.device)).double().mean()
            out["viterbi_accuracy"] = {"value": accuracy.item(), "unit": "fraction of steps"}
        return out


def state_locs(params: dict) -> torch.Tensor:
    """Ordered state means mu_1 = base, mu_k = base + g_2 + ... + g_k, shape (..., K)."""
    base = params["loc_base"].unsqueeze(-1)
    return torch.cat([base, base + params["loc_gaps"].cumsum(-1)], -1)


def check_sequence_memory(num_sequences: int, length: int, num_states: int) -> None:
    """Refuse sequences whose enumerated program would not fit in a quarter of the free memory."""
    need = length * (num_sequences * num_states**2 * 4 * STEP_COPIES + STEP_BYTES)
    what = f"{num_sequences} sequences of T = {length} steps with {num_states} enumerated states"
    check_fits_memory(need, what, "cut them into shorter sequences")


def forward(log_pi: torch.Tensor, log_a: torch.Tensor, log_e: torch.Tensor) -> torch.Tensor:
    """log a_t(k) = log p(x_1..x_t, z_t = k), shape (N, T, K), from log pi (K,), log A (K, K) and
    the emission log-likelihoods log_e (N, T, K)."""
    alpha = [log_pi + log_e[:, 0]]
    for t in range(1, log_e.shape[1]):
        alpha.append((alpha[-1].unsqueeze(-1) + log_a).logsumexp(-2) + log_e[:, t])
    return torch.stack(alpha, 1)


def backward(log_a: torch.Tensor, log_e: torch.Tensor) -> torch.Tensor:
    """log b_t(j) = log p(x_t+1..x_T | z_t = j), shape (N, T, K)."""
    beta = [torch.zeros_like(log_e[:, -1])]
    for t in range(log_e.shape[1] - 1, 0, -1):
        beta.append((log_a + (log_e[:, t] + beta[-1]).unsqueeze(-2)).logsumexp(-1))
    return torch.stack(beta[::-1], 1)


def posterior_marginals(log_pi: torch.Tensor, log_a: torch.Tensor, log_e: torch.Tensor) -> torch.Tensor:
    """p(z_t = k | x) = a_t(k) b_t(k) / p(x), shape (N, T, K)."""
    log_joint = forward(log_pi, log_a, log_e) + backward(log_a, log_e)
    return (log_joint - log_joint.logsumexp(-1, keepdim=True)).exp()


def viterbi(log_pi: torch.Tensor, log_a: torch.Tensor, log_e: torch.Tensor) -> torch.Tensor:
    """The most probable state path per sequence, (N, T) long: max-product with back-pointers."""
    score, pointers = log_pi + log_e[:, 0], []
    for t in range(1, log_e.shape[1]):
        score, best = (score.unsqueeze(-1) + log_a).max(-2)
        score = score + log_e[:, t]
        pointers.append(best)
    path = [score.argmax(-1)]
    for best in reversed(pointers):
        path.append(best.gather(-1, path[-1].unsqueeze(-1)).squeeze(-1))
    return torch.stack(path[::-1], 1)


def objective(config: HMMConfig) -> dict:
    """TraceEnum_ELBO: the states enumerated in parallel and summed exactly."""
    return {"name": "TraceEnum_ELBO"}


__all__ = [
    "AUTOGUIDES", "GLOBALS", "HMM", "backward", "check_sequence_memory", "forward", "objective",
    "posterior_marginals", "state_locs", "viterbi"
]
