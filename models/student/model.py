r"""The student Bayesian network of Koller & Friedman, with Dirichlet priors on its CPDs.

Five discrete variables (seed 000, "Redes bayesianas: ejemplo"): difficulty D and intelligence I
(0 = low, 1 = high), grade G in {A, B, C} (coded 0, 1, 2), SAT score S and recommendation
letter L (0/1), on the DAG D -> G <- I, I -> S, G -> L:

    p(d, i, g, s, l) = p(d) p(i) p(g | i, d) p(s | i) p(l | g),

so D ⊥ I, S ⊥ {D, G} | I and L ⊥ {I, D, S} | G. Each CPD row (one per parent configuration)
is a probability vector θ; the true network (Koller & Friedman 2009, fig. 3.4) is

    p(D) = [0.6, 0.4]           p(I) = [0.7, 0.3]
    p(G | I=0, D=0) = [0.3, 0.4, 0.3]     p(G | I=0, D=1) = [0.05, 0.25, 0.7]
    p(G | I=1, D=0) = [0.9, 0.08, 0.02]   p(G | I=1, D=1) = [0.5, 0.3, 0.2]
    p(L | G=A) = [0.1, 0.9]   p(L | G=B) = [0.4, 0.6]   p(L | G=C) = [0.99, 0.01]
    p(S | I=0) = [0.95, 0.05] p(S | I=1) = [0.2, 0.8]

Learning (Bayesian, by SVI). Every CPD row is a global latent with a Dirichlet prior,
θ_row ~ Dirichlet(α0 1) (α0 = ``prior_concentration``); the rows of one CPD form one site,
``p_G`` of shape ``(2, 2, 3)`` indexed [i, d, g] (``Dirichlet(...).to_event(2)``), ``p_S``
``(2, 2)`` [i, s], ``p_L`` ``(3, 2)`` [g, l], ``p_D`` and ``p_I`` ``(2,)``. Data points x_n =
(d, i, g, s, l) sit in the data plate; an entry coded -1 is missing and becomes a latent
``<name>_unobserved`` through ``pyro.sample(..., obs_mask=...)``, summed out exactly by
TraceEnum_ELBO (parallel enumeration, set by ``poutine.infer_config`` because pyro 1.9's
``_masked_observe`` drops a site's ``infer`` argument); a column with no missing entry is a
plain observed site, so complete data enumerate nothing (and cost ~8x less). The guide is
mean-field over rows, q(θ_row) = Dirichlet(α_row) with α_row = exp(s_row) softmax(l_row): a
strength s (``log_strength``, one per row) and a mean l (``logits``) as separate parameters, so
that Adam scales the strength's step by the strength's own gradients (with one log α per entry,
the large early gradients of the means froze Σα in Adam's second moment). With complete data
this family holds the exact posterior, Dirichlet(α0 + counts), so SVI should reach it.

``init`` sets the starting guide: "uniform" (default) starts from uniform rows, so that
training learns the tables; "random" from rows drawn from Dirichlet(1) with a fixed seed (breaks
the I-label symmetry when I is hidden); "truth" makes the posterior means equal the table above,
so ``query``/``exact_log_prob``/``sample`` answer for the true network before any training (what
``zoo query student`` without a checkpoint uses, through the spec's ``query_config``). The
starting concentration of every row sums to ``init_concentration``.

Exact posterior and how training reaches it. With complete data the posterior is conjugate,
Dirichlet(α0 + counts) row by row (:meth:`StudentNetwork.exact_posterior`;
:meth:`StudentNetwork.conjugate_update` writes it into the guide, an opt-in shortcut kept for
comparison). SVI on Pyro's one-sample ELBO moves the means quickly but the strength Σα hardly:
along log Σα the ELBO's curvature is about (K - 1) / 2 while the reparameterised gradient's noise
grows like √(row count), so Adam wanders (measured 20-60 % off after 1000-2000 steps on 20,000
rows, tests/test_student.py). Two remedies, both driven by the Pyro program:

* ``pyro_zoo.inference.train.fit_model(..., fast=True)`` (``zoo train student --fast``) trains on
  :meth:`StudentNetwork.elbo_loss`, for complete data the closed-form expectation of that same
  ELBO (E_q[log θ_k] = ψ(α_k) - ψ(Σα); held equal to Pyro's by tests/test_contract.py), whose
  exact gradient lets Adam, with the strength as its own parameter, reach the exact posterior
  (the spec's 1000 steps: every concentration within 1 %); with missing entries it is Pyro's
  TraceEnum_ELBO.
* :meth:`StudentNetwork.natural_gradient_svi` is SVI with natural-gradient steps (Hoffman, Blei,
  Wang & Paisley 2013, "Stochastic variational inference", JMLR 14): for this conjugate family
  the natural gradient of the ELBO in the natural parameters α - 1 is α0 + E[counts] - α, so a
  step of size ρ_t is

    α <- (1 - ρ_t) α + ρ_t (α0 + ĉ),    ρ_t = (t + delay)^(-forgetting),

  with ĉ the counts of the data whose missing entries are drawn from p(missing | x, θ), θ ~ q
  (Pyro's ``infer_discrete`` on the model program), scaled by N / batch for minibatches. With
  complete data ĉ are the counts and the guide converges to Dirichlet(α0 + counts) geometrically.

Exact inference ignores Pyro: the joint table p(d, i, g, s, l), shape ``(2, 2, 3, 2, 2)``, is
one ``torch.einsum`` of the CPD posterior means, and queries and log p(x) (with missing entries
summed out) are sums over it: :func:`query` takes the target and evidence as names and values
(``query("I", {"G": "C", "S": 1})`` -> ``tensor([0.4217, 0.5783])``); the text form
``"I | G=C, S=1"`` is parsed by :mod:`pyro_zoo.models.student.queries`.

Data: ``x`` is a LongTensor of shape ``(N, 5)``, columns (D, I, G, S, L), -1 = missing.
Reference: D. Koller, N. Friedman, Probabilistic Graphical Models, MIT Press 2009, sec. 3.2.
"""

