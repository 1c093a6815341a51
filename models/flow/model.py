r"""Normalizing flow (RealNVP affine couplings), on real data or on dequantised grey levels.

Density (Dinh, Sohl-Dickstein & Bengio, 2017, "Density estimation using Real NVP"): a base draw
is pushed through invertible maps,

    z ~ N(0, I_D),    y = g(z) = b(f_K(... f_1(z))),
    log p(y) = log N(g^{-1}(y); 0, I) + log |det d g^{-1}(y) / d y|          (exact),

each f_k an affine coupling (Pyro's :class:`~pyro.distributions.transforms.AffineCoupling`) after
a fixed shuffle of the coordinates: the first half a = u_{1:D/2} is kept and the rest moved,
u_{D/2+1:D} -> u_{D/2+1:D} * exp(s(a)) + t(a), with (s, t) one MLP of a (log-scales clipped to
[-5, 3]), so each Jacobian is triangular and its log-determinant is sum s(a). Pyro's
:class:`~pyro.distributions.TransformedDistribution` sums them; :meth:`Flow.density` is that
distribution.

``likelihood="continuous"``: b is the identity and p(y) is the model of real data x = y; log p(x)
is exact (:meth:`Flow.exact_log_prob`), the Pyro model has one observed site and an empty guide,
and SVI is maximum likelihood.

``likelihood="discrete"`` (whole grey levels x in {0..L-1}^D, the default): b maps onto the box
(-a L', L + a L')^D around [0, L)^D (a sigmoid, then y = L' (sigma - alpha) with L' = L / (1 - 2
alpha), alpha = :data:`PADDING`, RealNVP's logit pre-processing), and the probability of an image
is the flow's mass on its unit bin (uniform dequantisation; Theis, van den Oord & Bethge, 2016):

    P(x) = int_{[0,1)^D} p(x + u) du,      sum_x P(x) <= 1 (the mass on the padding is lost).

As a Pyro program this is a latent variable model: the offset u is a latent site with the
uniform prior U(0, 1)^D, the observed site is x + u with density p, and the guide proposes u from
the same uniform, q(u | x) = U(0, 1)^D. The ELBO is then the dequantisation bound and importance
sampling with K particles the importance-weighted one (Ho et al., 2019, "Flow++"),

    E_u[log p(x + u)]  <=  E[log (1/K) sum_k p(x + u_k)]  <=  log P(x),   u, u_k ~ U(0, 1)^D,

both lower bounds of the discrete log-probability (Jensen), the second tightening to log P(x) as
K grows; :meth:`Flow.dequantized_bound` draws either. ``zoo eval`` reports both, and the digits
table quotes the K = 5000 one. The data must then be whole numbers in 0..L-1: anything else is
refused (:meth:`Flow.check_data`). Samples are floor(y) clipped to 0..L-1.

Shapes: data ``x`` (N, D); the site ``"u"`` (N, D) or (P, N, D) under a particle plate; the
observed site ``"x"`` has batch shape (N,) (or (P, N)) and event shape (D,). Data: Tomczak's digits
protocol (``--data digits17``, D = 64, L = 17) by default; the other image data sets as their
whole grey levels (MNIST: 0..255); :func:`pyro_zoo.models.flow.hparams_for` sets ``data_dim`` and
``levels`` from the data.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineTransform, Permute, SigmoidTransform, affine_coupling
from torch import nn

from pyro_zoo.models.base import Capabilities, DataError, DataSplit, ZooModel
from pyro_zoo.models.flow.config import FlowConfig

#: alpha of the map onto the data box (RealNVP's logit pre-processing): the flow's box is the unit
#: bins' box [0, L) widened by alpha / (1 - 2 alpha) of its side on each end
PADDING = 0.05


class Flow(ZooModel):
    """RealNVP flow, continuous or on dequantised grey levels; see the module docstring."""

    def __init__(self, config: FlowConfig | None = None):
        super().__init__()
        config = FlowConfig() if config is None else config
        self.config = config
        self.data_dim = config.data_dim
        self.event_shape = (self.data_dim,)
        self.discrete = config.likelihood == "discrete"
        self.capabilities = Capabilities(exact_log_prob=not self.discrete)
        self.couplings = nn.ModuleList(
            affine_coupling(self.data_dim, hidden_dims=list(config.hidden)) for _ in range(config.num_layers)
        )
        self.register_buffer("base_loc", torch.zeros(self.data_dim))
        for layer in range(config.num_layers):
            shuffle = torch.randperm(self.data_dim, generator=torch.Generator().manual_seed(layer))
            self.register_buffer(f"shuffle_{layer}", shuffle)

    def transforms(self) -> list:
        """g as Pyro transforms, base to data: shuffle, coupling (K times), then the box map b."""
        maps = []
        for layer, coupling in enumerate(self.couplings):
            maps += [Permute(getattr(self, f"shuffle_{layer}")), coupling]
        if self.discrete:
            side = self.config.levels / (1 - 2 * PADDING)
            maps += [SigmoidTransform(), AffineTransform(-PADDING * side, side, event_dim=1)]
        return maps

    def density(self) -> dist.TransformedDistribution:
        """p(y): the flow's density on the data scale, batch shape (), event shape (D,)."""
        base = dist.Normal(self.base_loc, torch.ones_like(self.base_loc)).to_event(1)
        return dist.TransformedDistribution(base, self.transforms())

    # z ~ N(0, I), y = g(z); discrete data: x = floor(y), u = y - x ~ U(0, 1)^D a priori
    def model(self, x: torch.Tensor, num_data: int | None = None):
        with self.data_plate(x, num_data):
            if self.discrete:
                u = pyro.sample("u", self.offsets(x))
                pyro.sample("x", self.density(), obs=x + u)
            else:
                pyro.sample("x", self.density(), obs=x)

    # q(u | x) = U(0, 1)^D, the uniform dequantisation; nothing to infer for real data
    def guide(self, x: torch.Tensor, num_data: int | None = None):
        if self.discrete:
            with self.data_plate(x, num_data):
                pyro.sample("u", self.offsets(x))

    def offsets(self, x: torch.Tensor) -> dist.TorchDistribution:
        """U(0, 1)^D with batch shape (N,)."""
        return dist.Uniform(torch.zeros_like(x), torch.ones_like(x)).to_event(1)

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        top = self.config.levels - 1
        if self.discrete and bool((x != x.round()).any() | (x < 0).any() | (x > top).any()):
            raise DataError(f"the flow with the discrete likelihood takes whole grey levels 0..{top}; load "
                            "grey-level data (`data` digits17), or use `likelihood=continuous` for real "
                            "data")

    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per data point, shape (N,), for ``likelihood="continuous"``."""
        if self.discrete:
            raise NotImplementedError("discrete data have no exact log P(x); use dequantized_bound")
        return self.density().log_prob(x)

    def dequantized_bound(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """One draw of log (1/K) sum_k p(x + u_k), u_k ~ U(0, 1)^D, K = ``num_samples``, shape (N,):
        a stochastic lower bound of log P(x) (module docstring); K = 1 is the dequantisation bound."""
        y = x + torch.rand((num_samples, *x.shape), device=x.device)
        return self.density().log_prob(y).logsumexp(0) - math.log(num_samples)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` draws, shape (n, D): y ~ p, or floor(y) clipped to 0..L-1 for discrete data."""
        y = self.density().sample((n,))
        return y.floor().clamp(0, self.config.levels - 1) if self.discrete else y

    @torch.no_grad()
    def metrics(self, data: DataSplit) -> dict:
        """Exact log p(x) (continuous), or the dequantisation bound with one u per image (discrete);
        means over the data points with their standard errors over data points."""
        x = data.x.to(self.device)
        score = self.dequantized_bound if self.discrete else self.exact_log_prob
        values = torch.cat([score(part) for part in x.split(1000)])
        name, estimator = ("dequantized_bound", "E_u[log p(x + u)], one u ~ U(0, 1)^D per image") \
            if self.discrete else ("log_px_exact", "exact (change of variables)")
        se = (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else None
        return {name: {"value": values.mean().item(), "se": se, "unit": "nats per data point",
                       "estimator": estimator}}


__all__ = ["PADDING", "Flow"]
