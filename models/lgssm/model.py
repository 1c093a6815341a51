r"""Linear-Gaussian state space model, with a filtering guide over its T x d local latents.

Generative story, for each sequence n = 1..N of T steps (Kalman, 1960; Durbin & Koopman, 2012)::

    x_n1 ~ N(m_0, diag(s_0^2))                         latent state in R^d       "x_0"
    x_nt | x_n,t-1 ~ N(A x_n,t-1, diag(q^2))           t = 2..T                  "x_t"
    y_nt | x_nt ~ N(C x_nt, diag(r^2))                 observation in R^D        "y_t"

A (d, d), C (D, d), m_0, s_0, q (d,) and r (D,) are point estimates (``nn.Parameter``s; the sds
through softplus), learned by maximising the ELBO. With d = D = 1 and A = C = 1 this is the
local-level model of the Nile flows (Durbin & Koopman, chapter 2).

Guide (structured, amortised, Markov like the model): each state given the previous one and the
current observation,

    q(x_n1 | y_n1) = N(G_0 y_n1 + b_0, diag(u_0^2)),
    q(x_nt | x_n,t-1, y_nt) = N(F x_n,t-1 + G y_nt + b, diag(u^2)),

written with ``pyro.markov`` like the model. It cannot see future observations, which the exact
posterior uses, so its ELBO gap grows with T and importance sampling from it degrades with T
(the weights' variance grows exponentially), while AIS moves the draws towards the posterior.

Exact answers at the point estimates, in the model's own code: the Kalman filter gives

    log p(y_n) = sum_t log N(y_nt; C m_t|t-1, C P_t|t-1 C^T + diag(r^2)),

and the Rauch-Tung-Striebel smoother the posterior p(x_nt | y_n) = N(m_t|T, P_t|T)
(:func:`kalman_filter`, :func:`rts_smoother`). The covariances do not depend on the data, so
they are shared by all sequences: O(T d^3 + N T d^2).

Shapes: ``y`` (N, T, D); sites "x_t" (N, d) and "y_t" (N, D) with event dims 1;
``exact_log_prob(y)`` (N,); ``exact_posterior(y)`` = (means (N, T, d), covariances (T, d, d)).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyro_zoo.models.base import Capabilities, DataSplit, ZooModel, check_fits_memory
from pyro_zoo.models.lgssm.config import LGSSMConfig

#: smallest noise sd (softplus(.) + MIN_SD), so that no covariance becomes singular
MIN_SD = 1e-3
#: bytes one time step of the program holds beyond its tensors (trace sites, packed copies,
#: autograd graph): measured 80-90 kB as the peak-RSS growth of one Trace_ELBO loss and backward on
#: one sequence of 500 and of 2000 steps
STEP_BYTES = 90_000
#: float copies of the (N, d + D) values per step (values, log-probs, gradients)
STEP_COPIES = 8


def positive(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw) + MIN_SD


def inverse_positive(value: float) -> float:
    return math.log(math.expm1(value - MIN_SD))


class LGSSM(ZooModel):
    """Linear-Gaussian state space model with a filtering guide; see the module docstring."""

    capabilities = Capabilities(exact_log_prob=True, exact_posterior=True, sequences=True)

    def __init__(self, config: LGSSMConfig | None = None):
        super().__init__()
        config = LGSSMConfig() if config is None else config
        self.config = config
        d, obs = config.state_dim, config.obs_dim
        self.event_shape = (config.length, obs)
        self.transition = nn.Parameter(0.9 * torch.eye(d))
        self.emission = nn.Parameter(torch.eye(obs, d))
        self.init_loc = nn.Parameter(torch.zeros(d))
        self.raw_init_sd = nn.Parameter(torch.full((d,), inverse_positive(1.0)))
        self.raw_process_sd = nn.Parameter(torch.full((d,), inverse_positive(0.3)))
        self.raw_obs_sd = nn.Parameter(torch.full((obs,), inverse_positive(0.5)))
        self.guide_transition = nn.Parameter(torch.zeros(d, d))
        self.guide_gain = nn.Parameter(torch.zeros(d, obs))
        self.guide_bias = nn.Parameter(torch.zeros(d))
        self.raw_guide_sd = nn.Parameter(torch.full((d,), inverse_positive(0.5)))
        self.first_gain = nn.Parameter(torch.zeros(d, obs))
        self.first_bias = nn.Parameter(torch.zeros(d))
        self.raw_first_sd = nn.Parameter(torch.full((d,), inverse_positive(1.0)))

    def model(self, y: torch.Tensor, num_data: int | None = None):
        init_sd, process_sd, obs_sd = (positive(p) for p in (self.raw_init_sd, self.raw_process_sd,
                                                             self.raw_obs_sd))
        with self.data_plate(y, num_data):
            x = None
            for t in pyro.markov(range(y.shape[1])):
                # p(x_1) = N(m_0, diag(s_0^2)), p(x_t | x_t-1) = N(A x_t-1, diag(q^2))
                prior = (dist.Normal(self.init_loc, init_sd) if x is None
                         else dist.Normal(x @ self.transition.T, process_sd))
                x = pyro.sample(f"x_{t}", prior.to_event(1))
                # p(y_t | x_t) = N(C x_t, diag(r^2))
                pyro.sample(f"y_{t}", dist.Normal(x @ self.emission.T, obs_sd).to_event(1), obs=y[:, t])

    def guide(self, y: torch.Tensor, num_data: int | None = None):
        first_sd, guide_sd = positive(self.raw_first_sd), positive(self.raw_guide_sd)
        with self.data_plate(y, num_data):
            x = None
            for t in pyro.markov(range(y.shape[1])):
                # q(x_1 | y_1) = N(G_0 y_1 + b_0, u_0^2), q(x_t | x_t-1, y_t) = N(F x_t-1 + G y_t + b, u^2)
                if x is None:
                    loc, sd = y[:, t] @ self.first_gain.T + self.first_bias, first_sd
                else:
                    loc = x @ self.guide_transition.T + y[:, t] @ self.guide_gain.T + self.guide_bias
                    sd = guide_sd
                x = pyro.sample(f"x_{t}", dist.Normal(loc, sd).to_event(1))

    def matrices(self, dtype=torch.float64) -> dict[str, torch.Tensor]:
        """The model's parameters as matrices in ``dtype``: A, C, m_0, P_0, Q, R."""
        as_cov = lambda raw: positive(raw).to(dtype).square().diag_embed()  # noqa: E731
        return {"A": self.transition.to(dtype), "C": self.emission.to(dtype), "m0": self.init_loc.to(dtype),
                "P0": as_cov(self.raw_init_sd), "Q": as_cov(self.raw_process_sd),
                "R": as_cov(self.raw_obs_sd)}

    @torch.no_grad()
    def exact_log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """log p(y_n) per sequence by the Kalman filter, (N,), computed in float64."""
        return kalman_filter(y.double(), **self.matrices())["log_prob"].to(y.dtype)

    @torch.no_grad()
    def exact_posterior(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(x_nt | y_n) = N(means[n, t], covariances[t]) by the RTS smoother (float64)."""
        return rts_smoother(kalman_filter(y.double(), **self.matrices()), self.matrices()["A"])

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` sequences y ~ p(y), shape (n, length, obs_dim)."""
        init_sd, process_sd, obs_sd = (positive(p) for p in (self.raw_init_sd, self.raw_process_sd,
                                                             self.raw_obs_sd))
        x = self.init_loc + init_sd * torch.randn(n, self.config.state_dim, device=self.device)
        steps = []
        for t in range(self.config.length):
            if t:
                x = x @ self.transition.T + process_sd * torch.randn_like(x)
            y = x @ self.emission.T
            steps.append(y + obs_sd * torch.randn_like(y))
        return torch.stack(steps, 1)

    def check_data(self, y) -> None:
        super().check_data(y)
        need = y.shape[1] * (y.shape[0] * (self.config.state_dim + self.config.obs_dim) * 4 * STEP_COPIES
                             + STEP_BYTES)
        check_fits_memory(need, f"{y.shape[0]} sequences of T = {y.shape[1]} steps",
                          "cut them into shorter sequences")

    @torch.no_grad()
    def metrics(self, data: DataSplit) -> dict:
        """The fitted matrices, and the smoother's RMSE against true states where ``data`` has them."""
        m = self.matrices()
        out = {"transition": {"value": m["A"].tolist()},
               "process_sd": {"value": m["Q"].diagonal().sqrt().tolist()},
               "obs_sd": {"value": m["R"].diagonal().sqrt().tolist(), "unit": "data units"}}
        states = data.info.get("states")
        if states is not None:
            means, _ = self.exact_posterior(data.x.to(self.device))
            rmse = (means - states.to(means)).square().mean().sqrt()
            out["smoother_rmse"] = {"value": rmse.item(), "unit": "latent units"}
        return out


def kalman_filter(y: torch.Tensor, A, C, m0, P0, Q, R) -> dict[str, torch.Tensor]:
    """Kalman filter of y (N, T, D): log p(y_n) (N,), filtered means (N, T, d) and covariances
    (T, d, d), and the one-step predictions (means (N, T, d), covariances (T, d, d))."""
    mean, cov = m0.expand(y.shape[0], -1), P0
    out = {"log_prob": y.new_zeros(y.shape[0]), "mean": [], "cov": [], "pred_mean": [], "pred_cov": []}
    for t in range(y.shape[1]):
        if t:
            mean, cov = mean @ A.T, A @ cov @ A.T + Q
        out["pred_mean"].append(mean)
        out["pred_cov"].append(cov)
        innovation_cov = C @ cov @ C.T + R
        predicted = mean @ C.T
        step = dist.MultivariateNormal(predicted, innovation_cov).log_prob(y[:, t])
        out["log_prob"] = out["log_prob"] + step
        gain = torch.linalg.solve(innovation_cov, C @ cov).T  # P C^T S^-1, (d, D)
        mean = mean + (y[:, t] - predicted) @ gain.T
        cov = cov - gain @ innovation_cov @ gain.T
        cov = (cov + cov.T) / 2
        out["mean"].append(mean)
        out["cov"].append(cov)
    return {key: value if key == "log_prob" else torch.stack(value, 1 if "mean" in key else 0)
            for key, value in out.items()}


def rts_smoother(filtered: dict[str, torch.Tensor], A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rauch-Tung-Striebel smoother: posterior means (N, T, d) and covariances (T, d, d)."""
    means, covs = [filtered["mean"][:, -1]], [filtered["cov"][-1]]
    for t in range(filtered["cov"].shape[0] - 2, -1, -1):
        cov, pred_cov = filtered["cov"][t], filtered["pred_cov"][t + 1]
        smoother_gain = torch.linalg.solve(pred_cov, A @ cov).T  # P_t A^T P_t+1|t^-1
        means.append(filtered["mean"][:, t] + (means[-1] - filtered["pred_mean"][:, t + 1]) @ smoother_gain.T)
        covs.append(cov + smoother_gain @ (covs[-1] - pred_cov) @ smoother_gain.T)
    return torch.stack(means[::-1], 1), torch.stack(covs[::-1])


__all__ = ["LGSSM", "kalman_filter", "rts_smoother"]