from __future__ import annotations

import itertools
import math
import re

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, infer_discrete
from pyro.ops.indexing import Vindex
from torch import nn
from torch.distributions import kl_divergence

from pyro_zoo.models.base import Capabilities, DataError, DataSplit, ZooModel
from pyro_zoo.models.student.config import StudentConfig

VARIABLES = ("D", "I", "G", "S", "L")
CARDINALITY = {"D": 2, "I": 2, "G": 3, "S": 2, "L": 2}
PARENTS = {"D": (), "I": (), "G": ("I", "D"), "S": ("I",), "L": ("G",)}
LONG_NAMES = {"difficulty": "D", "intelligence": "I", "grade": "G", "sat": "S", "letter": "L"}
GRADES = ("A", "B", "C")
TRUE_CPDS = {
    "D": [0.6, 0.4],
    "I": [0.7, 0.3],
    "G": [[[0.3, 0.4, 0.3], [0.05, 0.25, 0.7]], [[0.9, 0.08, 0.02], [0.5, 0.3, 0.2]]],
    "S": [[0.95, 0.05], [0.2, 0.8]],
    "L": [[0.1, 0.9], [0.4, 0.6], [0.99, 0.01]],
}
#: the queries :meth:`StudentNetwork.metrics` reports: their text, and their event and evidence
REPORTED_QUERIES = {
    "L=1": ({"L": 1}, {}),
    "I=1 | G=C": ({"I": 1}, {"G": "C"}),
    "I=1 | G=C, S=1": ({"I": 1}, {"G": "C", "S": 1}),
    "G=A, S=1, L=1": ({"G": "A", "S": 1, "L": 1}, {}),
}


class QueryError(DataError):
    """A query string or dict that names no valid event (a ValueError the CLI reports)."""


def cpd_shape(name: str) -> tuple[int, ...]:
    """Shape of a CPD table: parents' cardinalities, then the variable's own."""
    return tuple(CARDINALITY[p] for p in PARENTS[name]) + (CARDINALITY[name],)


def true_cpds(device=None, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """The Koller–Friedman CPDs as tensors of shape :func:`cpd_shape`."""
    return {name: torch.tensor(TRUE_CPDS[name], device=device, dtype=dtype) for name in VARIABLES}


def cpd_counts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Counts of (parents, value) per CPD entry in complete data ``x`` (N, 5).

    One float64 tensor of shape :func:`cpd_shape` per variable."""
    columns = {name: x[:, j] for j, name in enumerate(VARIABLES)}
    counts = {}
    for name in VARIABLES:
        table = torch.zeros(cpd_shape(name), dtype=torch.float64, device=x.device)
        index = tuple(columns[p] for p in PARENTS[name]) + (columns[name],)
        counts[name] = table.index_put_(index, torch.ones(len(x), dtype=torch.float64, device=x.device),
                                        accumulate=True)
    return counts


def joint_table(cpds: dict[str, torch.Tensor]) -> torch.Tensor:
    """p(d, i, g, s, l) = p(d) p(i) p(g|i,d) p(s|i) p(l|g), shape (2, 2, 3, 2, 2), float64."""
    c = {name: table.double() for name, table in cpds.items()}
    # a broadcast product: 4x faster per query than the equivalent 5-operand einsum
    return (c["D"][:, None, None, None, None] * c["I"][:, None, None, None]
            * c["G"].transpose(0, 1)[:, :, :, None, None] * c["S"][:, None, :, None] * c["L"][:, None, :])


def swap_intelligence(cpds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same network with I's labels exchanged (I's CPD, and the I axes of G and S)."""
    return {**cpds, "I": cpds["I"].flip(0), "G": cpds["G"].flip(0), "S": cpds["S"].flip(0)}


def ancestral_sample(cpds: dict[str, torch.Tensor], n: int, generator=None) -> torch.Tensor:
    """``n`` draws x ~ p(d, i, g, s, l) in topological order, LongTensor of shape (n, 5)."""
    device = cpds["D"].device
    u = torch.rand(n, len(VARIABLES), generator=generator, device=device, dtype=torch.float64)
    values: dict[str, torch.Tensor] = {}
    for j, name in enumerate(VARIABLES):
        probs = cpds[name].double()[tuple(values[p] for p in PARENTS[name])]
        cdf = probs.expand(n, -1).cumsum(-1)[:, :-1]
        # inverse CDF: x = #{k < K-1 : u > F(k)}
        values[name] = (u[:, j, None] > cdf).sum(-1)
    return torch.stack([values[name] for name in VARIABLES], -1)


def _enumerate_latent(msg) -> dict:
    if msg["type"] == "sample" and not msg["is_observed"] and msg["fn"].has_enumerate_support:
        return {"enumerate": "parallel"}
    return {}


class StudentNetwork(ZooModel):
    """The student network with Dirichlet-distributed CPDs; see the module docstring."""

    capabilities = Capabilities(exact_log_prob=True, queries=True, closed_form_loss=True)

    event_shape = (len(VARIABLES),)
    data_dtype = torch.long

    def __init__(self, config: StudentConfig | None = None):
        super().__init__()
        config = StudentConfig() if config is None else config
        self.config = config
        self.prior_concentration = config.prior_concentration
        init, init_concentration = config.init, config.init_concentration
        generator = torch.Generator().manual_seed(0)
        self.log_strength = nn.ParameterDict()
        self.logits = nn.ParameterDict()
        for name in VARIABLES:
            shape = cpd_shape(name)
            if init == "truth":
                mean = torch.tensor(TRUE_CPDS[name])
            elif init == "uniform":
                mean = torch.full(shape, 1.0 / shape[-1])
            else:
                # normalised Exp(1) draws ~ Dirichlet(1)
                mean = -torch.rand(shape, generator=generator).log()
                mean = mean / mean.sum(-1, keepdim=True)
            self.log_strength[name] = nn.Parameter(torch.full(shape[:-1], math.log(init_concentration)))
            self.logits[name] = nn.Parameter(mean.log())

    # q(θ_row) = Dirichlet(α_row), α_row = exp(s_row) softmax(l_row)
    def concentration(self, name: str) -> torch.Tensor:
        return self.log_strength[name].exp()[..., None] * self.logits[name].softmax(-1)

    @torch.no_grad()
    def set_concentration(self, name: str, alpha: torch.Tensor) -> None:
        """Set q(θ_row) = Dirichlet(alpha_row) for every row of ``name``; alpha of shape :func:`cpd_shape`."""
        alpha = alpha.to(self.logits[name])
        self.log_strength[name].copy_(alpha.sum(-1).log())
        self.logits[name].copy_(alpha.log())

    def learned_cpds(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Posterior means E_q[θ] = α / Σα, one tensor of shape :func:`cpd_shape` per variable.

        Computed in float64 and returned in ``dtype`` (default: the parameters' dtype).
        """
        with torch.no_grad():
            return {name: logits.double().softmax(-1).to(dtype or logits.dtype)
                    for name, logits in self.logits.items()}

    def model(self, x: torch.Tensor, num_data: int | None = None):
        cpds = {}
        for name in VARIABLES:
            shape = cpd_shape(name)
            prior = torch.full(shape, self.prior_concentration, device=x.device)
            cpds[name] = pyro.sample(f"p_{name}", dist.Dirichlet(prior).to_event(len(shape) - 1))
        return self.network(x, cpds, num_data)

    def guide(self, x: torch.Tensor, num_data: int | None = None):
        for name in VARIABLES:
            events = len(cpd_shape(name)) - 1
            pyro.sample(f"p_{name}", dist.Dirichlet(self.concentration(name)).to_event(events))

    def elbo_loss(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """-ELBO of ``model``/``guide``, in closed form for complete data (the opt-in fast path).

        For complete data, with c the counts of the batch scaled by num_data / len(x),

            ELBO = sum_rows [ sum_k c_k (psi(alpha_k) - psi(sum alpha)) - KL(Dir(alpha) || Dir(alpha0)) ],

        the exact expectation of the Pyro ELBO's one-sample estimate (E_q[log θ_k] = psi(α_k) -
        psi(Σα)), with an exact gradient: Adam then converges to Dirichlet(α0 + counts) (Pyro's
        sampled estimate leaves Σα far off, module docstring). With missing entries it is Pyro's
        TraceEnum_ELBO itself.
        """
        if (x < 0).any():
            elbo = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False)
            return elbo.differentiable_loss(self.model, self.guide, x, num_data)
        counts = cpd_counts(x)
        scale = self.batch_scale(x, num_data)
        total = x.new_zeros((), dtype=torch.get_default_dtype())
        for name in VARIABLES:
            alpha = self.concentration(name)
            prior = torch.full_like(alpha, self.prior_concentration)
            expected_log_theta = torch.digamma(alpha) - torch.digamma(alpha.sum(-1, keepdim=True))
            total = total + scale * (counts[name].to(alpha) * expected_log_theta).sum()
            total = total - kl_divergence(dist.Dirichlet(alpha), dist.Dirichlet(prior)).sum()
        return -total

    def exact_posterior(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Concentrations of the exact posterior Dirichlet(α0 + counts), one tensor of shape
        :func:`cpd_shape` per variable (float64); complete data only."""
        self.check_data(x)
        if (x < 0).any():
            raise DataError("the exact posterior is conjugate only for complete data; this data has "
                            "missing (-1) entries: use natural_gradient_svi or SVI")
        return {name: c + self.prior_concentration for name, c in cpd_counts(x).items()}

    @torch.no_grad()
    def conjugate_update(self, x: torch.Tensor) -> StudentNetwork:
        """Set the guide to the exact posterior (an opt-in shortcut, for comparison); returns ``self``."""
        for name, alpha in self.exact_posterior(x).items():
            self.set_concentration(name, alpha)
        return self

    @torch.no_grad()
    def natural_gradient_svi(self, x: torch.Tensor, steps: int = 100, *, forgetting: float = 0.6,
                             delay: float = 1.0, batch_size: int | None = None) -> list[float]:
        """SVI with natural-gradient steps (see the module docstring); returns ρ_t per step.

        ``forgetting`` in (0.5, 1] and ``delay`` >= 0 set ρ_t = (t + delay)^(-forgetting), t = 1..steps;
        ``batch_size`` rows per step (default: all), slices of a fresh permutation every epoch (the
        ``len(x) % batch_size`` rows left over in an epoch wait for the next). Uses torch's global RNG.
        """
        self.check_data(x)
        if not 0.5 < forgetting <= 1 or delay < 0:
            raise DataError("natural_gradient_svi needs 0.5 < forgetting <= 1 and delay >= 0")
        rates, batch_size = [], min(batch_size or len(x), len(x))
        per_epoch = len(x) // batch_size
        for t in range(1, steps + 1):
            position = (t - 1) % per_epoch
            if position == 0:
                order = torch.randperm(len(x), device=x.device)
            batch = x[order[position * batch_size:(position + 1) * batch_size]]
            counts = cpd_counts(self._completed(batch))
            rho = (t + delay) ** -forgetting
            for name, c in counts.items():
                target = self.prior_concentration + c * (len(x) / len(batch))
                alpha = self.concentration(name).double()
                self.set_concentration(name, (1 - rho) * alpha + rho * target)
            rates.append(rho)
        return rates

    def _completed(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with every missing entry drawn from p(missing | x, θ), θ ~ q, by Pyro's infer_discrete."""
        if (x >= 0).all():
            return x
        theta = {site["name"]: site["value"] for site in poutine.trace(self.guide).get_trace(x).nodes.values()
                 if site["type"] == "sample"}
        model = poutine.condition(self.model, data=theta)
        values = infer_discrete(model, first_available_dim=-2)(x)
        return torch.stack([values[name].reshape(-1).long() for name in VARIABLES], -1)

    def network(self, x: torch.Tensor, cpds: dict[str, torch.Tensor], num_data: int | None = None):
        """The five variables of every row given CPDs (batch shape ``(..., *cpd_shape)``).

        In a column with missing (-1) entries the site is split by ``obs_mask``: the latent
        ``<name>_unobserved`` (shape (..., N), enumerated in parallel under TraceEnum_ELBO, masked
        to the missing rows) and ``<name>_observed``; ``<name>`` is the merged value. A fully
        observed column is one observed site ``<name>``.
        """
        values: dict[str, torch.Tensor] = {}
        with self.data_plate(x, num_data), poutine.infer_config(config_fn=_enumerate_latent):
            for j, name in enumerate(VARIABLES):
                table = cpds[name]
                parents = tuple(values[p] for p in PARENTS[name])
                probs = Vindex(table)[(Ellipsis, *parents, slice(None))] if parents else table
                column = x[:, j]
                observed = column >= 0
                # a fully observed column needs no latent part (and no enumeration)
                mask = None if observed.all() else observed
                values[name] = pyro.sample(
                    name, dist.Categorical(probs), obs=column.clamp(min=0), obs_mask=mask
                )
        return values

    def local_pair(self):
        """p(x, missing entries) with CPDs fixed at their posterior means, and an empty guide."""
        cpds = self.learned_cpds()

        def local_model(x, num_data=None):
            return self.network(x, cpds, num_data)

        def local_guide(x, num_data=None):
            return None

        return local_model, local_guide

    def sample(self, n: int) -> torch.Tensor:
        """``n`` ancestral draws from the posterior-mean network, LongTensor of shape (n, 5)."""
        return ancestral_sample(self.learned_cpds(torch.float64), n)

    def joint(self) -> torch.Tensor:
        """The joint table of the posterior-mean network, shape (2, 2, 3, 2, 2), float64."""
        return joint_table(self.learned_cpds(torch.float64))

    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_n) = log Σ_{missing entries} p(d, i, g, s, l), shape (N,), float32."""
        self.check_data(x)
        return evidence_log_prob(self.joint(), x).float()

    def query(self, target, evidence: dict | None = None) -> torch.Tensor:
        """Exact posterior of ``target`` given ``evidence`` under the posterior-mean network.

        See :func:`query`.
        """
        return query(target, evidence, self.learned_cpds(torch.float64))

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        check_values(x)

    def metrics(self, data: DataSplit) -> dict:
        """CPD errors against the true table, query answers, exact mean log p(x) in nats; on complete
        training data (``data.info["split"] == "train"``, e.g. ``zoo eval student --split train``) also
        the guide against the exact posterior given those data (:meth:`posterior_comparison`)."""
        learned = self.learned_cpds(torch.float64)
        truth = true_cpds(device=self.device)
        x = data.x.to(self.device)
        return {
            "max_abs_cpd_error": max_abs_cpd_error(learned, truth),
            "max_abs_cpd_error_up_to_I_swap": min(
                max_abs_cpd_error(learned, truth), max_abs_cpd_error(swap_intelligence(learned), truth)
            ),
            "queries": {
                text: {"learned": query(event, evidence, learned).item(),
                       "true": query(event, evidence).item()}
                for text, (event, evidence) in REPORTED_QUERIES.items()
            },
            "exact_log_lik_nats": self.exact_log_prob(x).mean().item(),
            "true_network_log_lik_nats": evidence_log_prob(joint_table(truth), x).mean().item(),
            **({"guide_vs_exact_posterior": self.posterior_comparison(x)}
               if data.info.get("split") == "train" and not (x < 0).any() else {}),
        }

    def posterior_comparison(self, x: torch.Tensor) -> dict:
        """Guide concentrations against Dirichlet(α0 + counts of ``x``) (complete data): worst relative
        error of a concentration, of a row's strength Σα, and of a posterior mean."""
        exact = self.exact_posterior(x)
        worst = {"concentration": 0.0, "strength": 0.0, "mean": 0.0}
        for name, alpha in exact.items():
            guide = self.concentration(name).detach().double()
            strength, exact_strength = guide.sum(-1), alpha.sum(-1)
            mean_error = (guide / strength[..., None] - alpha / exact_strength[..., None]).abs()
            worst["concentration"] = max(worst["concentration"], ((guide - alpha).abs() / alpha).max().item())
            strength_error = ((strength - exact_strength).abs() / exact_strength).max().item()
            worst["strength"] = max(worst["strength"], strength_error)
            worst["mean"] = max(worst["mean"], mean_error.max().item())
        return {
            "exact": "Dirichlet(prior_concentration + counts of the evaluated data), row by row",
            "max_rel_error_concentration": worst["concentration"],
            "max_rel_error_strength": worst["strength"],
            "max_abs_error_mean": worst["mean"],
        }


def check_values(x: torch.Tensor) -> None:
    """Raise :class:`DataError` unless every entry is -1 (missing) or a value of its column."""
    high = torch.tensor([CARDINALITY[name] - 1 for name in VARIABLES], device=x.device)
    bad = (x < -1) | (x > high)
    if bad.any():
        row, col = bad.nonzero()[0].tolist()
        name = VARIABLES[col]
        raise DataError(
            f"column {name} holds {x[row, col].item()} in row {row}, but {name} takes values "
            f"0..{CARDINALITY[name] - 1} (or -1 for missing); recode the data"
        )


def max_abs_cpd_error(cpds: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """max over all CPD entries of |θ - θ_ref|."""
    return max((cpds[n].double().cpu() - reference[n].double().cpu()).abs().max().item() for n in VARIABLES)


def evidence_log_prob(joint: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Σ p(d, i, g, s, l) over each row's missing (-1) entries, shape (N,), float64."""
    # e_n[v, k] = 1[x_nv = k] if observed else 1
    joint = joint.to(x.device)
    factors = []
    for j, name in enumerate(VARIABLES):
        column = x[:, j]
        onehot = nn.functional.one_hot(column.clamp(min=0), CARDINALITY[name]).to(joint)
        factors.append(torch.where((column >= 0)[:, None], onehot, torch.ones_like(onehot)))
    return torch.einsum("digsl,nd,ni,ng,ns,nl->n", joint, *factors).log()


# ---------------------------------------------------------------------------- names and values

def quoted(text, chars: int = 80) -> str:
    """``repr(text)``, cut to ``chars`` characters so that an error message stays one short line."""
    text = str(text)
    return repr(text) if len(text) <= chars else f"{text[:chars]!r}... ({len(text)} characters)"


def variable(token: str) -> str:
    """The variable ``token`` names: "I", "i" or "intelligence" -> "I"; else :class:`QueryError`."""
    key = token.strip()
    name = key.upper() if key.upper() in VARIABLES else LONG_NAMES.get(key.lower())
    if name is None:
        raise QueryError(
            f"unknown variable {quoted(token.strip())}; use D, I, G, S or L "
            "(difficulty, intelligence, grade, sat, letter)"
        )
    return name


def code(name: str, value) -> int:
    """The code 0..K-1 of ``value`` of variable ``name``: an int, a string of digits, or for G a grade
    "A", "B", "C"; else :class:`QueryError` naming the values it takes."""
    if isinstance(value, str):
        text = value.strip()
        if name == "G" and text.upper() in GRADES:
            return GRADES.index(text.upper())
        if not re.fullmatch(r"-?\d+", text):
            kind = "a grade" if name == "G" else "an integer"
            raise QueryError(f"value {quoted(text)} of {name} is not {kind}{_values_hint(name)}")
        if len(text) > 3:
            raise QueryError(f"{name}={quoted(text, 20)} is out of range{_values_hint(name)}")
        value = int(text)
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < CARDINALITY[name]:
        raise QueryError(f"{name}={value!r} is out of range{_values_hint(name)}")
    return value


def _values_hint(name: str) -> str:
    if name == "G":
        return "; G takes A, B, C (or 0, 1, 2)"
    return f"; {name} takes 0 or 1"


def configurations(names) -> list[tuple[int, ...]]:
    """All joint values of ``names`` in row-major order (one empty tuple for no names)."""
    return list(itertools.product(*[range(CARDINALITY[n]) for n in names]))


def label(name: str, value: int) -> str:
    """``name=value`` as the answers write it: "G=A" for a grade, "I=1" otherwise."""
    return f"{name}={GRADES[value] if name == 'G' else value}"


def _assignments(items: dict, role: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in items.items():
        name = variable(key)
        if name in out:
            raise QueryError(f"{name} appears twice in the {role}; give each variable once")
        out[name] = code(name, value)
    return out


def query(target, evidence: dict | None = None, cpds: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Exact p(target | evidence) by summing the joint table of ``cpds`` (default: the truth).

    ``target``: a variable name ("I") -> its posterior, shape (K,); a list of names
    (["I", "L"]) -> their joint posterior, shape (K_1, K_2, ...) in that order; a dict of values
    ({"G": "A", "S": 1}) -> the probability of that event, shape (). ``evidence``: a dict of
    observed values, e.g. {"G": "C", "S": 1} (G takes "A"/"B"/"C" or 0/1/2). float64.
    """
    joint = joint_table(cpds if cpds is not None else true_cpds())
    if not torch.isfinite(joint).all():
        raise QueryError("the network's CPDs are not finite (NaN or infinite parameters); retrain it "
                         "or query another checkpoint")
    # p(v | e) ∝ p(v) Π_{(u, k) in e} 1[v_u = k]
    for name, value in _assignments(dict(evidence or {}), "evidence").items():
        axis = VARIABLES.index(name)
        indicator = nn.functional.one_hot(torch.tensor(value), CARDINALITY[name]).to(joint)
        joint = joint * indicator.reshape([-1 if a == axis else 1 for a in range(len(VARIABLES))])
    norm = joint.sum()
    if norm <= 0:
        raise QueryError("the evidence has probability zero under this network; change the evidence")
    event = _assignments(target, "target") if isinstance(target, dict) else None
    if event is None:
        names = [variable(t) for t in ([target] if isinstance(target, str) else list(target))]
        if len(set(names)) != len(names):
            raise QueryError("a target variable is named twice; name each target once")
    else:
        names = list(event)
    if not names:
        raise QueryError("the query has no target; write e.g. 'I | G=C, S=1'")
    kept = sorted(names, key=VARIABLES.index)
    summed = [a for a, n in enumerate(VARIABLES) if n not in kept]
    marginal = (joint.sum(summed) if summed else joint) / norm
    marginal = marginal.permute([kept.index(n) for n in names])
    return marginal if event is None else marginal[tuple(event.values())]


__all__ = [
    "CARDINALITY", "GRADES", "LONG_NAMES", "PARENTS", "QueryError", "REPORTED_QUERIES", "StudentNetwork",
    "TRUE_CPDS", "VARIABLES", "ancestral_sample", "check_values", "code", "configurations", "cpd_counts",
    "cpd_shape", "evidence_log_prob", "joint_table", "label", "max_abs_cpd_error", "query", "quoted",
    "swap_intelligence", "true_cpds", "variable",
]
